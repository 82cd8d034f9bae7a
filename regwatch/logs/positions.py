"""The positions file: where each followed log was read up to, and the counter totals that reading produced.

Offsets and totals live in one JSON document written atomically (``regwatch.atomic``: temp
file, fsync, rename, fsync of the directory), so after a crash or kill -9 they always agree: the
restarted process resumes at
the saved offsets with the saved totals and neither loses nor double-counts a line. The
previous good version is kept beside it as ``<file>.bak`` (a hard link, so the main file
never disappears); if the main file is corrupt, the backup is an older but equally
consistent snapshot to resume from.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from regwatch.atomic import write_atomic

VERSION = 1


class PositionsError(Exception):
    """The positions file exists but cannot be used; the message says what to do."""


def _check(state: Any) -> dict:
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise ValueError(f"not a regwatch positions file (version {VERSION})")
    files = state.get("files")
    if not isinstance(files, list):
        raise ValueError("'files' must be a list")
    for entry in files:
        if not isinstance(entry, dict):
            raise ValueError("a file entry is not a mapping")
        for key in ("dev", "ino", "offset", "fp_len"):
            if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool) or entry[key] < 0:
                raise ValueError(f"file entry {key!r} must be a non-negative integer")
        if not isinstance(entry.get("fingerprint"), str) or not isinstance(entry.get("path"), str):
            raise ValueError("file entry needs 'fingerprint' and 'path' strings")
    siblings = state.get("siblings", [])
    if not isinstance(siblings, list) or not all(
            isinstance(key, list) and len(key) == 2 and all(type(v) is int for v in key) for key in siblings):
        raise ValueError("'siblings' must be a list of [device, inode] pairs")
    if not isinstance(state.get("counters", {}), dict):
        raise ValueError("'counters' must be a mapping")
    return state


class PositionsFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".bak")

    def load(self) -> tuple[dict | None, list[str]]:
        """The saved state (or None for a first run) and the problems met on the way.

        A corrupt main file falls back to the backup; when both are unusable the result is
        None with the problems, and the corrupt file is moved aside to ``<file>.corrupt`` so
        a person can look at it and the next save does not overwrite the evidence.
        """
        problems: list[str] = []
        for candidate in (self.path, self.backup):
            try:
                raw = candidate.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"cannot read {candidate}: {exc.strerror or exc}")
                continue
            try:
                return _check(json.loads(raw.decode("utf-8"))), problems
            except ValueError as exc:
                problems.append(f"{candidate} is corrupt ({exc})")
        if problems and self.path.exists():
            with contextlib.suppress(OSError):  # keeping the corrupt copy is best effort; the problems are reported
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
        return None, problems

    def save(self, state: dict) -> None:
        """Write ``state`` atomically; raises PositionsError if the directory is not writable."""
        data = json.dumps({"version": VERSION, **state}, separators=(",", ":"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                link = self.backup.with_name(self.backup.name + ".new")
                link.unlink(missing_ok=True)
                os.link(self.path, link)
                os.replace(link, self.backup)
            write_atomic(self.path, data)
        except OSError as exc:
            raise PositionsError(f"cannot write positions file {self.path}: {exc.strerror or exc}; "
                                 "make its directory writable by regwatch or change positions_file") from None
