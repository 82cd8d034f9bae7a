"""Generations: every backup keeps its index; restore "as of" an earlier one; prune keeps exactly what the
kept generations reference, and a prune that dies midway leaves every kept generation complete."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from regwatch.client import RegistryClient
from regwatch.drill import prune as prune_mod
from regwatch.drill.store import Store
from regwatch.drill.verify import verify
from regwatch.images import build_image, push_image
from tests.drill_helpers import run_drill


def reachable(store: Path, index: dict) -> set[str]:
    """The test's own walk (not regwatch's): every digest an index reaches."""
    out, todo = set(), [m["digest"] for m in index["manifests"]]
    while todo:
        digest = todo.pop()
        if digest in out:
            continue
        out.add(digest)
        body = json.loads((store / "blobs" / "sha256" / digest[7:]).read_bytes())
        todo += [m["digest"] for m in body.get("manifests") or []]
        out.update(b["digest"] for b in ([body["config"]] if body.get("config") else []) + (body.get("layers") or []))
    return out


@pytest.fixture
def two_generations(make_registry, tmp_path):
    reg = make_registry()
    store = tmp_path / "store"
    with RegistryClient(reg.url) as client:
        old = push_image(client, "app", "1", build_image([{"v1": os.urandom(3000)}]))
        assert run_drill("--backup", "--source", reg.url, "--store", store).returncode == 0
        new = push_image(client, "app", "1", build_image([{"v2": os.urandom(3000)}]))
        push_image(client, "other", "1", build_image([{"o": os.urandom(3000)}]))
        assert run_drill("--backup", "--source", reg.url, "--store", store).returncode == 0
    return store, old, new


def test_restore_as_of_the_previous_generation(two_generations, make_registry):
    store, old, new = two_generations
    assert sorted(p.name for p in (store / "generations").iterdir()) == ["000001.json", "000002.json"]
    dest = make_registry()
    proc = run_drill("--restore", "--store", store, "--dest", dest.url, "--generation", "-1")
    assert proc.returncode == 0, proc.stderr
    with RegistryClient(dest.url) as client:
        assert client.head_manifest("app", "1") == old
        assert client.head_manifest("other", "1") is None  # generation 1 had no such image
    later = make_registry()
    assert run_drill("--restore", "--store", store, "--dest", later.url).returncode == 0
    with RegistryClient(later.url) as client:
        assert client.head_manifest("app", "1") == new
    proc = run_drill("--restore", "--store", store, "--dest", later.url, "--generation", "7")
    assert proc.returncode == 2
    assert f"Error: store {store} has no generation 7; it has 1, 2" in proc.stderr


def test_prune_keeps_exactly_what_kept_generations_reference(two_generations):
    store, old, _ = two_generations
    gen2 = json.loads((store / "generations" / "000002.json").read_text())
    expected = reachable(store, gen2) | reachable(store, json.loads((store / "index.json").read_text()))
    assert old[7:] in {p.name for p in (store / "blobs" / "sha256").iterdir()}
    proc = run_drill("--prune", "--keep", "1", "--store", store)
    assert proc.returncode == 0, proc.stderr
    left = {"sha256:" + p.name for p in (store / "blobs" / "sha256").iterdir()}
    assert left == expected and "sha256:" + old[7:] not in left
    assert sorted(p.name for p in (store / "generations").iterdir()) == ["000002.json"]
    assert run_drill("--verify", "--store", store, "--generation", "2").returncode == 0
    assert proc.stdout.startswith("prune: kept generations 2; removed 1 generation(s), ")


def test_a_prune_killed_at_any_point_leaves_kept_generations_complete(two_generations, tmp_path, monkeypatch):
    store, _, _ = two_generations
    deletes = len(list((store / "blobs" / "sha256").iterdir())) + 2
    for stop_after in range(deletes):
        copy = tmp_path / f"copy{stop_after}"
        shutil.copytree(store, copy)
        calls = {"n": 0}
        real_unlink = Path.unlink

        def dying_unlink(self, missing_ok=False, _calls=calls, _stop_after=stop_after, _real_unlink=real_unlink):
            if _calls["n"] == _stop_after:
                raise KeyboardInterrupt("killed")  # the process dies here: nothing after this runs
            _calls["n"] += 1
            return _real_unlink(self, missing_ok=missing_ok)

        monkeypatch.setattr(Path, "unlink", dying_unlink)
        try:
            prune_mod.prune(Store(copy), 1)
        except KeyboardInterrupt:
            pass
        finally:
            monkeypatch.setattr(Path, "unlink", real_unlink)
        kept = Store(copy)
        for gen in kept.generations():
            if gen == 2 or calls["n"] == 0:  # the kept one, and any not yet removed before it died
                res = verify(kept, generation=gen)
                assert res.ok, (stop_after, gen, res.failures[:2])
