"""``regwatch drill --backup``: copy repositories (all selected tags, every platform of an index, and the
image's OCI 1.1 referrers: signatures, SBOMs, attestations) from a registry into an OCI layout store.

- content-addressed: a blob shared by many images is downloaded once per run and never again;
- incremental: a tag whose HEAD digest is already stored (and complete) costs one HEAD;
- resumable: blobs finished before a crash stay (they were renamed into place only once verified);
- bounded: a blob download stops at the descriptor's size, a manifest at 4 MiB, indexes nest at
  most ``MAX_DEPTH`` levels; every malformed manifest is that image's failure, not a crash;
- referrers: through ``GET /v2/<name>/referrers/<digest>`` when the registry has the API (filtered by
  ``artifact_types``), else through the referrers tag schema ``sha256-<hex>`` (those tags follow
  their subject: taken exactly when the manifest they name is taken);
- every run keeps the resulting index.json as a generation (``generations/<N>.json``).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from regwatch.budget import ContextPool

from regwatch.drill import remote
from regwatch.drill.common import FAILED, MOVED, PRESENT, Ledger, PhaseResult, Progress, Registry, log
from regwatch.drill.manifest import MAX_DEPTH, BadContent, Descriptor, Parsed, parse
from regwatch.drill.select import (SelectionError, TagFilter, nothing_selected, referrer_subject,
                                   select_repositories)
from regwatch.drill.store import DigestMismatch, Oversize, Store, StoreError, index_entry
from regwatch.digest import sha256_digest

DOWNLOAD_ATTEMPTS = 3
MAX_REFERRER_LEVELS = 3   # a signature of an SBOM of an image: referrers of referrers, this deep
FLUSH_EVERY = 2.0
IMAGE_ERRORS = (remote.RegistryError, BadContent, DigestMismatch, OSError, ValueError)


class _Once:
    """Run ``fn`` at most once per key on a bounded pool; later callers get the same future."""

    def __init__(self, workers: int, name: str):
        self.pool = ContextPool(max(1, workers), thread_name_prefix=name)
        self._futures: dict = {}
        self._lock = threading.Lock()

    def submit(self, key, fn, *args) -> Future:
        with self._lock:
            fut = self._futures.get(key)
            if fut is None:
                fut = self._futures[key] = self.pool.submit(fn, *args)
            return fut

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)


class Backup:
    def __init__(self, reg: Registry, store: Store, ledger: Ledger | None = None, *, parallel: int = 4,
                 progress: Progress | None = None, tag_filter: TagFilter | None = None,
                 artifact_types: tuple[str, ...] = ()):
        self.reg = reg
        self.client = reg.client
        self.store = store
        self.ledger = ledger if ledger is not None else Ledger()
        self.parallel = max(1, parallel)
        self.result = PhaseResult("backup")
        self.progress = progress
        self.tag_filter = tag_filter or TagFilter()
        self.artifact_types = artifact_types
        self.selection = None
        self.generation: int | None = None
        self.referrers_api: bool | None = None  # unknown until the first referrers request
        self._blobs = _Once(self.parallel, "drill-blob")
        self._reached: dict[str, set[str]] = {}  # repository -> manifest digests the selected images reach
        self._owner: dict[tuple[str, str], str] = {}  # (repository, manifest digest) -> image name
        self._pending: list[dict] = []
        self._flushed = time.monotonic()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ run
    def run(self, patterns: list[str]) -> PhaseResult:
        res = self.result
        try:
            with self.store.locked("backup"):
                self._run(patterns)
        except StoreError as exc:
            res.fail("*", str(exc))
        finally:
            self._blobs.shutdown()
            if self.progress is not None:
                self.progress.close()
        return res.finish(self.ledger)

    def _run(self, patterns: list[str]) -> None:
        res = self.result
        entries, _ = self.store.entries()
        existing = {(e.repo, e.tag): e for e in entries if e.tag}
        try:
            sel = self.selection = select_repositories(self.client, patterns)
        except SelectionError as exc:
            res.fail("*", str(exc))
            return
        except remote.RegistryError as exc:
            self.reg.seen(exc)
            res.fail("*", f"cannot list the repositories of {self.reg.url}: {exc}")
            return
        for name in sel.refused:
            res.fail(name, "the registry listed a repository name the distribution-spec does not allow; skipped")
        normal: list[tuple[str, str]] = []
        referrer_tags: list[tuple[str, str, str]] = []
        offered: dict[str, list[str]] = {}
        for repo in sel.repos:
            try:
                tags = remote.tags(self.client, repo)
            except remote.RegistryError as exc:
                self.reg.seen(exc)
                res.fail(repo, f"cannot list tags: {exc}")
                continue
            offered[repo] = tags
            for tag in sorted(tags):
                subject = referrer_subject(tag)
                if subject:
                    referrer_tags.append((repo, tag, subject))
                elif self.tag_filter.wants(tag):
                    normal.append((repo, tag))
        if not normal:
            if not res.failures:
                res.fail("*", nothing_selected(self.reg.url, sel, offered, self.tag_filter))
            return
        if self.progress is None:
            self.progress = Progress("backup", len(normal))
        with ContextPool(self.parallel, thread_name_prefix="drill-tag") as pool:
            list(pool.map(lambda rt: self._tag(*rt, existing.get(rt)), normal))
            follow = [(r, t, s) for r, t, s in referrer_tags if s in self._reached.get(r, ())]
            left_out = len(referrer_tags) - len(follow)
            if left_out:
                res.note(f"{left_out} signature/referrer tag(s) left out: the manifest they name is not selected")
            self.progress.set_total(len(normal) + len(follow))
            list(pool.map(lambda rts: self._tag(rts[0], rts[1], existing.get(rts[:2]), subject=rts[2]), follow))
        self._flush(force=True)
        self.generation = self.store.write_generation({"created": f"{time.time():.3f}", "source": self.reg.url,
                                                       "ok": str(res.ok).lower()})

    # ------------------------------------------------------------------ per tag
    def _tag(self, repo: str, tag: str, old, subject: str | None = None) -> None:  # old: an Entry
        row = self.ledger.row(repo, tag)
        row.referrer_of = subject
        if old is not None:
            row.confirmed = old.confirmed
        res = self.result
        try:
            digest = remote.head_manifest(self.client, repo, tag)
            fresh = not (old and digest and old.digest == digest)
            seen: set[str] = set()
            tree: list[str] = []
            parsed, body_digest, size, media_type = self._manifest(repo, digest, None, "", 0, row, seen, tree,
                                                                   ref=tag)
            if digest and body_digest != digest:
                raise DigestMismatch(f"manifest body hashes to {body_digest}, the registry announced {digest}")
            row.digest, row.media_type = body_digest, media_type
            with self._lock:
                self._reached.setdefault(repo, set()).update(tree)
                for d in tree:
                    self._owner.setdefault((repo, d), row.name)
            if subject is not None:
                owner = self._owner.get((repo, subject))
                if owner and owner in self.ledger.rows:
                    via = "referrers tag schema" if "." not in tag else "signature tag"
                    kind = parsed.referrer_artifact_type() or ("referrers list" if parsed.is_index else "")
                    self.ledger.rows[owner].referrers.append({"digest": body_digest, "tag": tag, "via": via,
                                                              "artifactType": kind})
            self._referrers(repo, tree, row, seen, level=1)
            row.confirmed = round(time.time(), 3)  # as index.json keeps it
            self._add(index_entry(repo, tag, body_digest, size, media_type, confirmed=row.confirmed))
            self.ledger.set(row, "backup", "copied" if fresh else "unchanged")
        except IMAGE_ERRORS as exc:
            self.reg.seen(exc)
            self.ledger.set(row, "backup", "failed", str(exc))
            res.fail(row.name, f"backup failed: {exc}")
        self.progress.advance(images=1)

    def _referrers(self, repo: str, subjects: list[str], row, seen: set[str], level: int) -> None:
        if self.referrers_api is False or level > MAX_REFERRER_LEVELS:
            return
        for subject in subjects:
            found = remote.referrers(self.client, repo, subject, self.artifact_types)
            if found is None:
                if self.referrers_api is None:
                    log.info("drill backup: %s has no referrers API (404); referrers come through the tag "
                             "schema sha256-<digest>", self.reg.url)
                    self.result.note(f"{self.reg.url} has no OCI referrers API: referrers were taken through the "
                                     "referrers tag schema (sha256-<digest> tags)")
                self.referrers_api = False
                return
            self.referrers_api = True
            for desc in found:
                tree: list[str] = []
                parsed, _, size, media_type = self._manifest(repo, desc.digest, desc.size, desc.media_type, 0,
                                                             row, seen, tree)
                if parsed.subject is None or parsed.subject.digest != subject:
                    raise BadContent(f"referrer {desc.digest} listed for {subject} has subject "
                                     f"{parsed.subject.digest if parsed.subject else 'none'}")
                if not any(r["digest"] == desc.digest for r in row.referrers):
                    row.referrers.append({"digest": desc.digest, "via": "referrers API",
                                          "artifactType": desc.artifact_type or parsed.referrer_artifact_type()})
                self._add(index_entry(repo, None, desc.digest, size, media_type, subject=subject))
                self._referrers(repo, [desc.digest], row, seen, level + 1)

    def _manifest(self, repo: str, digest: str | None, size: int | None, media_type: str, depth: int, row,
                  seen: set[str], tree: list[str], ref: str | None = None) -> tuple[Parsed, str, int, str]:
        """Make sure a manifest and everything it references are in the store (children first, so a
        stored manifest is always complete). Returns (parsed, digest, size, media type)."""
        if depth > MAX_DEPTH:
            raise BadContent(f"indexes nested deeper than {MAX_DEPTH} levels (at {digest or ref})")
        body = None
        if digest and self.store.has_blob(digest, size):
            stored = self.store.read_blob(digest)
            if sha256_digest(stored) == digest:
                body, fetched = stored, False
        if body is None:
            body, served_type, got = remote.get_manifest(self.client, repo, digest or ref)
            if digest and got != digest:
                raise DigestMismatch(f"manifest {digest} of {repo}: the registry served content hashing to {got}")
            if size is not None and len(body) != size:
                raise DigestMismatch(f"manifest {digest} of {repo}: {len(body)} bytes, the descriptor says {size}")
            digest, fetched = got, True
            media_type = media_type or served_type
        parsed = parse(body, media_type, digest)
        media_type = media_type if media_type not in ("", "application/json", "text/plain") else parsed.media_type
        tree.append(digest)
        for kid in parsed.children:
            if kid.platform and depth == 0:
                row.platforms.append(kid.platform)
            self._manifest(repo, kid.digest, kid.size, kid.media_type, depth + 1, row, seen, tree)
        futures = [self._blobs.submit(b.digest, self._blob, repo, b) for b in parsed.blobs]
        errors = []
        for fut, desc in zip(futures, parsed.blobs, strict=True):
            try:
                fut.result()
            except IMAGE_ERRORS as exc:
                errors.append(exc)
            if desc.digest not in seen:
                seen.add(desc.digest)
                row.size += desc.size
        if errors:
            raise errors[0]
        if fetched:
            self.store.write_bytes(digest, body)
            self.progress.advance(nbytes=len(body))
        self.result.account((digest,), len(body), MOVED if fetched else PRESENT, "manifest")
        if digest not in seen:
            seen.add(digest)
            row.size += len(body)
        if depth == 0 and not parsed.children and parsed.config is not None and not row.platforms:
            platform = self._platform(parsed)
            if platform:
                row.platforms.append(platform)
        return parsed, digest, len(body), media_type or parsed.media_type

    def _platform(self, parsed: Parsed) -> str:
        """os/architecture of a single-platform image, from its stored config (best effort)."""
        import json

        cfg = parsed.config
        if cfg is None or "image.config" not in cfg.media_type and "container.image" not in cfg.media_type:
            return ""
        try:
            data = json.loads(self.store.read_blob(cfg.digest))
        except (BadContent, OSError, ValueError):
            return ""
        if not isinstance(data, dict):
            return ""
        parts = [data.get(k) for k in ("os", "architecture", "variant")]
        return "/".join(p[:40] for p in parts if isinstance(p, str) and p)

    def _blob(self, repo: str, desc: Descriptor) -> None:
        if self.store.has_blob(desc.digest, desc.size):
            self.result.account((desc.digest,), desc.size, PRESENT)
            return
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                n = remote.download_blob(self.client, repo, desc, self.store)
                break
            except (DigestMismatch, OSError) as exc:  # a connection cut mid-stream, a corrupted transfer
                if attempt == DOWNLOAD_ATTEMPTS or isinstance(exc, Oversize):
                    self.result.account((desc.digest,), desc.size, FAILED)
                    raise
                log.warning("drill backup: blob %s of %s: %s; retrying (%d/%d)", desc.digest, repo, exc, attempt,
                            DOWNLOAD_ATTEMPTS)
                time.sleep(0.5 * 2 ** attempt)
            except remote.RegistryError:
                self.result.account((desc.digest,), desc.size, FAILED)
                raise
        self.result.account((desc.digest,), n, MOVED)
        self.progress.advance(nbytes=n)

    # ------------------------------------------------------------------ index
    def _add(self, entry: dict) -> None:
        with self._lock:
            self._pending.append(entry)
        self._flush()

    def _flush(self, force: bool = False) -> None:
        with self._lock:
            if not self._pending or (not force and time.monotonic() - self._flushed < FLUSH_EVERY):
                return
            batch, self._pending = self._pending, []
            self._flushed = time.monotonic()
        self.store.update_refs(batch)


def backup(reg: Registry, store: Store, patterns: list[str], *, parallel: int = 4, progress: Progress | None = None,
           ledger: Ledger | None = None, tag_filter: TagFilter | None = None,
           artifact_types: tuple[str, ...] = ()) -> PhaseResult:
    return Backup(reg, store, ledger, parallel=parallel, progress=progress, tag_filter=tag_filter,
                  artifact_types=artifact_types).run(patterns)
