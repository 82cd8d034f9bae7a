"""Property: whatever JSON a registry or a store holds, the manifest/index walkers (backup's and verify's)
and the store reader end in a result or the documented per-image failure (BadContent, recorded in the
phase result), never in another exception. Fast tier: no server; the backup walker reads from an in-memory
registry put in place of regwatch.drill.remote's fetches."""

from __future__ import annotations

import contextlib
import json
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from regwatch.digest import sha256_digest
from regwatch.drill import remote
from regwatch.drill.backup import Backup
from regwatch.drill.common import Registry
from regwatch.drill.manifest import BadContent, parse
from regwatch.drill.store import Store, index_entry, parse_entry
from regwatch.drill.verify import Verify

KEYS = ["schemaVersion", "mediaType", "manifests", "layers", "config", "subject", "digest", "size", "annotations",
        "artifactType", "platform", "rootfs", "diff_ids"]
TYPES = ["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
         "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip", ""]
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


def json_values(digests: list[str]):  # returns a strategy
    leaves = (st.none() | st.booleans() | st.integers(-5, 2**70) | st.floats(allow_nan=False) |
              st.text(max_size=8) | st.sampled_from(TYPES) | st.sampled_from(digests or ["sha256:" + "0" * 64]))
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=4) |
                        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), kids, max_size=6),
                        max_leaves=30)


def descriptors(digests: list[str]):  # returns a strategy of mostly-valid descriptors
    return st.fixed_dictionaries({"digest": st.sampled_from(digests), "size": st.integers(-1, 400),
                                  "mediaType": st.sampled_from(TYPES)},
                                 optional={"platform": json_values(digests), "annotations": json_values(digests)})


def documents(digests: list[str]):  # returns a strategy: any JSON, half of it shaped like a manifest or an index
    if not digests:
        return json_values(digests)
    return json_values(digests) | st.fixed_dictionaries(
        {"schemaVersion": st.just(2), "mediaType": st.sampled_from(TYPES)},
        optional={"manifests": st.lists(descriptors(digests), max_size=3) | json_values(digests),
                  "config": descriptors(digests) | json_values(digests),
                  "layers": st.lists(descriptors(digests), max_size=3) | json_values(digests),
                  "subject": descriptors(digests)})


@st.composite
def stores(draw):  # draws (bodies by digest, index entries)
    bodies: dict[str, bytes] = {}
    for _ in range(draw(st.integers(1, 5))):  # each level may reference the ones before: real digests
        body = json.dumps(draw(documents(list(bodies)))).encode()
        bodies[sha256_digest(body)] = body
    digests = list(bodies)
    entries = draw(st.lists(st.one_of(
        st.builds(lambda d, t: index_entry("repo", t, d, len(bodies[d]), TYPES[1]), st.sampled_from(digests),
                  st.sampled_from(["1", "latest", "sha256-" + "a" * 64])),
        json_values(digests)), min_size=1, max_size=4))
    return bodies, entries


POOL = ["sha256:" + "0" * 64, "sha512:" + "1" * 128]


@given(documents(POOL))
@example([1, 2])
@example({"manifests": [POOL[0]]})
@example({"schemaVersion": 2, "layers": 5})
@example({"manifests": [{"mediaType": TYPES[1], "size": 1}]})
@example({"config": {"digest": POOL[0]}, "layers": [{"digest": POOL[0], "size": True}]})
@SETTINGS
def test_parse_and_parse_entry_raise_only_badcontent(value):
    for fn, arg in ((parse, json.dumps(value).encode()), (parse_entry, value)):
        with contextlib.suppress(BadContent):  # the one failure they may raise
            fn(arg)


@pytest.mark.slow  # hundreds of generated stores
@given(stores())
@SETTINGS
def test_verify_reads_any_store_without_an_exception(data):
    bodies, entries = data
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, create=True)
        for digest, body in bodies.items():
            store.write_bytes(digest, body)
        (store.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
        result = Verify(store, parallel=2).run()
        assert result.failures or all(isinstance(e, dict) for e in entries)


class _Memory:
    """An in-memory registry for the backup walker: serves the generated bodies by digest and one tag."""

    def __init__(self, bodies: dict[str, bytes], top: str):
        self.bodies, self.top = bodies, top

    def get_manifest(self, client, repo, ref):
        body = self.bodies.get(self.top if ref == "1" else ref)
        if body is None:
            raise remote.RegistryError(f"{ref}: not found")
        return body, "", sha256_digest(body)

    def download_blob(self, client, repo, desc, store):
        body = self.bodies.get(desc.digest, b"")
        return store.write_blob(desc.digest, desc.size, [body])


@pytest.mark.slow  # hundreds of generated stores
@given(stores())
@SETTINGS
def test_the_backup_walker_turns_any_manifest_into_a_result(monkeypatch, data):
    bodies, _ = data
    top = list(bodies)[-1]
    memory = _Memory(bodies, top)
    monkeypatch.setattr(remote, "get_manifest", memory.get_manifest)
    monkeypatch.setattr(remote, "download_blob", memory.download_blob)
    monkeypatch.setattr(remote, "head_manifest", lambda client, repo, ref: top)
    monkeypatch.setattr(remote, "referrers", lambda *args: None)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, create=True)
        job = Backup(Registry(None, "memory://"), store, parallel=2)
        from regwatch.drill.common import Progress

        job.progress = Progress("backup", 1, enabled=False)
        job._tag("repo", "1", None)  # one tag: the walker, its blob fetches and the index entry
        job._blobs.shutdown()
        row = job.ledger.rows["repo:1"]
        assert row.status["backup"] in ("copied", "failed")
        assert (row.status["backup"] == "failed") == bool(job.result.failures)
