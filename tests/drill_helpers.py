"""Content for the drill tests: real images pushed into a real docker-registry, and a small helper to
run ``regwatch drill`` as a subprocess."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from regwatch.client import MEDIA_OCI_MANIFEST, RegistryClient
from regwatch.digest import sha256_digest
from regwatch.images import Blob, build_image, build_index, push_image, push_index

BASE = {"etc/os-release": b"ID=drilltest\n" + os.urandom(2048)}


def push_signature(client: RegistryClient, repo: str, subject_digest: str) -> str:
    """A cosign-style signature: tag ``sha256-<hex>.sig``, one simplesigning payload layer whose
    diff_id is its own digest (cosign's layout)."""
    payload = json.dumps({"critical": {"image": {"docker-manifest-digest": subject_digest},
                                       "type": "cosign container image signature"}}).encode()
    layer = Blob(payload, "application/vnd.dev.cosign.simplesigning.v1+json")
    config = Blob(json.dumps({"architecture": "", "os": "", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}).encode(),
                  "application/vnd.oci.image.config.v1+json")
    sig = base64.b64encode(os.urandom(64)).decode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "config": config.descriptor(),
                           "layers": [layer.descriptor(annotations={"dev.cosignproject.cosign/signature": sig})]}
                          ).encode()
    for blob in (config, layer):
        client.push_blob(repo, blob.digest, blob.data, len(blob.data))
    tag = "sha256-" + subject_digest.split(":", 1)[1] + ".sig"
    client.put_manifest(repo, tag, manifest, MEDIA_OCI_MANIFEST)
    return sha256_digest(manifest)


def push_referrers_tag(client: RegistryClient, repo: str, subject_digest: str, subject_size: int) -> str:
    """OCI 1.1 referrers tag schema (distribution-spec "fallback"): an in-toto attestation artifact with a
    ``subject``, listed by an index tagged ``sha256-<hex>`` (the API registries without /referrers use)."""
    empty = Blob(b"{}", "application/vnd.oci.empty.v1+json")
    statement = Blob(json.dumps({"_type": "https://in-toto.io/Statement/v1", "nonce": os.urandom(8).hex()}).encode(),
                     "application/vnd.in-toto+json")
    for blob in (empty, statement):
        client.push_blob(repo, blob.digest, blob.data, len(blob.data))
    artifact = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
                           "artifactType": "application/vnd.in-toto+json", "config": empty.descriptor(),
                           "layers": [statement.descriptor()],
                           "subject": {"mediaType": MEDIA_OCI_MANIFEST, "digest": subject_digest,
                                       "size": subject_size}}).encode()
    client.put_manifest(repo, sha256_digest(artifact), artifact, MEDIA_OCI_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": sha256_digest(artifact),
                                       "size": len(artifact), "artifactType": "application/vnd.in-toto+json"}]}
                       ).encode()
    client.put_manifest(repo, "sha256-" + subject_digest.split(":", 1)[1], index,
                        "application/vnd.oci.image.index.v1+json")
    return sha256_digest(index)


def populate(client: RegistryClient) -> dict[str, str]:
    """app:1.0 (single-arch), its cosign signature tag, an OCI referrers-tag-schema attestation, multi:latest
    (amd64+arm64 index) sharing the base layer. Returns {"repo:tag": manifest digest}."""
    app = build_image([BASE, {"app/bin": os.urandom(4096)}])
    amd = build_image([BASE, {"amd": os.urandom(3000)}], architecture="amd64")
    arm = build_image([BASE, {"arm": os.urandom(3000)}], architecture="arm64")
    expected = {"app:1.0": push_image(client, "app", "1.0", app)}
    sig_tag = "sha256-" + app.digest.split(":", 1)[1] + ".sig"
    expected[f"app:{sig_tag}"] = push_signature(client, "app", app.digest)
    expected[f"app:{sig_tag[:-4]}"] = push_referrers_tag(client, "app", app.digest, len(app.manifest))
    expected["multi:latest"] = push_index(client, "multi", "latest", build_index([amd, arm]))
    return expected


def served(client: RegistryClient, expected: dict[str, str]) -> dict[str, str | None]:
    return {ref: client.head_manifest(*ref.rsplit(":", 1)) for ref in expected}


def run_drill(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regwatch", "drill", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


BLOB_GET = re.compile(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) ')


def blob_gets(log_path: Path) -> list[str]:
    """Digests of blob GETs in a docker-registry access log (its own independent record)."""
    return BLOB_GET.findall(log_path.read_text(errors="replace"))


def open_url(url: str, **kwargs):  # returns a regwatch.drill.common.Registry
    """The drill's own handle on a registry given by URL (what `regwatch drill --source URL` opens)."""
    from regwatch.drill.common import open_registry

    return open_registry(url, None, **kwargs)


def report_of(directory: Path) -> dict:
    return json.loads((Path(directory) / "report.json").read_text())


def rows(report: dict) -> dict[str, dict]:
    """The report's per-image rows by repository:tag."""
    return {r["image"]: r for r in report["images"]}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of a Prometheus exposition (parsed, not searched), or None if absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def push_artifact(client: RegistryClient, repo: str, subject_digest: str, subject_size: int, artifact_type: str,
                  payload: bytes) -> tuple[str, bytes]:
    """An OCI 1.1 artifact (image-spec "artifacts guidance": empty config, one layer, ``artifactType``,
    ``subject``) pushed by digest only, so it is found through the referrers API and nothing else.
    Returns (digest, manifest body)."""
    empty = Blob(b"{}", "application/vnd.oci.empty.v1+json")
    layer = Blob(payload, artifact_type)
    for blob in (empty, layer):
        client.push_blob(repo, blob.digest, blob.data, len(blob.data))
    body = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "artifactType": artifact_type,
                       "config": empty.descriptor(), "layers": [layer.descriptor()],
                       "subject": {"mediaType": MEDIA_OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
                       "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}).encode()
    client.put_manifest(repo, sha256_digest(body), body, MEDIA_OCI_MANIFEST)
    return sha256_digest(body), body
