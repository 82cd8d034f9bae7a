"""An OCI image layout store (image-spec v1.1 ``image-layout.md``) that skopeo, umoci and regwatch read.

Layout::

    STORE/oci-layout            {"imageLayoutVersion": "1.0.0"}
    STORE/index.json            one descriptor per tag, annotated
                                org.opencontainers.image.ref.name = "<repository>:<tag>"
    STORE/blobs/sha256/<hex>    every manifest, config and layer, once (content-addressed dedupe)

A tag is addressed as ``oci:STORE:<repository>:<tag>`` by skopeo (it splits the path at the
first colon, the rest is the ref name). Untagged manifests a backup must keep (for example the
subject of a signature) carry only ``io.regwatch.repository``.

Crash safety: a blob is streamed into ``blobs/sha256/.tmp-*``, hashed while streaming and renamed
to its digest only when digest and size match; index.json is replaced atomically (write temp,
fsync, rename) and only after every blob its new entries reference is in place. So a ``kill -9``
at any moment leaves a store whose index.json references only complete blobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from regwatch.digest import hex_of, is_digest

REF_NAME = "org.opencontainers.image.ref.name"
REPO_ANNOTATION = "io.regwatch.repository"
TAG_ANNOTATION = "io.regwatch.tag"
LAYOUT = {"imageLayoutVersion": "1.0.0"}
STALE_AFTER = 3600.0


class DigestMismatch(Exception):
    """A downloaded blob's content does not match the digest or size it was asked for."""


def ref_name(repo: str, tag: str) -> str:
    return f"{repo}:{tag}"


def _fsync_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    def __init__(self, root: str | os.PathLike, *, create: bool = False):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self._lock = threading.Lock()
        if create:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                _fsync_write(self.root / "oci-layout", json.dumps(LAYOUT).encode())
            if not (self.root / "index.json").exists():
                self.write_index([])
            self._remove_stale_temp_files()
        elif not (self.root / "oci-layout").is_file() or not (self.root / "index.json").is_file():
            raise FileNotFoundError(
                f"{self.root} is not an OCI image layout store (no oci-layout or index.json); "
                "run `regwatch drill --backup --store DIR` first or pass the right --store")

    def _remove_stale_temp_files(self) -> None:
        """Temp files a killed backup left behind; a live writer touches its file every chunk, so one
        untouched for STALE_AFTER seconds belongs to nobody."""
        import time

        cutoff = time.time() - STALE_AFTER
        for path in self.blob_dir.glob(".tmp-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ blobs
    def blob_path(self, digest: str) -> Path:
        if not is_digest(digest) or not digest.startswith("sha256:"):
            raise ValueError(f"unsupported digest {digest!r}: only sha256 digests are stored")
        return self.blob_dir / hex_of(digest)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except (FileNotFoundError, ValueError):
            return False
        return size is None or st.st_size == size

    def write_blob(self, digest: str, size: int | None, chunks: Iterable[bytes]) -> int:
        """Stream ``chunks`` into the store; rename into place only if sha256 and size match."""
        final = self.blob_path(digest)
        h = hashlib.sha256()
        written = 0
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=f".tmp-{hex_of(digest)[:12]}-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    h.update(chunk)
                    fh.write(chunk)
                    written += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            got = "sha256:" + h.hexdigest()
            if got != digest or (size is not None and written != size):
                raise DigestMismatch(f"blob {digest}: received {written} bytes hashing to {got}"
                                     f" (expected {size} bytes); the registry served corrupt content")
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def write_bytes(self, digest: str, data: bytes) -> None:
        if not self.has_blob(digest, len(data)):
            self.write_blob(digest, len(data), [data])

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # ------------------------------------------------------------------ index
    def read_index(self) -> list[dict]:
        data = json.loads((self.root / "index.json").read_text())
        return list(data.get("manifests") or [])

    def write_index(self, manifests: list[dict]) -> None:
        body = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": manifests}
        _fsync_write(self.root / "index.json", json.dumps(body, indent=1, sort_keys=True).encode())

    def update_refs(self, entries: list[dict]) -> None:
        """Add or replace index entries (keyed by repository+tag, or repository+digest when untagged),
        then rewrite index.json atomically. Callers add entries only after their blobs are stored."""
        with self._lock:
            current = self.read_index()
            keyed = {_entry_key(d): d for d in current}
            for entry in entries:
                keyed[_entry_key(entry)] = entry
            self.write_index(sorted(keyed.values(), key=lambda d: _entry_key(d)))


def _entry_key(desc: dict) -> tuple[str, str, str]:
    ann = desc.get("annotations") or {}
    tag = ann.get(TAG_ANNOTATION) or ann.get(REF_NAME) or ""
    return (ann.get(REPO_ANNOTATION, ""), tag, "" if tag else desc["digest"])


def descriptor(repo: str, tag: str | None, digest: str, size: int, media_type: str) -> dict:
    ann = {REPO_ANNOTATION: repo}
    if tag is not None:
        ann[TAG_ANNOTATION] = tag
        ann[REF_NAME] = ref_name(repo, tag)
    return {"mediaType": media_type, "digest": digest, "size": size, "annotations": ann}


def entry_repo_tag(desc: dict) -> tuple[str, str | None]:
    """(repository, tag or None) for an index.json entry written by regwatch or by another tool."""
    ann = desc.get("annotations") or {}
    if REPO_ANNOTATION in ann:
        return ann[REPO_ANNOTATION], ann.get(TAG_ANNOTATION)
    name = ann.get(REF_NAME)
    if name and ":" in name:
        repo, _, tag = name.rpartition(":")
        return repo, tag
    return "", name
