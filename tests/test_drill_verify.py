"""--verify catches every kind of damage with exit 1 and names the damaged image."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import pytest

from regwatch.client import RegistryClient
from regwatch.digest import sha256_digest
from regwatch.drill.backup import backup
from regwatch.drill.store import Store
from regwatch.images import build_image, push_image, tar_layer
from tests.drill_helpers import open_url, populate, run_drill


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A clean store (app, multi) and one holding an image whose diff_ids are wrong on purpose."""
    from regwatch.localregistry import LocalRegistry

    work = tmp_path_factory.mktemp("verify")
    with LocalRegistry(work / "reg") as reg, RegistryClient(reg.url) as client:
        populate(client)
        files = {"x": os.urandom(1000)}
        wrong = sha256_digest(tar_layer({"y": b"not this layer"}))
        push_image(client, "bad", "1", build_image([files], diff_ids=[wrong]))
        clean, bad = Store(work / "clean", create=True), Store(work / "bad", create=True)
        assert backup(open_url(reg.url), clean, ["app", "multi"]).ok
        assert backup(open_url(reg.url), bad, ["bad"]).ok  # the registry serves it happily: only verify can tell
    return clean, bad


def manifest_of(store: Store, ref: str) -> tuple[dict, dict]:
    entries, _ = store.entries()
    for entry in entries:
        if entry.name == ref:
            return entry.raw, json.loads(store.read_blob(entry.digest))
    raise KeyError(ref)


def arm_manifest(store: Store) -> dict:
    _, index = manifest_of(store, "multi:latest")
    arm = next(m for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    return json.loads(store.read_blob(arm["digest"]))


def flip_byte(store: Store) -> str:
    _, m = manifest_of(store, "app:1.0")
    path = store.blob_path(m["layers"][1]["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "app:1.0"


def truncate(store: Store) -> str:
    path = store.blob_path(arm_manifest(store)["layers"][1]["digest"])
    path.write_bytes(path.read_bytes()[:-10])
    return "multi:latest"


def delete(store: Store) -> str:
    store.blob_path(arm_manifest(store)["config"]["digest"]).unlink()
    return "multi:latest"


def delete_layer(store: Store) -> str:
    _, m = manifest_of(store, "app:1.0")
    store.blob_path(m["layers"][1]["digest"]).unlink()
    return "app:1.0"


def swap_config(store: Store) -> str:
    """Point app:1.0 at the arm64 image's config (same layer count) and re-index it consistently, so every
    blob hashes right and only the diff_id check can notice."""
    desc, m = manifest_of(store, "app:1.0")
    m["config"] = arm_manifest(store)["config"]
    body = json.dumps(m).encode()
    digest = sha256_digest(body)
    store.write_bytes(digest, body)
    store.update_refs([{**desc, "digest": digest, "size": len(body)}])
    return "app:1.0"


@pytest.mark.parametrize("damage", [flip_byte, truncate, delete, delete_layer, swap_config])
def test_damage_is_caught_and_the_image_named(stores, tmp_path, damage):
    clean, _ = stores
    copy = tmp_path / "store"
    shutil.copytree(clean.root, copy)
    image = damage(Store(copy))
    proc = run_drill("--verify", "--store", copy)
    assert proc.returncode == 1, proc.stderr
    failed = json.loads((copy / "report.json").read_text())["failed_images"]
    assert failed == [image]
    assert f"FAILED verify {image}:" in proc.stderr


def test_clean_store_verifies(stores):
    clean, _ = stores
    proc = run_drill("--verify", "--store", clean.root, "--report-dir", clean.root.parent / "clean-report")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((clean.root.parent / "clean-report" / "report.json").read_text())
    # an independent count: the blob files on disk (no temp files left behind by the backup)
    on_disk = [p for p in clean.blob_dir.iterdir()]
    assert not [p for p in on_disk if p.name.startswith(".tmp-")]
    assert report["phases"]["verify"]["objects"] == len(on_disk)
    assert report["phases"]["verify"]["checked_bytes"] == sum(p.stat().st_size for p in on_disk)


def test_wrong_diff_id_is_caught(stores):
    _, bad = stores
    proc = run_drill("--verify", "--store", bad.root)
    assert proc.returncode == 1
    assert "FAILED verify bad:1:" in proc.stderr and "rootfs.diff_ids" in proc.stderr


def test_zstd_layer_diff_id(tmp_path):
    """A zstd layer is decompressed for its diff_id too (checked here without a registry: verify reads only
    the store)."""
    import zstandard

    from regwatch.drill.verify import LayerCheck, check_layer

    store = Store(tmp_path / "s", create=True)
    tar = tar_layer({"z": os.urandom(5000)})
    for comp, mt in ((zstandard.ZstdCompressor().compress(tar), "application/vnd.oci.image.layer.v1.tar+zstd"),
                     (gzip.compress(tar) + gzip.compress(b""), "application/vnd.oci.image.layer.v1.tar+gzip")):
        digest = sha256_digest(comp)
        store.write_bytes(digest, comp)
        assert check_layer(store, LayerCheck(digest, len(comp), mt, sha256_digest(tar))) is None
        problem = check_layer(store, LayerCheck(digest, len(comp), mt, sha256_digest(tar + b"x")))
        assert problem and "uncompresses to " + sha256_digest(tar) in problem
