"""``regwatch drill --backup``: copy repositories (all tags, every platform of an index, signature and
attestation tags such as cosign's ``sha256-<digest>.sig``) from a registry into an OCI layout store.

- content-addressed: a blob shared by many images is downloaded once per run and never again;
- incremental: a tag whose HEAD digest equals the store's entry costs one HEAD and nothing else;
- resumable: blobs finished before a crash stay (they were renamed into place only once verified);
- bounded parallelism: ``parallel`` threads walk tags, ``parallel`` threads download blobs.
"""

from __future__ import annotations

import fnmatch
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor

from regwatch.client import RegistryClient, RegistryError
from regwatch.drill.common import log, Once, PhaseResult, Progress, children, media_type_of
from regwatch.drill.store import DigestMismatch, Store, descriptor, entry_repo_tag

CHUNK = 1 << 20
DOWNLOAD_ATTEMPTS = 3


def select_repositories(client: RegistryClient, patterns: list[str]) -> list[str]:
    repos = list(client.catalog())
    if not patterns:
        return sorted(repos)
    return sorted(r for r in repos if any(fnmatch.fnmatchcase(r, p) for p in patterns))


class Backup:
    def __init__(self, client: RegistryClient, store: Store, *, parallel: int = 4, progress: Progress | None = None):
        self.client = client
        self.store = store
        self.parallel = max(1, parallel)
        self.result = PhaseResult("backup")
        self.progress = progress
        self._once = Once(self.parallel, "drill-blob")

    def run(self, patterns: list[str]) -> PhaseResult:
        res = self.result
        existing = {entry_repo_tag(d): d for d in self.store.read_index()}
        try:
            repos = select_repositories(self.client, patterns)
            work: list[tuple[str, str]] = []
            for repo in repos:
                try:
                    work.extend((repo, tag) for tag in sorted(self.client.tags(repo)))
                except RegistryError as exc:
                    res.fail(repo, f"cannot list tags: {exc}")
            if self.progress is None:
                self.progress = Progress("backup", len(work))
            with ThreadPoolExecutor(self.parallel, thread_name_prefix="drill-tag") as pool:
                list(pool.map(lambda rt: self._tag(*rt, existing.get(rt)), work))
        except RegistryError as exc:
            res.fail("*", f"cannot list repositories of {self.client.url}: {exc}")
        finally:
            self._once.shutdown()
            if self.progress is not None:
                self.progress.close()
        return res.finish()

    # ------------------------------------------------------------------ per tag
    def _tag(self, repo: str, tag: str, old: dict | None) -> None:
        res = self.result
        name = f"{repo}:{tag}"
        res.add(tags=1)
        try:
            digest = self.client.head_manifest(repo, tag)
            if old and digest and old["digest"] == digest and self.store.has_blob(digest, old.get("size")):
                res.add(images_skipped=1)
                self.progress.advance(images=1)
                return
            m = self.client.get_manifest(repo, digest or tag)
            if digest and m.digest != digest:
                raise DigestMismatch(f"manifest body hashes to {m.digest}, the registry announced {digest}")
            self._save_tree(repo, m.body, m.media_type, m.digest)
            self.store.update_refs([descriptor(repo, tag, m.digest, len(m.body), m.media_type)])
            res.add(images_ok=1)
        except (RegistryError, DigestMismatch, OSError, ValueError, KeyError) as exc:
            res.add(images_failed=1)
            res.fail(name, f"backup failed: {exc}")
        self.progress.advance(images=1)

    def _save_tree(self, repo: str, body: bytes, media_type: str, digest: str) -> None:
        """Store a manifest after everything it references (children first), so a stored manifest is
        always complete."""
        manifest = json.loads(body)
        kids, blobs = children(manifest, media_type)
        futures = [self._fetch_blob(repo, b) for b in blobs]
        for kid in kids:
            if self.store.has_blob(kid["digest"], kid.get("size")) and self._complete(kid["digest"]):
                continue
            child = self.client.get_manifest(repo, kid["digest"])
            if child.digest != kid["digest"]:
                raise DigestMismatch(f"child manifest {kid['digest']} hashes to {child.digest}")
            self._save_tree(repo, child.body, media_type_of(child.body, kid.get("mediaType", "")), child.digest)
        for fut in futures:
            fut.result()
        self.store.write_bytes(digest, body)

    def _complete(self, digest: str) -> bool:
        """A stored manifest was written after its references, but check cheaply (stat) anyway."""
        body = self.store.read_blob(digest)
        manifest = json.loads(body)
        kids, blobs = children(manifest, media_type_of(body, ""))
        return all(self.store.has_blob(d["digest"], d.get("size")) for d in kids + blobs) and \
            all(self._complete(k["digest"]) for k in kids)

    def _fetch_blob(self, repo: str, desc: dict) -> Future:
        fut, _ = self._once.submit(desc["digest"], self._maybe_download, repo, desc["digest"], desc.get("size"))
        return fut

    def _maybe_download(self, repo: str, digest: str, size: int | None) -> int:
        self.result.add(blobs=1, bytes_ok=size or 0)
        if self.store.has_blob(digest, size):
            self.result.add(bytes_skipped=size or 0)
            return 0
        return self._download(repo, digest, size)

    def _download(self, repo: str, digest: str, size: int | None) -> int:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                resp = self.client.get_blob(repo, digest)
                with resp:
                    n = self.store.write_blob(digest, size, resp.iter_content(CHUNK))
                break
            except (DigestMismatch, OSError) as exc:  # a connection cut mid-stream, a corrupted transfer
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
                log.warning("drill backup: blob %s of %s: %s; retrying (%d/%d)", digest, repo, exc, attempt,
                            DOWNLOAD_ATTEMPTS)
                time.sleep(0.5 * 2 ** attempt)
        self.result.add(blobs_transferred=1, bytes_transferred=n)
        self.progress.advance(nbytes=n)
        return n


def backup(client: RegistryClient, store: Store, patterns: list[str], *, parallel: int = 4,
           progress: Progress | None = None) -> PhaseResult:
    return Backup(client, store, parallel=parallel, progress=progress).run(patterns)
