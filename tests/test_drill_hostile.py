"""Hostile peers (issue 18, drill part): a registry serving malformed manifests, traversal names and blobs
longer than declared (tests/fakes/hostile_registry.py), and a tampered store. Each finding becomes a
per-image failure in the report (written, with metrics, exit 1), never a traceback, a write outside the
store, an unbounded download or an upload of what a symlink points at."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from regwatch.images import MEDIA_CONFIG, build_image
from tests.drill_helpers import report_of, rows, run_drill
from tests.fakes.hostile_registry import HostileRegistry, digest_of

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
HEX = "a" * 64


def _good(reg: HostileRegistry, repo: str, tag: str) -> str:
    image = build_image([{"f": os.urandom(200)}])
    for blob in (image.config, *image.layers):
        reg.blobs[blob.digest] = blob.data
    return reg.add_manifest(repo, tag, image.manifest)


def _peak_rss_mb(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run `regwatch drill ARGS` under a fresh parent whose only child is the drill, so its peak RSS is the
    drill's own (getrusage of the children)."""
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "regwatch", "drill", *args],
                          capture_output=True, text=True, timeout=120)
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK ")]
    return proc, int(peak[-1].split()[1]) / 1024


@pytest.mark.servers
def test_malformed_manifests_are_per_image_failures_and_the_report_is_written(tmp_path):
    with HostileRegistry() as reg:
        good = _good(reg, "ok", "1")
        cfg = reg.add_blob(b"{}") | {"mediaType": MEDIA_CONFIG}
        reg.add_manifest("bad", "list", [1, 2])
        reg.add_manifest("bad", "strings", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                            "manifests": [f"sha256:{HEX}"]})
        reg.add_manifest("bad", "layers5", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                                            "layers": 5})
        reg.add_manifest("bad", "nodigest", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                             "manifests": [{"mediaType": OCI_MANIFEST, "size": 10}]})
        reg.add_manifest("bad", "nosize", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                                           "layers": [{"mediaType": "x", "digest": f"sha256:{HEX}"}]})
        reg.add_manifest("bad", "traversal", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                              "manifests": [{"mediaType": OCI_MANIFEST, "size": 2,
                                                             "digest": "sha256:../../../etc/passwd"}]})
        reg.add_manifest("bad", "bomb", "[" * 200_000 + "]" * 200_000)
        child = reg.add_manifest("bad", None, {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                                               "layers": []})
        for _ in range(3000):  # 3000 nested indexes
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": OCI_INDEX, "digest": child, "size": len(reg.manifests[("bad", child)])}]})
            child = reg.add_manifest("bad", None, body)
        reg.manifests[("bad", "deep")] = reg.manifests[("bad", child)]
        reg.tags["bad"].append("deep")
        reg.catalog.append("../../v2/other/repo")
        reg.tags["ok"].append("../../escape")
        store, tf = tmp_path / "store", tmp_path / "tf"
        proc = run_drill("--backup", "--verify", "--source", reg.url, "--store", store, "--textfile-dir", tf)
        paths = list(reg.paths)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    report = report_of(store)
    got = {name: row["status"]["backup"] for name, row in rows(report).items()}
    assert got == {"ok:1": "copied", **{f"bad:{t}": "failed" for t in
                                        ("list", "strings", "layers5", "nodigest", "nosize", "traversal", "bomb",
                                         "deep")}}
    assert rows(report)["ok:1"]["digest"] == good
    failed = {f["image"]: f["message"] for f in report["failures"]}
    d = {t: digest_of(reg.manifests[("bad", t)]) for t in ("list", "strings", "layers5", "nodigest", "nosize")}
    assert failed["bad:list"] == f"backup failed: manifest of {d['list']} is a JSON list, not an object"
    assert failed["bad:strings"] == (f"backup failed: manifests of {d['strings']}[0] is str, not a descriptor "
                                     "object")
    assert failed["bad:layers5"] == f"backup failed: layers of {d['layers5']} is int, not a list of descriptors"
    assert failed["bad:nodigest"] == (f"backup failed: manifests of {d['nodigest']}[0]: digest missing is not a "
                                      "valid digest")
    assert failed["bad:nosize"] == (f"backup failed: layers of {d['nosize']}[0] (sha256:{HEX}) has no size (a "
                                    "descriptor must say how many bytes to fetch)")
    assert failed["bad:deep"].startswith("backup failed: indexes nested deeper than 4 levels (at sha256:")
    assert failed["bad:bomb"].endswith(" is not JSON")
    # traversal names from _catalog and tags/list are dropped by the client's name check (regwatch.oci), with a
    # warning, and never reach a URL or the store
    assert any('msg="registry listed a name the distribution-spec does not allow; skipped"' in line and
               "repository '../../v2/other/repo'" in line for line in proc.stderr.splitlines())
    assert not [name for name in rows(report) if ".." in name]
    assert not [p for p in paths if ".." in p]  # no traversal name ever reached a URL
    assert report["coverage"] == {"selected": 9, "covered": 1, "ratio": 1 / 9}
    assert (store / "report.html").is_file() and (tf / "regwatch_drill.prom").is_file()
    assert not [p for p in (store / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.servers
def test_a_blob_longer_than_its_descriptor_stops_at_its_size(tmp_path):
    with HostileRegistry() as reg:
        cfg = reg.add_blob(b"{}") | {"mediaType": MEDIA_CONFIG}
        endless = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{'b' * 64}", "size": 10}
        reg.endless.add(endless["digest"])
        reg.add_manifest("app", "1", {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                                      "layers": [endless]})
        proc, peak = _peak_rss_mb(["--backup", "--source", reg.url, "--store", str(tmp_path / "s")])
        sent = reg.sent
    assert proc.returncode == 1
    host = reg.url.split("://")[1]
    message = (f"FAILED backup app:1: backup failed: target {host}: GET /v2/app/blobs/{endless['digest']}: the answer "
               "goes on past regwatch's limit of 10 bytes for it; refused")
    assert message in proc.stderr.splitlines(), proc.stderr
    assert sent < 64 << 20, sent  # the fake had 4 GiB to send; the drill hung up after its first chunk(s)
    assert peak < 300, peak
    # no temp file left behind, and of the image only its config (which was fine) is stored
    assert [p.name for p in (tmp_path / "s" / "blobs" / "sha256").iterdir()] == [cfg["digest"][7:]]


def test_a_tampered_store_is_never_sent_and_never_written_through(make_registry, tmp_path):
    from regwatch.client import RegistryClient
    from regwatch.images import push_image

    source, dest = make_registry(), make_registry()
    with RegistryClient(source.url) as client:
        image = build_image([{"f": os.urandom(4000)}])
        push_image(client, "app", "1", image)
        other = build_image([{"g": os.urandom(4000)}])
        push_image(client, "other", "1", other)
    store = tmp_path / "store"
    assert run_drill("--backup", "--source", source.url, "--store", store).returncode == 0
    # a layer replaced by a symlink to /etc/passwd, another overwritten in place with other bytes
    link = store / "blobs" / "sha256" / image.layers[0].digest[7:]
    link.unlink()
    link.symlink_to("/etc/passwd")
    swapped = store / "blobs" / "sha256" / other.layers[0].digest[7:]
    swapped.write_bytes(os.urandom(swapped.stat().st_size))
    proc = run_drill("--restore", "--store", store, "--dest", dest.url)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert (f"FAILED restore app:1: restore failed: blob {image.layers[0].digest} in the store is a symlink; "
            "refusing to follow it (a tampered store)") in lines
    assert any(line.startswith(f"FAILED restore other:1: restore failed: blob {other.layers[0].digest} in the store "
                               "hashes to sha256:") for line in lines), lines
    log = dest.log_path.read_text(errors="replace")
    with RegistryClient(dest.url) as client:
        for repo, digest in (("app", image.layers[0].digest), ("other", other.layers[0].digest)):
            # neither upload was completed: the registry's log has no 201 for it, and it does not have the blob
            assert not re.search(rf'digest=sha256%3A{digest[7:]}[^ "]* HTTP/1.1" 201', log)
            assert client.blob_exists(repo, digest) is False
    with open("/etc/passwd", "rb") as fh:
        passwd = fh.read()
    assert passwd[:64] not in b"".join(p.read_bytes() for p in (dest.root).rglob("*") if p.is_file())

    # a symlinked blobs/sha256 makes backup refuse instead of writing outside the store
    outside, evil = tmp_path / "outside", tmp_path / "evil"
    outside.mkdir()
    (evil / "blobs").mkdir(parents=True)
    (evil / "blobs" / "sha256").symlink_to(outside)
    proc = run_drill("--backup", "--source", source.url, "--store", evil)
    assert proc.returncode == 1
    assert (f"FAILED backup *: store {evil}: blobs/sha256 is not a directory of its own (a symlink or a file); "
            "regwatch writes and reads blobs only inside the store. Replace it with a real directory") in \
        proc.stderr.splitlines()
    assert list(outside.iterdir()) == []
    assert report_of(evil)["success"] is False
