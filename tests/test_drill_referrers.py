"""OCI 1.1 referrers through a full drill: a real docker-registry 2.8.2 (no referrers API) behind the
referrers front of tests/fakes/registry_front.py (built from distribution-spec v1.1.1 "Listing Referrers"
and "Pushing Manifests with Subject"; its docstring says what it follows)."""

from __future__ import annotations

import json
import os

import requests

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from tests.drill_helpers import push_artifact, report_of, rows, run_drill
from tests.fakes.registry_front import RegistryFront

SBOM = "application/spdx+json"
SIG = "application/vnd.cncf.notary.signature"


def referrers_of(url: str, repo: str, digest: str) -> list[dict]:
    resp = requests.get(f"{url}/v2/{repo}/referrers/{digest}", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    return resp.json()["manifests"]


def test_referrers_api_backup_restore_verify(make_registry, tmp_path):
    source, dest, plain = make_registry(), make_registry(), make_registry()
    with RegistryFront(source.url) as src_front, RegistryFront(dest.url) as dst_front:
        image = build_image([{"bin": os.urandom(2000)}])
        with RegistryClient(src_front.url) as client:
            digest = push_image(client, "app", "1.0", image)
            sbom, sbom_body = push_artifact(client, "app", digest, len(image.manifest), SBOM, b'{"spdx": 1}')
            sig, sig_body = push_artifact(client, "app", digest, len(image.manifest), SIG, os.urandom(64))
        assert {d["digest"] for d in referrers_of(src_front.url, "app", digest)} == {sbom, sig}
        with RegistryClient(source.url) as direct:
            assert direct.tags("app") == ["1.0"]  # the referrers exist only by digest: no tag names them

        store = tmp_path / "store"
        proc = run_drill("--source", src_front.url, "--dest", dst_front.url, "--store", store)
        assert proc.returncode == 0, proc.stderr
        # the destination's referrers API returns both, byte-identical manifests behind them
        listed = {d["digest"]: d for d in referrers_of(dst_front.url, "app", digest)}
        assert set(listed) == {sbom, sig}
        assert {d["artifactType"] for d in listed.values()} == {SBOM, SIG}
        for ref, body in ((sbom, sbom_body), (sig, sig_body)):
            got = requests.get(f"{dest.url}/v2/app/manifests/{ref}", timeout=10,
                               headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).content
            assert got == body
        row = rows(report_of(store))["app:1.0"]
        assert {(r["digest"], r["artifactType"], r["via"]) for r in row["referrers"]} == {
            (sbom, SBOM, "referrers API"), (sig, SIG, "referrers API")}

        # a destination without the referrers API gets the referrers tag schema index instead
        proc = run_drill("--restore", "--store", store, "--dest", plain.url)
        assert proc.returncode == 0, proc.stderr
        tagged = requests.get(f"{plain.url}/v2/app/manifests/sha256-{digest[7:]}", timeout=10,
                              headers={"Accept": "application/vnd.oci.image.index.v1+json"}).json()
        assert {(d["digest"], d["artifactType"]) for d in tagged["manifests"]} == {(sbom, SBOM), (sig, SIG)}

        # --artifact-type takes only those referrers (the front applies the filter and says so)
        proc = run_drill("--backup", "--source", src_front.url, "--store", tmp_path / "sbom-only",
                         "--artifact-type", SBOM)
        assert proc.returncode == 0, proc.stderr
        assert [r["digest"] for r in rows(report_of(tmp_path / "sbom-only"))["app:1.0"]["referrers"]] == [sbom]
        filtered = [r for r in src_front.requests if r["path"].startswith("/v2/app/referrers/") and r["query"]]
        assert filtered and all(r["query"] == f"artifactType={SBOM.replace('/', '%2F').replace('+', '%2B')}"
                                for r in filtered)


def test_verify_refuses_a_referrer_whose_subject_is_missing(make_registry, tmp_path):
    source = make_registry()
    with RegistryFront(source.url) as front:
        image = build_image([{"bin": os.urandom(500)}])
        with RegistryClient(front.url) as client:
            digest = push_image(client, "app", "1.0", image)
            push_image(client, "other", "1", build_image([{"x": b"y"}]))
            sbom, _ = push_artifact(client, "app", digest, len(image.manifest), SBOM, b"{}")
        store = tmp_path / "store"
        assert run_drill("--backup", "--source", front.url, "--store", store).returncode == 0
    index = json.loads((store / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if m["annotations"].get("io.regwatch.tag") != "1.0"]
    (store / "index.json").write_text(json.dumps(index))
    (store / "blobs" / "sha256" / digest[7:]).unlink()
    proc = run_drill("--verify", "--store", store)
    assert proc.returncode == 1
    assert f"FAILED verify app@{sbom}: referrer {sbom}: its subject {digest} is not in the store" in \
        proc.stderr.splitlines()
