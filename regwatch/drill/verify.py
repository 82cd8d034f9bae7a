"""``regwatch drill --verify``: prove a store is complete and bit-exact.

For every index.json entry: each manifest is present and hashes to its digest; every manifest an index
references is present; each image's config is present and hashes right; every layer is re-read once
(however many images share it), its sha256 and size checked, and decompressed (gzip or zstd) so the
sha256 of the uncompressed tar can be compared with the config's ``rootfs.diff_ids``. Layer checks run
on a thread pool: hashlib and zlib release the GIL on large buffers, so both cores work.
With ``against``, the registry must serve the same manifest digest for every tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from regwatch.client import RegistryClient, RegistryError
from regwatch.digest import sha256_digest
from regwatch.drill.common import PhaseResult, Progress, children, media_type_of
from regwatch.drill.store import Store, entry_repo_tag

CHUNK = 1 << 20
IMAGE_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}


@dataclass
class LayerCheck:
    digest: str
    size: int | None
    media_type: str
    diff_id: str | None
    images: set[str] = field(default_factory=set)


def _decompressor(media_type: str):  # noqa: ANN202 - returns a callable chunk -> bytes
    if "zstd" in media_type:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress
    if "gzip" in media_type:
        state = {"d": zlib.decompressobj(wbits=47)}

        def gunzip(chunk: bytes) -> bytes:
            out = []
            while chunk:
                d = state["d"]
                out.append(d.decompress(chunk))
                chunk = d.unused_data if d.eof else b""
                if d.eof:  # a multi-member gzip stream
                    state["d"] = zlib.decompressobj(wbits=47)
            return b"".join(out)

        return gunzip
    return None  # uncompressed (a tar, or an artifact payload such as a cosign signature)


def check_layer(store: Store, check: LayerCheck, progress: Progress | None = None) -> str | None:
    """Re-read one blob: sha256, size, and (when the config names one) the uncompressed diff_id.
    Returns a problem description or None."""
    path = store.blob_path(check.digest)
    if not path.is_file():
        return f"blob {check.digest} is missing from the store"
    h = hashlib.sha256()
    decompress = _decompressor(check.media_type) if check.diff_id else None
    u = hashlib.sha256() if decompress else None
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if u is not None:
                    u.update(decompress(chunk))
                if progress is not None:
                    progress.advance(nbytes=len(chunk))
    except (zlib.error, OSError, ValueError) as exc:
        return f"layer {check.digest} cannot be decompressed ({check.media_type}): {exc}"
    except Exception as exc:  # noqa: BLE001 - zstandard.ZstdError has no importable base here
        return f"layer {check.digest} cannot be read: {exc}"
    got = "sha256:" + h.hexdigest()
    if got != check.digest:
        return f"blob {check.digest} is corrupt: its content hashes to {got}"
    if check.size is not None and size != check.size:
        return f"blob {check.digest} has {size} bytes, the manifest says {check.size}"
    if check.diff_id:
        diff_id = "sha256:" + u.hexdigest() if u is not None else got
        if diff_id != check.diff_id:
            return (f"layer {check.digest} uncompresses to {diff_id} but the config's rootfs.diff_ids says "
                    f"{check.diff_id}")
    return None


class Verify:
    def __init__(self, store: Store, *, parallel: int | None = None, against: RegistryClient | None = None,
                 progress: Progress | None = None):
        self.store = store
        self.parallel = parallel or os.cpu_count() or 2
        self.against = against
        self.result = PhaseResult("verify")
        self.layers: dict[tuple[str, str | None], LayerCheck] = {}
        self.progress = progress

    def run(self) -> PhaseResult:
        res = self.result
        entries = self.store.read_index()
        image_ok: dict[str, bool] = {}
        for desc in entries:
            repo, tag = entry_repo_tag(desc)
            name = f"{repo}:{tag}" if tag else f"{repo}@{desc['digest']}"
            res.add(tags=1 if tag else 0)
            image_ok[name] = self._walk(name, desc, depth=0)
        total = sum(c.size or 0 for c in self.layers.values())
        if self.progress is None:
            self.progress = Progress("verify", len(entries))
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="drill-verify") as pool:
            checks = list(self.layers.values())
            for check, problem in zip(checks, pool.map(lambda c: check_layer(self.store, c, self.progress), checks)):
                res.add(blobs=1)
                if problem:
                    res.add(bytes_failed=check.size or 0)
                    for image in sorted(check.images):
                        image_ok[image] = False
                        res.fail(image, problem)
                else:
                    res.add(bytes_ok=check.size or 0)
        if self.against is not None:
            for desc in entries:
                repo, tag = entry_repo_tag(desc)
                if not tag:
                    continue
                name = f"{repo}:{tag}"
                try:
                    served = self.against.head_manifest(repo, tag)
                except RegistryError as exc:
                    served, problem = None, str(exc)
                else:
                    problem = "no such tag" if served is None else ""
                if served != desc["digest"]:
                    image_ok[name] = False
                    res.fail(name, f"{self.against.url} serves {served or 'nothing'} ({problem or 'different'}), "
                                   f"the store has {desc['digest']}")
        res.add(images_ok=sum(image_ok.values()), images_failed=sum(not v for v in image_ok.values()))
        self.progress.advance(images=len(entries))
        self.progress.close()
        res.bytes_transferred = total
        return res.finish()

    def _walk(self, name: str, desc: dict, depth: int) -> bool:
        """Check a manifest and queue its layers; False if something is already known to be wrong."""
        res = self.result
        digest = desc["digest"]
        if depth > 4:
            res.fail(name, f"manifest {digest}: indexes nested deeper than 4 levels")
            return False
        if not self.store.has_blob(digest):
            res.fail(name, f"manifest {digest} is missing from the store")
            return False
        body = self.store.read_blob(digest)
        if sha256_digest(body) != digest or (desc.get("size") is not None and len(body) != desc["size"]):
            res.fail(name, f"manifest {digest} is corrupt: its content hashes to {sha256_digest(body)}")
            return False
        try:
            manifest = json.loads(body)
        except ValueError:
            res.fail(name, f"manifest {digest} is not JSON")
            return False
        res.add(blobs=1, bytes_ok=len(body))
        kids, blobs = children(manifest, media_type_of(body, desc.get("mediaType", "")))
        ok = all([self._walk(name, kid, depth + 1) for kid in kids])
        if not blobs:
            return ok
        config_desc, layers = (blobs[0], blobs[1:]) if manifest.get("config") else (None, blobs)
        diff_ids: list[str | None] = [None] * len(layers)
        if config_desc is not None:
            cdig = config_desc["digest"]
            if not self.store.has_blob(cdig):
                res.fail(name, f"config {cdig} of manifest {digest} is missing from the store")
                return False
            cbody = self.store.read_blob(cdig)
            if sha256_digest(cbody) != cdig:
                res.fail(name, f"config {cdig} of manifest {digest} is corrupt")
                return False
            res.add(blobs=1, bytes_ok=len(cbody))
            if config_desc.get("mediaType") in IMAGE_CONFIG_TYPES:
                try:
                    ids = (json.loads(cbody).get("rootfs") or {}).get("diff_ids") or []
                except ValueError:
                    ids = []
                if len(ids) != len(layers):
                    res.fail(name, f"config {cdig} lists {len(ids)} rootfs.diff_ids for the {len(layers)} layers "
                                   f"of manifest {digest}: the config does not belong to this image")
                    ok = False
                else:
                    diff_ids = list(ids)
        for layer, diff_id in zip(layers, diff_ids):
            key = (layer["digest"], diff_id)
            check = self.layers.setdefault(key, LayerCheck(layer["digest"], layer.get("size"),
                                                           layer.get("mediaType", ""), diff_id))
            check.images.add(name)
        return ok


def verify(store: Store, *, parallel: int | None = None, against: RegistryClient | None = None,
           progress: Progress | None = None) -> PhaseResult:
    return Verify(store, parallel=parallel, against=against, progress=progress).run()
