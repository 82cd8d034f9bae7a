"""An OCI image layout store (image-spec v1.1 ``image-layout.md``) that skopeo, umoci and regwatch read.

Layout::

    STORE/oci-layout              {"imageLayoutVersion": "1.0.0"}
    STORE/index.json              one descriptor per tag, annotated
                                  org.opencontainers.image.ref.name = "<repository>:<tag>"
    STORE/blobs/sha256/<hex>      every manifest, config and layer, once (content-addressed dedupe)
    STORE/generations/<N>.json    the index.json of every backup, kept until pruned (restore "as of" N)

A tag is addressed as ``oci:STORE:<repository>:<tag>`` by skopeo (it splits the path at the first
colon, the rest is the ref name). Untagged manifests a backup must keep (a referrer found through the
referrers API) carry ``io.regwatch.repository`` and ``io.regwatch.subject``.

Crash safety: a blob is streamed into ``blobs/sha256/.tmp-*``, hashed while streaming, cut off at
its declared size, and renamed to its digest only when digest and size match; index.json and each
generation are replaced with ``regwatch.atomic.write_atomic`` and only after every blob their entries
reference is in place. So a ``kill -9`` at any moment leaves a store whose index.json references only
complete blobs.

A store directory is untrusted input too: ``blobs`` or ``blobs/sha256`` being a symlink, a blob that is
a symlink or not a regular file, and index entries with bad names or digests are refused (``StoreError``
for the whole store, ``BadContent`` per entry).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from regwatch.atomic import write_atomic
from regwatch.drill.manifest import BadContent, MAX_MANIFEST, descriptor
from regwatch.oci import is_repository, is_tag

REF_NAME = "org.opencontainers.image.ref.name"
REPO_ANNOTATION = "io.regwatch.repository"
TAG_ANNOTATION = "io.regwatch.tag"
SUBJECT_ANNOTATION = "io.regwatch.subject"
CONFIRMED_ANNOTATION = "io.regwatch.confirmed"  # Unix time the backup last saw the source serve this digest
LAYOUT = {"imageLayoutVersion": "1.0.0"}
STALE_AFTER = 3600.0
MAX_INDEX = 256 << 20
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


class DigestMismatch(Exception):
    """A downloaded blob's content does not match the digest or size it was asked for."""


class Oversize(DigestMismatch):
    """More bytes arrived than the descriptor declares (not retried: the peer is not flaky, it is wrong)."""


class StoreError(Exception):
    """The store as a whole cannot be used safely (a symlinked blob directory, an unreadable index)."""


class StoreMissing(StoreError):
    """No store at that path (bad usage: exit 2)."""


@dataclass(frozen=True)
class Entry:
    """One index.json entry, checked: repository and tag (None for an untagged manifest) are valid
    distribution-spec names, the descriptor has a sha256 digest and a size."""
    repo: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    subject: str | None
    confirmed: float | None
    raw: dict

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}" if self.tag else f"{self.repo}@{self.digest}"


def ref_name(repo: str, tag: str) -> str:
    return f"{repo}:{tag}"


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class Store:
    def __init__(self, root: str | os.PathLike, *, create: bool = False):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.gen_dir = self.root / "generations"
        self._lock = threading.Lock()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            for directory in (self.root / "blobs", self.blob_dir):
                if not _is_real_dir(directory) and not os.path.lexists(directory):
                    directory.mkdir()
        elif not (self.root / "oci-layout").is_file() or not (self.root / "index.json").is_file():
            raise StoreMissing(
                f"{self.root} is not an OCI image layout store (no oci-layout or index.json); "
                "run `regwatch drill --backup --store DIR` first or pass the right --store")
        for directory in (self.root / "blobs", self.blob_dir):
            if not _is_real_dir(directory):
                raise StoreError(f"store {self.root}: {directory.relative_to(self.root)} is not a directory of its "
                                 "own (a symlink or a file); regwatch writes and reads blobs only inside the store. "
                                 "Replace it with a real directory")
        if _is_real_dir(self.gen_dir) is False and os.path.lexists(self.gen_dir):
            raise StoreError(f"store {self.root}: generations is a symlink or a file; replace it with a directory")
        if create:
            if not (self.root / "oci-layout").exists():
                write_atomic(self.root / "oci-layout", json.dumps(LAYOUT))
            if not (self.root / "index.json").exists():
                self.write_index([])
            self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        """Temp files a killed backup left behind; a live writer touches its file every chunk, so one
        untouched for STALE_AFTER seconds belongs to nobody."""
        cutoff = time.time() - STALE_AFTER
        for path in self.blob_dir.glob(".tmp-*"):
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    @contextmanager
    def locked(self, what: str) -> Iterator[None]:
        """One writer at a time (a backup and a prune must not interleave): an flock on STORE/.lock."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StoreError(f"store {self.root} is in use by another regwatch drill (backup or prune); "
                                     f"wait for it to finish before the {what}") from None
                raise
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ blobs
    def blob_path(self, digest: str) -> Path:
        hexpart = digest[7:] if isinstance(digest, str) and digest.startswith("sha256:") else ""
        if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise BadContent(f"unsupported digest {str(digest)[:80]!r}: only sha256 digests are stored")
        return self.blob_dir / hexpart

    def blob_size(self, digest: str) -> int | None:
        """Size of a stored blob that is a regular file (not a symlink), else None."""
        try:
            st = os.lstat(self.blob_path(digest))
        except (FileNotFoundError, BadContent):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        got = self.blob_size(digest)
        return got is not None and (size is None or got == size)

    def open_blob(self, digest: str, size: int | None = None):  # returns a binary file object
        """Open a stored blob for reading: a regular file inside the store (O_NOFOLLOW: a symlink planted
        in blobs/sha256 is refused, not followed) and of the expected size."""
        path = self.blob_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BadContent(f"blob {digest} is missing from the store") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise BadContent(f"blob {digest} in the store is a symlink; refusing to follow it "
                                 "(a tampered store)") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise BadContent(f"blob {digest} in the store is not a regular file; refusing it (a tampered store)")
        if size is not None and st.st_size != size:
            os.close(fd)
            raise BadContent(f"blob {digest} has {st.st_size} bytes in the store, its descriptor says {size}")
        return os.fdopen(fd, "rb")

    def read_blob(self, digest: str, limit: int = MAX_MANIFEST) -> bytes:
        """A small stored blob (a manifest or config), at most ``limit`` bytes."""
        with self.open_blob(digest) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise BadContent(f"blob {digest} is over {limit >> 20} MiB; a manifest or config is never that big")
        return data

    def write_blob(self, digest: str, size: int, chunks: Iterable[bytes]) -> int:
        """Stream ``chunks`` into the store, stopping as soon as more than ``size`` bytes arrive; rename
        into place only if sha256 and size match."""
        final = self.blob_path(digest)
        h = hashlib.sha256()
        written = 0
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=f".tmp-{final.name[:12]}-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        raise Oversize(f"blob {digest}: the registry sent more than the {size} bytes its "
                                             "descriptor declares; download stopped")
                    h.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            got = "sha256:" + h.hexdigest()
            if got != digest or written != size:
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

    def blob_digests(self) -> Iterator[str]:
        for path in self.blob_dir.iterdir():
            if len(path.name) == 64 and not path.name.startswith("."):
                yield "sha256:" + path.name

    # ------------------------------------------------------------------ index and generations
    def _read_json(self, path: Path, what: str) -> dict:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise StoreError(f"store {self.root}: cannot open {what}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise StoreError(f"store {self.root}: {what} is not a regular file")
            raw = fh.read(MAX_INDEX + 1)
        if len(raw) > MAX_INDEX:
            raise StoreError(f"store {self.root}: {what} is over {MAX_INDEX >> 20} MiB")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise StoreError(f"store {self.root}: {what} is not JSON; restore it from a generation "
                             "(generations/) or back up again") from None
        if not isinstance(data, dict):
            raise StoreError(f"store {self.root}: {what} is a JSON {type(data).__name__}, not an image index")
        return data

    def read_raw_index(self) -> list:
        manifests = self._read_json(self.root / "index.json", "index.json").get("manifests") or []
        if not isinstance(manifests, list):
            raise StoreError(f"store {self.root}: index.json manifests is not a list")
        return manifests

    def read_index(self) -> list[dict]:
        """The raw index.json entries that are objects (for callers that only rewrite them)."""
        return [d for d in self.read_raw_index() if isinstance(d, dict)]

    def entries(self, generation: int | None = None) -> tuple[list[Entry], list[tuple[str, str]]]:
        """Checked entries of index.json (or of generation N) and (entry name, problem) for those refused."""
        raw = self.read_raw_index() if generation is None else self.read_generation(generation)["manifests"]
        good, bad = [], []
        for i, item in enumerate(raw):
            try:
                good.append(parse_entry(item, i))
            except BadContent as exc:
                bad.append((f"index.json entry #{i}", str(exc)))
        return good, bad

    def write_index(self, manifests: list[dict]) -> None:
        body = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
        write_atomic(self.root / "index.json", json.dumps(body, indent=1, sort_keys=True))

    def update_refs(self, entries: list[dict]) -> None:
        """Add or replace index entries (keyed by repository+tag, or repository+digest when untagged),
        then rewrite index.json atomically. Callers add entries only after their blobs are stored."""
        if not entries:
            return
        with self._lock:
            keyed = {_entry_key(d): d for d in self.read_index()}
            for entry in entries:
                keyed[_entry_key(entry)] = entry
            self.write_index(sorted(keyed.values(), key=_entry_key))

    def generations(self) -> list[int]:
        if not self.gen_dir.is_dir():
            return []
        out = []
        for path in self.gen_dir.iterdir():
            stem, dot, ext = path.name.partition(".")
            if ext == "json" and stem.isdigit() and not path.is_symlink():
                out.append(int(stem))
        return sorted(out)

    def generation_path(self, number: int) -> Path:
        return self.gen_dir / f"{number:06d}.json"

    def read_generation(self, number: int) -> dict:
        data = self._read_json(self.generation_path(number), f"generation {number}")
        if not isinstance(data.get("manifests"), list):
            raise StoreError(f"store {self.root}: generation {number} has no manifests list")
        return data

    def resolve_generation(self, wanted: int) -> int:
        """``wanted`` >= 1 is a generation number; 0 the latest, -1 the one before, and so on."""
        have = self.generations()
        if not have:
            raise StoreMissing(f"store {self.root} has no generations yet (run a --backup first)")
        if wanted <= 0:
            if -wanted >= len(have):
                raise StoreMissing(f"store {self.root} has {len(have)} generation(s) ({_span(have)}); "
                                   f"--generation {wanted} goes back further")
            return have[wanted - 1]
        if wanted not in have:
            raise StoreMissing(f"store {self.root} has no generation {wanted}; it has {_span(have)}")
        return wanted

    def write_generation(self, meta: dict) -> int:
        """Keep the current index.json as the next generation; returns its number."""
        self.gen_dir.mkdir(exist_ok=True)
        have = self.generations()
        number = (have[-1] + 1) if have else 1
        body = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": self.read_index(),
                "annotations": {"io.regwatch.generation": str(number),
                                **{f"io.regwatch.{k}": str(v) for k, v in meta.items()}}}
        write_atomic(self.generation_path(number), json.dumps(body, indent=1, sort_keys=True))
        return number


def _span(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers)) if len(numbers) <= 6 else f"{numbers[0]} to {numbers[-1]}"


def parse_entry(item: object, position: int = 0) -> Entry:
    """Check one index.json entry (written by regwatch or by another tool such as skopeo)."""
    desc = descriptor(item, f"index.json entry #{position}")
    ann = desc.annotations
    if REPO_ANNOTATION in ann:
        repo, tag = ann[REPO_ANNOTATION], ann.get(TAG_ANNOTATION)
    else:
        name = ann.get(REF_NAME, "")
        repo, _, tag = name.rpartition(":") if ":" in name else ("", "", name)
        tag = tag or None
    if not is_repository(repo):
        raise BadContent(f"index.json entry #{position} ({desc.digest}): repository {repo[:80]!r} is not a valid "
                         "repository name")
    if tag is not None and not is_tag(tag):
        raise BadContent(f"index.json entry #{position} ({desc.digest}): tag {tag[:80]!r} is not a valid tag")
    subject = ann.get(SUBJECT_ANNOTATION)
    if subject is not None:
        subject = descriptor({"digest": subject, "size": 0}, f"index.json entry #{position} subject").digest
    try:
        confirmed = float(ann[CONFIRMED_ANNOTATION]) if CONFIRMED_ANNOTATION in ann else None
    except ValueError:
        confirmed = None
    return Entry(repo, tag, desc.digest, desc.size, desc.media_type, subject, confirmed, item)  # type: ignore[arg-type]


def _entry_key(desc: dict) -> tuple[str, str, str]:
    ann = desc.get("annotations") or {}
    tag = ann.get(TAG_ANNOTATION) or ann.get(REF_NAME) or ""
    return (ann.get(REPO_ANNOTATION, ""), tag, "" if tag else str(desc.get("digest")))


def index_entry(repo: str, tag: str | None, digest: str, size: int, media_type: str, *,
                subject: str | None = None, confirmed: float | None = None) -> dict:
    ann = {REPO_ANNOTATION: repo}
    if tag is not None:
        ann[TAG_ANNOTATION] = tag
        ann[REF_NAME] = ref_name(repo, tag)
    if subject is not None:
        ann[SUBJECT_ANNOTATION] = subject
    if confirmed is not None:
        ann[CONFIRMED_ANNOTATION] = f"{confirmed:.3f}"
    return {"mediaType": media_type, "digest": digest, "size": size, "annotations": ann}
