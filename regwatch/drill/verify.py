"""``regwatch drill --verify``: prove a store (index.json, or an earlier generation) is complete and
bit-exact.

For every entry: each manifest is present, a regular file, hashes to its digest, parses (the checks of
``manifest.py``) and nests at most ``MAX_DEPTH`` indexes deep; every manifest an index references is
present; each image's config is present, hashes right and lists one ``rootfs.diff_ids`` entry per
layer; every referrer's ``subject`` is in the store; every layer is re-read once (however many images
share it), its sha256 and size checked, and decompressed (gzip or zstd) so the sha256 of the
uncompressed tar can be compared with the config's ``rootfs.diff_ids``.

Hashing uses both cores: layers are checked on a pool of ``os.cpu_count()`` threads, and within one
compressed layer the compressed hash and the decompress-and-hash of the diff_id run in two threads
(hashlib, zlib and zstandard release the GIL on large buffers), so a store of one big layer is checked
at the speed of two cores too. With ``against``, the registry must serve the same manifest digest for
every tag (and every stored referrer by digest).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from regwatch.client import RegistryClient, RegistryError
from regwatch.digest import sha256_digest
from regwatch.drill.common import CHECKED, FAILED, Ledger, PhaseResult, Progress
from regwatch.drill.manifest import MAX_DEPTH, BadContent, Parsed, parse
from regwatch.drill.select import referrer_subject
from regwatch.drill.store import Entry, Store, StoreError

CHUNK = 512 << 10  # fits in L2 with its inflated output, so the diff_id hash reads it from cache
IMAGE_CONFIG_TYPES = {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}


@dataclass
class LayerCheck:
    digest: str
    size: int | None
    media_type: str
    diff_id: str | None
    images: set[str] = field(default_factory=set)


def _decompressor(media_type: str):  # returns a callable chunk -> bytes, or None
    if "zstd" in media_type:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress
    if "gzip" in media_type:
        return _RawGunzip().feed
    return None  # uncompressed (a tar, or an artifact payload such as a cosign signature)


class _RawGunzip:
    """gzip members (RFC 1952) inflated as raw deflate: the header is parsed here and the CRC-32/ISIZE
    trailer skipped, so zlib does not compute a CRC-32 nobody needs (the compressed bytes are checked by
    their sha256, the output by the diff_id's); about a third less CPU than zlib's own gzip mode.
    Corrupt input raises zlib.error or ValueError."""

    def __init__(self) -> None:
        self.buf = b""
        self.state = "header"
        self.inflate = None
        self.members = 0

    def _header(self) -> bool:
        b = self.buf
        if len(b) < 10:
            return False
        if b[:3] != b"\x1f\x8b\x08":
            raise ValueError("not a gzip member (bad magic or method)")
        flags, pos = b[3], 10
        if flags & 4:  # FEXTRA
            if len(b) < pos + 2:
                return False
            pos += 2 + int.from_bytes(b[pos:pos + 2], "little")
        for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
            if flags & bit:
                end = b.find(b"\0", pos)
                if end < 0:
                    if len(b) > 1 << 20:
                        raise ValueError("gzip header name or comment over 1 MiB")
                    return False
                pos = end + 1
        if flags & 2:  # FHCRC
            pos += 2
        if len(b) < pos:
            return False
        self.buf = b[pos:]
        self.inflate = zlib.decompressobj(-15)
        self.state = "deflate"
        return True

    def feed(self, chunk: bytes) -> bytes:
        out = []
        self.buf = self.buf + chunk if self.buf else chunk
        while self.buf:
            if self.state == "header":
                if not self._header():
                    break
            elif self.state == "deflate":
                out.append(self.inflate.decompress(self.buf))
                if self.inflate.eof:
                    self.buf, self.state = self.inflate.unused_data, "trailer"
                    self.members += 1
                else:
                    self.buf = b""
            else:  # the 8-byte trailer, then maybe another member
                if len(self.buf) < 8:
                    break
                self.buf, self.state = self.buf[8:], "header"
        return b"".join(out)


def _diff_worker(chunks: queue.Queue, decompress, u, errors: list) -> None:
    while True:
        chunk = chunks.get()
        if chunk is None:
            return
        if errors:
            continue  # drain: the reader must never block on a full queue
        try:
            u.update(decompress(chunk))
        except Exception as exc:  # noqa: BLE001 - zlib.error, zstandard.ZstdError: reported as the layer's problem
            errors.append(exc)


def check_layer(store: Store, check: LayerCheck, progress: Progress | None = None) -> str | None:
    """Re-read one blob: sha256, size, and (when the config names one) the uncompressed diff_id.
    Returns a problem description or None."""
    try:
        fh = store.open_blob(check.digest, check.size)
    except BadContent as exc:
        return str(exc)
    h = hashlib.sha256()
    decompress = _decompressor(check.media_type) if check.diff_id else None
    u = hashlib.sha256() if decompress else None
    chunks: queue.Queue = queue.Queue(maxsize=8)
    errors: list = []
    worker = None
    if decompress is not None:
        worker = threading.Thread(target=_diff_worker, args=(chunks, decompress, u, errors), daemon=True,
                                  name="drill-diffid")
        worker.start()
    size = 0
    try:
        with fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if worker is not None:
                    chunks.put(chunk)
                if progress is not None:
                    progress.advance(nbytes=len(chunk))
    except OSError as exc:
        return f"layer {check.digest} cannot be read: {exc}"
    finally:
        if worker is not None:
            chunks.put(None)
            worker.join()
    got = "sha256:" + h.hexdigest()
    if got != check.digest:
        return f"blob {check.digest} is corrupt: its content hashes to {got}"
    if check.size is not None and size != check.size:
        return f"blob {check.digest} has {size} bytes, the manifest says {check.size}"
    if errors:
        return f"layer {check.digest} cannot be decompressed ({check.media_type}): {str(errors[0])[:200]}"
    if check.diff_id:
        diff_id = "sha256:" + u.hexdigest() if u is not None else got
        if diff_id != check.diff_id:
            return (f"layer {check.digest} uncompresses to {diff_id} but the config's rootfs.diff_ids says "
                    f"{check.diff_id}")
    return None


class Verify:
    def __init__(self, store: Store, ledger: Ledger | None = None, *, parallel: int | None = None,
                 against: RegistryClient | None = None, progress: Progress | None = None,
                 generation: int | None = None, only: set[str] | None = None):
        self.only = only  # image names (repo:tag) to verify; None: every entry of the store
        self.store = store
        self.ledger = ledger if ledger is not None else Ledger()
        self.parallel = parallel or os.cpu_count() or 2
        self.against = against
        self.generation = generation
        self.result = PhaseResult("verify")
        self.layers: dict[tuple[str, str | None], LayerCheck] = {}
        self.progress = progress
        self._checked: dict[str, str | None] = {}  # manifest/config digest -> problem (None: fine)
        self._owner: dict[tuple[str, str], str] = {}

    def run(self) -> PhaseResult:
        res = self.result
        try:
            entries, bad = self.store.entries(self.generation)
        except StoreError as exc:
            res.fail("*", str(exc))
            return res.finish(self.ledger)
        for name, problem in bad:
            res.fail(name, problem)
        if self.only is not None:
            entries = [e for e in entries if not e.tag or e.name in self.only]
        tagged = [e for e in entries if e.tag]
        if not tagged:
            res.fail("*", f"no image to verify: the store {self.store.root} lists no tag")
        image_ok: dict[str, bool] = {}
        for entry in sorted(tagged, key=lambda e: referrer_subject(e.tag) is not None) + \
                [e for e in entries if not e.tag]:
            name = self._name(entry)
            if self.only is not None and name not in self.only:
                continue  # a referrer of an image this run did not select
            tree: list[str] = []
            ok = self._walk(name, entry.digest, entry.size, entry.media_type, 0, tree)
            image_ok[name] = image_ok.get(name, True) and ok
            for d in tree:
                self._owner.setdefault((entry.repo, d), name)
        if self.progress is None:
            self.progress = Progress("verify", len(tagged))
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="drill-verify") as pool:
            checks = list(self.layers.values())
            problems = pool.map(lambda c: check_layer(self.store, c, self.progress), checks)
            for check, problem in zip(checks, problems, strict=True):
                res.account((check.digest,), check.size or 0, FAILED if problem else CHECKED)
                if problem:
                    for image in sorted(check.images):
                        image_ok[image] = False
                        res.fail(image, problem)
        if self.against is not None:
            for entry in entries:
                name = self._name(entry)
                if self.only is not None and name not in self.only:
                    continue
                try:
                    served = self.against.head_manifest(entry.repo, entry.tag or entry.digest)
                except RegistryError as exc:
                    served, problem = None, str(exc)
                else:
                    problem = "no such tag" if served is None else ""
                if served != entry.digest:
                    image_ok[name] = False
                    res.fail(name, f"{self.against.url} serves {served or 'nothing'} for {entry.name} "
                                   f"({problem or 'different'}), the store has {entry.digest}")
        for entry in tagged:
            row = self.ledger.row(entry.repo, entry.tag)
            row.digest = row.digest or entry.digest
            row.media_type = row.media_type or entry.media_type
            if row.confirmed is None:
                row.confirmed = entry.confirmed
            self.ledger.set(row, "verify", "verified" if image_ok.get(row.name, False) else "failed",
                            None if image_ok.get(row.name, False) else "see the verify failures")
        self.progress.advance(images=len(tagged))
        self.progress.close()
        return res.finish(self.ledger)

    def _name(self, entry: Entry) -> str:
        if entry.tag:
            return f"{entry.repo}:{entry.tag}"
        return self._owner.get((entry.repo, entry.subject or ""), entry.name)

    def _fail_once(self, name: str, digest: str, problem: str, kind: str = "manifest") -> bool:
        self._checked[digest] = problem
        self.result.account((digest,), 0, FAILED, kind)
        self.result.fail(name, problem)
        return False

    def _walk(self, name: str, digest: str, size: int | None, media_type: str, depth: int, tree: list[str]) -> bool:
        """Check a manifest and queue its layers; False if something is already known to be wrong."""
        res = self.result
        if depth > MAX_DEPTH:
            res.fail(name, f"manifest {digest}: indexes nested deeper than {MAX_DEPTH} levels")
            return False
        tree.append(digest)
        if digest in self._checked and self._checked[digest] is not None:
            res.fail(name, self._checked[digest])
            return False
        try:
            body = self.store.read_blob(digest)
        except BadContent as exc:
            return self._fail_once(name, digest, f"manifest {exc}" if str(exc).startswith("blob ") else str(exc))
        got = sha256_digest(body)
        if got != digest or (size is not None and len(body) != size):
            return self._fail_once(name, digest, f"manifest {digest} is corrupt: its {len(body)} bytes hash to {got}")
        try:
            parsed = parse(body, media_type, digest)
        except BadContent as exc:
            return self._fail_once(name, digest, str(exc))
        self._checked[digest] = None
        res.account((digest,), len(body), CHECKED, "manifest")
        ok = True
        if parsed.subject is not None and not self.store.has_blob(parsed.subject.digest):
            res.fail(name, f"referrer {digest}: its subject {parsed.subject.digest} is not in the store")
            ok = False
        for kid in parsed.children:
            ok = self._walk(name, kid.digest, kid.size, kid.media_type, depth + 1, tree) and ok
        return self._image(name, digest, parsed) and ok

    def _image(self, name: str, digest: str, parsed: Parsed) -> bool:
        res = self.result
        if not parsed.blobs:
            return True
        config_desc, layers = parsed.config, parsed.layers
        diff_ids: list[str | None] = [None] * len(layers)
        if config_desc is not None:
            cdig = config_desc.digest
            if self._checked.get(cdig):
                res.fail(name, self._checked[cdig])
                return False
            try:
                cbody = self.store.read_blob(cdig)
            except BadContent as exc:
                return self._fail_once(name, cdig, f"config {cdig} of manifest {digest}: {exc}", "blob")
            if sha256_digest(cbody) != cdig or len(cbody) != config_desc.size:
                return self._fail_once(name, cdig, f"config {cdig} of manifest {digest} is corrupt", "blob")
            self._checked[cdig] = None
            res.account((cdig,), len(cbody), CHECKED)
            if config_desc.media_type in IMAGE_CONFIG_TYPES:
                try:
                    cfg = json.loads(cbody)
                    ids = cfg.get("rootfs", {}).get("diff_ids") if isinstance(cfg, dict) else None
                except (ValueError, AttributeError, RecursionError):
                    ids = None
                if not isinstance(ids, list) or len(ids) != len(layers) or \
                        not all(isinstance(i, str) for i in ids):
                    res.fail(name, f"config {cdig} lists {len(ids) if isinstance(ids, list) else 'no'} "
                                   f"rootfs.diff_ids for the {len(layers)} layers of manifest {digest}: the config "
                                   "does not belong to this image")
                    return False
                diff_ids = list(ids)
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            key = (layer.digest, diff_id)
            check = self.layers.setdefault(key, LayerCheck(layer.digest, layer.size, layer.media_type, diff_id))
            check.images.add(name)
        return True


def verify(store: Store, *, parallel: int | None = None, against: RegistryClient | None = None,
           progress: Progress | None = None, ledger: Ledger | None = None, generation: int | None = None,
           only: set[str] | None = None) -> PhaseResult:
    return Verify(store, ledger, parallel=parallel, against=against, progress=progress, generation=generation,
                  only=only).run()
