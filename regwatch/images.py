"""Build small, real OCI images in memory and push them with regwatch's own client.

The demo, the tests and the benchmarks need images whose content they know. These are
ordinary OCI images (gzip tar layers, a config with ``rootfs.diff_ids``, a manifest, and
optionally an index over several platforms) that skopeo, umoci and any registry accept.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field

from regwatch.client import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, RegistryClient
from regwatch.digest import sha256_digest

MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self, **extra: object) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass
class Image:
    config: Blob
    layers: list[Blob]
    manifest: bytes
    platform: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def size(self) -> int:
        return len(self.manifest) + len(self.config.data) + sum(len(layer.data) for layer in self.layers)


@dataclass
class Index:
    images: list[Image]
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def tar_layer(files: dict[str, bytes]) -> bytes:
    """An uncompressed, reproducible tar of ``files`` (path -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def gzip_layer(tar: bytes) -> Blob:
    return Blob(gzip.compress(tar, compresslevel=6, mtime=0), MEDIA_LAYER_GZIP)


def build_image(layers: list[dict[str, bytes]], *, os: str = "linux", architecture: str = "amd64",
                labels: dict[str, str] | None = None, diff_ids: list[str] | None = None) -> Image:
    """An OCI image with one gzip layer per ``files`` dict. ``diff_ids`` overrides the true ones (for tests
    that need a deliberately wrong image)."""
    tars = [tar_layer(files) for files in layers]
    blobs = [gzip_layer(t) for t in tars]
    config = {
        "architecture": architecture,
        "os": os,
        "config": {"Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha256_digest(t) for t in tars]},
        "history": [{"created_by": "regwatch.images"} for _ in tars],
    }
    config_blob = Blob(json.dumps(config, sort_keys=True).encode(), MEDIA_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in blobs],
    }
    return Image(config_blob, blobs, json.dumps(manifest, sort_keys=True).encode(),
                 {"os": os, "architecture": architecture})


def build_index(images: list[Image]) -> Index:
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": img.digest, "size": len(img.manifest),
                       "platform": img.platform} for img in images],
    }
    return Index(images, json.dumps(index, sort_keys=True).encode())


def push_image(client: RegistryClient, repo: str, tag: str | None, image: Image) -> str:
    """Push blobs (skipping those the registry has) and the manifest; returns the manifest digest."""
    for blob in [image.config, *image.layers]:
        if not client.blob_exists(repo, blob.digest, scope=f"repository:{repo}:pull,push"):
            client.push_blob(repo, blob.digest, blob.data, len(blob.data))
    client.put_manifest(repo, tag or image.digest, image.manifest, MEDIA_OCI_MANIFEST)
    return image.digest


def push_index(client: RegistryClient, repo: str, tag: str, index: Index) -> str:
    for image in index.images:
        push_image(client, repo, None, image)
    client.put_manifest(repo, tag, index.manifest, MEDIA_OCI_INDEX)
    return index.digest
