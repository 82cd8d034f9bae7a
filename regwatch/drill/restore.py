"""``regwatch drill --restore``: push a store back into a registry, byte for byte.

Order per image: blobs (skipped if the registry HEADs them, cross-repository mounted when an earlier
repository of this restore already holds them, otherwise uploaded: monolithic, or chunked PATCHes for
big blobs), then child manifests by digest, then the tagged manifest or index. Manifests are pushed
as stored, so digests stay the same. A tag that already points to another digest is refused unless
``force``; ``dry_run`` only lists what would change.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from regwatch.client import RegistryClient, RegistryError
from regwatch.digest import sha256_digest
from regwatch.drill.common import Once, PhaseResult, Progress, children, media_type_of
from regwatch.drill.store import Store, entry_repo_tag

CHUNKED_ABOVE = 64 << 20
CHUNK_SIZE = 16 << 20


class Restore:
    def __init__(self, client: RegistryClient, store: Store, *, force: bool = False, dry_run: bool = False,
                 parallel: int = 4, progress: Progress | None = None):
        self.client = client
        self.store = store
        self.force = force
        self.dry_run = dry_run
        self.parallel = max(1, parallel)
        self.progress = progress
        self.result = PhaseResult("restore")
        self._once = Once(self.parallel, "drill-upload")
        self._holders: dict[str, str] = {}  # digest -> a repository of the destination that has it
        self._lock = threading.Lock()

    def run(self) -> PhaseResult:
        entries = self.store.read_index()
        if self.progress is None:
            self.progress = Progress("restore", len(entries))
        try:
            with ThreadPoolExecutor(self.parallel, thread_name_prefix="drill-restore") as pool:
                list(pool.map(self._entry, entries))
        finally:
            self._once.shutdown()
            self.progress.close()
        return self.result.finish()

    def _entry(self, desc: dict) -> None:
        res = self.result
        repo, tag = entry_repo_tag(desc)
        digest = desc["digest"]
        name = f"{repo}:{tag}" if tag else f"{repo}@{digest}"
        res.add(tags=1 if tag else 0)
        try:
            current = self.client.head_manifest(repo, tag or digest)
            if current == digest:
                res.add(images_skipped=1)
            elif tag and current and not self.force:
                res.add(images_failed=1)
                res.fail(name, f"the destination tag points to {current}, the store has {digest}; "
                               "pass --force to move the tag, or restore into an empty registry")
            elif self.dry_run:
                res.change(f"{name}: would push {digest}" + (f" (moving the tag from {current})" if current else ""))
            else:
                self._push_tree(repo, digest, desc.get("mediaType", ""))
                self.client.put_manifest(repo, tag or digest, self.store.read_blob(digest),
                                         media_type_of(self.store.read_blob(digest), desc.get("mediaType", "")))
                res.add(images_ok=1)
        except (RegistryError, OSError, ValueError, KeyError) as exc:
            res.add(images_failed=1)
            res.fail(name, f"restore failed: {exc}")
        self.progress.advance(images=1)

    def _push_tree(self, repo: str, digest: str, media_type: str) -> None:
        body = self.store.read_blob(digest)
        if sha256_digest(body) != digest:
            raise ValueError(f"stored manifest {digest} is corrupt; run `regwatch drill --verify` and back up again")
        kids, blobs = children(json.loads(body), media_type_of(body, media_type))
        futures = [self._once.submit((repo, b["digest"]), self._blob, repo, b)[0] for b in blobs]
        for kid in kids:
            if self.client.head_manifest(repo, kid["digest"]) != kid["digest"]:
                self._push_tree(repo, kid["digest"], kid.get("mediaType", ""))
                kid_body = self.store.read_blob(kid["digest"])
                self.client.put_manifest(repo, kid["digest"], kid_body,
                                         media_type_of(kid_body, kid.get("mediaType", "")))
        for fut in futures:
            fut.result()

    def _blob(self, repo: str, desc: dict) -> None:
        digest, size = desc["digest"], desc.get("size")
        res = self.result
        res.add(blobs=1, bytes_ok=size or 0)
        if self.client.blob_exists(repo, digest, scope=f"repository:{repo}:pull,push"):
            res.add(bytes_skipped=size or 0)
        else:
            with self._lock:
                holder = self._holders.get(digest)
            if holder and holder != repo and self.client.mount_blob(repo, digest, holder):
                res.add(bytes_skipped=size or 0)
            else:
                path = self.store.blob_path(digest)
                with open(path, "rb") as fh:
                    big = (size or 0) > CHUNKED_ABOVE
                    self.client.push_blob(repo, digest, fh, size, chunk_size=CHUNK_SIZE if big else None)
                res.add(blobs_transferred=1, bytes_transferred=size or 0)
                self.progress.advance(nbytes=size or 0)
        with self._lock:
            self._holders.setdefault(digest, repo)


def restore(client: RegistryClient, store: Store, *, force: bool = False, dry_run: bool = False,
            parallel: int = 4, progress: Progress | None = None) -> PhaseResult:
    return Restore(client, store, force=force, dry_run=dry_run, parallel=parallel, progress=progress).run()
