"""``regwatch drill --prune --keep N``: keep the last N generations of a store, delete the older
generation files, then every blob that neither a kept generation nor index.json reaches.

Kill-safe: generation files go first and blobs after, and a blob is deleted only when no kept
generation reaches it, so a prune killed at any moment leaves every kept generation complete. If a
kept generation cannot be walked (a manifest missing or malformed), nothing is deleted: what it
references cannot be known. The store's lock keeps a backup from writing while a prune deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regwatch.drill.manifest import MAX_DEPTH, BadContent, parse
from regwatch.drill.store import Store


class PruneError(Exception):
    pass


@dataclass
class PruneResult:
    kept_generations: list[int]
    removed_generations: list[int] = field(default_factory=list)
    kept_blobs: int = 0
    kept_bytes: int = 0
    removed_blobs: int = 0
    removed_bytes: int = 0


def referenced(store: Store, generations: list[int]) -> set[str]:
    """Every digest (manifests, configs, layers) index.json and the given generations reach."""
    out: set[str] = set()
    roots = [None, *generations]
    for gen in roots:
        entries, bad = store.entries(gen)
        if bad:
            where = "index.json" if gen is None else f"generation {gen}"
            raise PruneError(f"{where}: {bad[0][1]}; nothing was deleted (fix or remove the entry first)")
        for entry in entries:
            _walk(store, entry.digest, entry.media_type, 0, out)
    return out


def _walk(store: Store, digest: str, media_type: str, depth: int, out: set[str]) -> None:
    if digest in out:
        return
    if depth > MAX_DEPTH:
        raise PruneError(f"manifest {digest}: indexes nested deeper than {MAX_DEPTH}; nothing was deleted")
    try:
        parsed = parse(store.read_blob(digest), media_type, digest)
    except BadContent as exc:
        raise PruneError(f"a kept generation cannot be walked: {exc}; nothing was deleted (run --verify)") from None
    out.add(digest)
    for kid in parsed.children:
        _walk(store, kid.digest, kid.media_type, depth + 1, out)
    out.update(b.digest for b in parsed.blobs)


def prune(store: Store, keep: int) -> PruneResult:
    with store.locked("prune"):
        have = store.generations()
        kept, dropped = have[-keep:] if keep else [], have[:-keep] if keep else have
        refs = referenced(store, kept)
        result = PruneResult(kept)
        for gen in dropped:
            store.generation_path(gen).unlink(missing_ok=True)
            result.removed_generations.append(gen)
        for digest in list(store.blob_digests()):
            size = store.blob_size(digest) or 0
            if digest in refs:
                result.kept_blobs += 1
                result.kept_bytes += size
                continue
            store.blob_path(digest).unlink(missing_ok=True)
            result.removed_blobs += 1
            result.removed_bytes += size
        return result
