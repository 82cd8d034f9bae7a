"""Splitting targets over N replicas of ``regwatch serve``: rendezvous (highest random weight) hashing.

Every replica computes, for each target name, a score per shard and keeps the targets whose
highest score is its own shard. No coordination is needed: the assignment depends only on
the target name and N. Going from N to N+1 shards moves only the targets whose new highest
score is the new shard, about 1/(N+1) of them, and each of those moves to the new shard, so a
scale-out does not reshuffle the rest (a modulo hash would move about N/(N+1) of them).

Only per-target jobs are sharded. Jobs without a configured target (local ``storage`` volumes,
``auth_logs`` sources) watch files of the pod or node they run on and would double count if
every replica ran them, so they run on shard 0 only (see docs/kubernetes.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

_SPEC_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_ORDINAL_RE = re.compile(r"-(\d+)$")


class ShardError(ValueError):
    """A shard specification that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Shard:
    """This replica is shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ShardError(f"the shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ShardError(f"shard index {self.index} is out of range for {self.count} shard(s); "
                             f"use 0 to {self.count - 1}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, target: str) -> bool:
        return shard_of(target, self.count) == self.index

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"1/3"`` is the second of three shards."""
        match = _SPEC_RE.match(spec)
        if not match:
            raise ShardError(f"{spec!r} is not a shard; write INDEX/COUNT with a 0-based index, e.g. 0/3")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def from_hostname(cls, count: int, hostname: str | None = None) -> Shard:
        """The shard of a StatefulSet pod: its name ends in ``-<ordinal>`` (``regwatch-2`` is shard 2)."""
        name = hostname or os.environ.get("HOSTNAME") or socket.gethostname()
        match = _ORDINAL_RE.search(name.split(".")[0])
        if not match:
            raise ShardError(f"host name {name!r} does not end in -<ordinal> as a StatefulSet pod's does; "
                             "use --shard INDEX/COUNT instead")
        return cls(int(match.group(1)), count)


def _score(target: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{target}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(target: str, count: int) -> int:
    """The shard (0..count-1) that collects ``target``."""
    if count < 1:
        raise ShardError(f"the shard count must be at least 1, not {count}")
    return max(range(count), key=lambda shard: _score(target, shard))


def assign(targets: Iterable[str], count: int) -> dict[int, list[str]]:
    """Every shard's targets, in the given order; every shard appears, even an empty one."""
    out: dict[int, list[str]] = {shard: [] for shard in range(count)}
    for target in targets:
        out[shard_of(target, count)].append(target)
    return out


def shard_jobs(jobs: list, shard: Shard | None, target_names: Iterable[str]) -> list:
    """The jobs ``shard`` runs: its targets' jobs, and on shard 0 the jobs that belong to no target."""
    if shard is None or shard.count == 1:
        return list(jobs)
    names = set(target_names)
    return [job for job in jobs if (shard.owns(job.target) if job.target in names else shard.index == 0)]
