"""``regwatch drill --restore``: push a store (its index.json, or an earlier generation) back into a
registry, byte for byte.

Order per image: blobs, then child manifests by digest, then the tagged manifest or index; then the
signature/referrer tags, then the referrers found through the referrers API (pushed by digest with
their ``subject``; a destination that does not answer ``OCI-Subject`` has no referrers API, so the
referrers tag schema index ``sha256-<hex>`` is updated as distribution-spec v1.1 "Pushing Manifests
with Subject" tells a client to).

A blob is sent at most once per restore: the destination's HEAD says it has it (not sent), or another
repository of this restore already holds it (cross-repository mount), or it is uploaded (monolithic,
or chunked PATCHes for big blobs). What is sent is read from a regular file inside the store (no
symlink is followed) and checked against its digest and size while it is sent: a tampered blob is cut
off before its last byte, so the registry never completes it.

A tag that already points to another digest is refused unless ``force``; ``dry_run`` only lists what
would change and pushes nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from regwatch.budget import ContextPool

from regwatch.client import NotFound
from regwatch.digest import sha256_digest
from regwatch.drill import remote
from regwatch.drill.common import FAILED, MOUNTED, MOVED, PRESENT, Ledger, PhaseResult, Progress, Registry
from regwatch.drill.manifest import MAX_DEPTH, MEDIA_OCI_INDEX, BadContent, Descriptor, parse
from regwatch.drill.select import referrer_subject
from regwatch.drill.store import Entry, Store, StoreError

CHUNKED_ABOVE = 64 << 20
CHUNK_SIZE = 16 << 20
IMAGE_ERRORS = (remote.RegistryError, BadContent, OSError, ValueError)  # + TamperedBlob, below


class TamperedBlob(Exception):
    """What the store holds under a digest is not that content. (Not a ValueError: it is raised inside the
    HTTP library's body read, and must come out as itself.)"""


class VerifiedReader:
    """A file object for the upload that hashes what it hands out and refuses to hand out the last
    bytes of a blob whose content or size does not match its digest."""

    def __init__(self, fh, digest: str, size: int):
        self.fh, self.digest, self.size = fh, digest, size
        self.sent = 0
        self.h = hashlib.sha256()

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        want = self.size - self.sent if n is None or n < 0 else min(n, self.size - self.sent)
        chunk = self.fh.read(want) if want > 0 else b""
        if want > 0 and not chunk:
            raise TamperedBlob(f"blob {self.digest} in the store ends after {self.sent} bytes, its descriptor says "
                               f"{self.size}; not sent")
        self.h.update(chunk)
        self.sent += len(chunk)
        if self.sent == self.size and "sha256:" + self.h.hexdigest() != self.digest:
            raise TamperedBlob(f"blob {self.digest} in the store hashes to sha256:{self.h.hexdigest()}; the "
                               "store was tampered with or damaged, not sent (run --verify)")
        return chunk


class Restore:
    def __init__(self, reg: Registry, store: Store, ledger: Ledger | None = None, *, force: bool = False,
                 dry_run: bool = False, parallel: int = 4, progress: Progress | None = None,
                 generation: int | None = None, only: set[str] | None = None):
        self.only = only  # image names (repo:tag) to restore; None: every entry of the store
        self.reg = reg
        self.client = reg.client
        self.store = store
        self.ledger = ledger if ledger is not None else Ledger()
        self.force = force
        self.dry_run = dry_run
        self.parallel = max(1, parallel)
        self.progress = progress
        self.generation = generation
        self.result = PhaseResult("restore")
        self._blob_pool = ContextPool(self.parallel, thread_name_prefix="drill-upload")
        self._holders: dict[str, str] = {}          # digest -> a destination repository that has it
        self._digest_locks: dict[str, threading.Lock] = {}
        self._owner: dict[tuple[str, str], str] = {}  # (repository, manifest digest) -> image name
        self._tag_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def run(self) -> PhaseResult:
        res = self.result
        try:
            entries, bad = self.store.entries(self.generation)
        except StoreError as exc:
            res.fail("*", str(exc))
            return res.finish(self.ledger)
        for name, problem in bad:
            res.fail(name, f"restore skipped it: {problem}")
        if self.only is not None:
            entries = [e for e in entries if not e.tag or e.name in self.only]
        tagged = [e for e in entries if e.tag and not referrer_subject(e.tag)]
        ref_tags = [e for e in entries if e.tag and referrer_subject(e.tag)]
        untagged = [e for e in entries if not e.tag]
        if not tagged and not ref_tags:
            res.fail("*", f"no image to restore: the store {self.store.root} "
                          f"{'generation ' + str(self.generation) if self.generation else 'index.json'} lists no tag")
        if self.progress is None:
            self.progress = Progress("restore", len(tagged) + len(ref_tags))
        try:
            with ContextPool(self.parallel, thread_name_prefix="drill-restore") as pool:
                for batch in (tagged, ref_tags, untagged):
                    list(pool.map(self._entry, batch))
        finally:
            self._blob_pool.shutdown(wait=True)
            self.progress.close()
        if self.dry_run:
            res.note("dry run: nothing was pushed")
        return res.finish(self.ledger)

    # ------------------------------------------------------------------ entries
    def _row_for(self, entry: Entry):  # returns an ImageRow or None
        if entry.tag:
            row = self.ledger.row(entry.repo, entry.tag)
            row.digest = row.digest or entry.digest
            row.media_type = row.media_type or entry.media_type
            if row.confirmed is None:
                row.confirmed = entry.confirmed
            return row
        owner = self._owner.get((entry.repo, entry.subject or ""))
        return self.ledger.rows.get(owner) if owner else None

    def _entry(self, entry: Entry) -> None:
        res = self.result
        row = self._row_for(entry)
        if row is None and self.only is not None:
            return  # a referrer of an image this run did not select
        name = row.name if row is not None else entry.name
        try:
            tree: list[str] = []
            self._check_tree(entry.digest, entry.size, entry.media_type, 0, tree)
            with self._lock:
                for d in tree:
                    self._owner.setdefault((entry.repo, d), name)
            current = remote.head_manifest(self.client, entry.repo, entry.tag or entry.digest)
            if current == entry.digest:
                outcome = "present"
                self.result.account((entry.repo, entry.digest), entry.size, PRESENT, "manifest")
            elif entry.tag and current and not self.force:
                raise _Refused(f"the destination tag points to {current}, the store has {entry.digest}; "
                               "pass --force to move the tag, or restore into an empty registry")
            elif self.dry_run:
                res.change(f"{entry.name}: would push {entry.digest}" +
                           (f" (moving the tag from {current})" if current else ""))
                outcome = "planned"
            else:
                self._push_tree(entry.repo, entry.digest, entry.size, entry.media_type, 0)
                body = self.store.read_blob(entry.digest)
                subject_seen = remote.put_manifest(self.client, entry.repo, entry.tag or entry.digest, body,
                                                   self._media_type(body, entry.media_type))
                self.result.account((entry.repo, entry.digest), len(body), MOVED, "manifest")
                self.progress.advance(nbytes=len(body))
                if not entry.tag and entry.subject and not subject_seen:
                    self._tag_schema_add(entry, body)
                outcome = "pushed"
            if row is not None and entry.tag:
                self.ledger.set(row, "restore", outcome)
        except _Refused as exc:
            self._failed(row, name, str(exc))
        except (*IMAGE_ERRORS, TamperedBlob) as exc:
            self.reg.seen(exc)
            self._failed(row, name, f"restore failed: {exc}")
        if entry.tag:
            self.progress.advance(images=1)

    def _failed(self, row, name: str, message: str) -> None:
        if row is not None:
            self.ledger.set(row, "restore", "failed", message)
        self.result.fail(name, message)

    @staticmethod
    def _media_type(body: bytes, fallback: str) -> str:
        try:
            data = json.loads(body)
        except ValueError:
            return fallback
        own = data.get("mediaType") if isinstance(data, dict) else None
        return own if isinstance(own, str) and own else fallback

    def _read_manifest(self, digest: str, size: int | None, media_type: str):  # returns (bytes, Parsed)
        body = self.store.read_blob(digest)
        if sha256_digest(body) != digest or (size is not None and len(body) != size):
            raise BadContent(f"stored manifest {digest} is corrupt; run `regwatch drill --verify` and back up again")
        return body, parse(body, media_type, digest)

    def _check_tree(self, digest: str, size: int | None, media_type: str, depth: int, tree: list[str]) -> None:
        """Before anything is sent: every manifest the entry reaches is in the store, parses, and nests
        within the depth limit (so a broken image fails before half of it is pushed)."""
        if depth > MAX_DEPTH:
            raise BadContent(f"indexes nested deeper than {MAX_DEPTH} levels (at {digest})")
        _, parsed = self._read_manifest(digest, size, media_type)
        tree.append(digest)
        for kid in parsed.children:
            self._check_tree(kid.digest, kid.size, kid.media_type, depth + 1, tree)

    def _push_tree(self, repo: str, digest: str, size: int | None, media_type: str, depth: int) -> None:
        _, parsed = self._read_manifest(digest, size, media_type)
        futures = [self._blob_pool.submit(self._blob, repo, b) for b in parsed.blobs]
        errors = []
        for kid in parsed.children:
            try:
                if remote.head_manifest(self.client, repo, kid.digest) == kid.digest:
                    self.result.account((repo, kid.digest), kid.size, PRESENT, "manifest")
                    continue
                self._push_tree(repo, kid.digest, kid.size, kid.media_type, depth + 1)
                kid_body = self.store.read_blob(kid.digest)
                remote.put_manifest(self.client, repo, kid.digest, kid_body, self._media_type(kid_body, kid.media_type))
                self.result.account((repo, kid.digest), kid.size, MOVED, "manifest")
                self.progress.advance(nbytes=kid.size)
            except (*IMAGE_ERRORS, TamperedBlob) as exc:
                errors.append(exc)
                break
        for fut in futures:
            try:
                fut.result()
            except (*IMAGE_ERRORS, TamperedBlob) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ blobs
    def _digest_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            return self._digest_locks.setdefault(digest, threading.Lock())

    def _blob(self, repo: str, desc: Descriptor) -> None:
        key = (repo, desc.digest)
        if self.result.seen(key):
            return
        try:
            with self._digest_lock(desc.digest):  # one upload per digest; the others wait, then mount
                if self.result.seen(key):
                    return
                if remote.blob_exists(self.client, repo, desc.digest):
                    self.result.account(key, desc.size, PRESENT)
                else:
                    with self._lock:
                        holder = self._holders.get(desc.digest)
                    if holder and holder != repo and remote.mount_blob(self.client, repo, desc.digest, holder):
                        self.result.account(key, desc.size, MOUNTED)
                    else:
                        self._upload(repo, desc)
                        self.result.account(key, desc.size, MOVED)
                        self.progress.advance(nbytes=desc.size)
                with self._lock:
                    self._holders.setdefault(desc.digest, repo)
        except (*IMAGE_ERRORS, TamperedBlob):
            self.result.account(key, desc.size, FAILED)
            raise

    def _upload(self, repo: str, desc: Descriptor) -> None:
        with self.store.open_blob(desc.digest, desc.size) as fh:
            big = desc.size > CHUNKED_ABOVE
            remote.push_blob(self.client, repo, desc.digest, VerifiedReader(fh, desc.digest, desc.size), desc.size,
                             CHUNK_SIZE if big else None)

    # ------------------------------------------------------------------ referrers tag schema
    def _tag_schema_add(self, entry: Entry, body: bytes) -> None:
        """The destination has no referrers API: add this referrer to the index tagged ``sha256-<hex>`` of
        its subject (distribution-spec v1.1 "Pushing Manifests with Subject", steps 1-6)."""
        tag = "sha256-" + entry.subject.split(":", 1)[1]
        parsed = parse(body, entry.media_type, entry.digest)
        with self._lock:
            lock = self._tag_locks.setdefault((entry.repo, tag), threading.Lock())
        with lock:
            try:
                current, _, _ = remote.get_manifest(self.client, entry.repo, tag)
            except NotFound:
                index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
            else:
                existing = parse(current, MEDIA_OCI_INDEX, tag)
                if not existing.is_index:
                    raise BadContent(f"the destination's {entry.repo}:{tag} is not an image index, so it is not a "
                                     "referrers list; not changing it")
                if any(c.digest == entry.digest for c in existing.children):
                    return
                index = json.loads(current)
            desc = {"mediaType": self._media_type(body, entry.media_type), "digest": entry.digest,
                    "size": len(body)}
            if parsed.referrer_artifact_type():
                desc["artifactType"] = parsed.referrer_artifact_type()
            if parsed.annotations:
                desc["annotations"] = dict(parsed.annotations)
            index["manifests"].append(desc)
            remote.put_manifest(self.client, entry.repo, tag, json.dumps(index).encode(), MEDIA_OCI_INDEX)


class _Refused(Exception):
    pass


def restore(reg: Registry, store: Store, *, force: bool = False, dry_run: bool = False, parallel: int = 4,
            progress: Progress | None = None, ledger: Ledger | None = None, generation: int | None = None,
            only: set[str] | None = None) -> PhaseResult:
    return Restore(reg, store, ledger, force=force, dry_run=dry_run, parallel=parallel, progress=progress,
                   generation=generation, only=only).run()
