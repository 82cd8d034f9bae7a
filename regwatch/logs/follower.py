"""Follow log files like a production shipper: positions, rotation, partial lines, globs.

``Follower.read()`` yields blocks of *complete* lines (each block ends with a newline) and
advances in-memory offsets as it goes; ``Follower.positions()`` is what to persist once the
caller has counted those blocks. Rules:

* A file is known by ``(st_dev, st_ino)`` plus a fingerprint (hash of its first bytes, up
  to 1 KiB) so a reused inode or a file truncated and rewritten while regwatch was down is
  seen as new.
* First run (no saved positions): files present start at the end (``start_at: end``,
  after their last complete line) or at the beginning; files that appear later start at 0.
* Rename-and-create rotation: the renamed file is still read through its open descriptor,
  to its end, before the new file, and kept until it has been idle for ``rotated_grace``
  seconds after the path moved on (the writer may append until it reopens). After a restart
  a saved file that is no longer at its path is looked up by inode in the same directory.
* copytruncate: the file shrinks below the offset (or its first bytes change). The bytes
  not read before the truncation are in the copy: a sibling file whose first bytes match
  the fingerprint, read from the old offset to its end. Then the truncated file from 0.
* A partial last line stays unread until its newline arrives. A line longer than
  ``max_line_bytes`` is skipped (and reported), never buffered whole.
* At most one rotation between two reads is followed exactly; rotating faster than the
  reader can lose a whole generation (as with every tailer that does not glob the copies).
  regwatch reads as soon as inotify reports a change, so this takes two rotations within
  milliseconds.
* One ``read()`` pass reads at most ``max_bytes_per_read`` bytes of each live file; the caller
  starts the next pass at once (``more`` says so), so a burst is never spread over intervals,
  and between passes the positions match exactly what was yielded.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger("regwatch.logs")

FINGERPRINT_BYTES = 1024
# Below this many bytes a fingerprint says too little (a few characters can repeat), so only
# inode and size identify the file.
MIN_FINGERPRINT = 16
CHUNK = 1 << 20


def fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class TrackedFile:
    path: str
    dev: int
    ino: int
    offset: int = 0
    fingerprint: str = ""
    fp_len: int = 0
    skipping: bool = False
    fd: int | None = None
    rotated_since: float | None = None

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def to_json(self) -> dict:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "fingerprint": self.fingerprint, "fp_len": self.fp_len, "skipping": self.skipping}

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_prefix(fd: int, length: int) -> bytes:
    return os.pread(fd, length, 0) if length else b""


class Follower:
    def __init__(self, pattern: str, *, start_at: str = "end", max_line_bytes: int = CHUNK,
                 rotated_grace: float = 60.0, max_bytes_per_read: int = 64 << 20,
                 clock=time.monotonic):
        self.pattern = pattern
        self.start_at = start_at
        self.max_line_bytes = max_line_bytes
        self.rotated_grace = rotated_grace
        self.max_bytes_per_read = max_bytes_per_read
        self.clock = clock
        self.files: dict[tuple[int, int], TrackedFile] = {}
        self._saved: dict[tuple[int, int], TrackedFile] = {}
        self._first_run = True
        # Rotated siblings (``app.log.1``...) seen at the last read, and those new since.
        self._siblings: set[tuple[int, int]] | None = None
        self._new_siblings: dict[tuple[int, int], str] = {}
        # Problems of the last read, by bounded reason; the caller turns them into metrics.
        self.errors: Counter = Counter()
        self._last_problem: dict[str, str] = {}
        # True when the last pass stopped at max_bytes_per_read with bytes still unread.
        self.more = False

    # ------------------------------------------------------------------ state

    def restore(self, saved: dict) -> None:
        """Resume from saved positions (``positions()`` of an earlier run)."""
        self._first_run = False
        self._siblings = {tuple(key) for key in saved.get("siblings", [])}
        for entry in saved.get("files", []):
            tracked = TrackedFile(entry["path"], entry["dev"], entry["ino"], entry["offset"], entry["fingerprint"],
                                  entry["fp_len"], bool(entry.get("skipping", False)))
            self._saved[tracked.identity] = tracked

    def positions(self) -> dict:
        """What to persist: every file's position and the rotated siblings already accounted for."""
        entries = {key: f.to_json() for key, f in self._saved.items()}
        entries.update({key: f.to_json() for key, f in self.files.items()})
        siblings = sorted(self._siblings or set())
        return {"files": list(entries.values()), "siblings": [list(key) for key in siblings]}

    def close(self) -> None:
        for tracked in self.files.values():
            tracked.close()

    def names(self) -> list[str]:
        """Base names of the files followed now (a rotated copy's name starts with one of them)."""
        return sorted({os.path.basename(tracked.path) for tracked in self.files.values()})

    def lag_bytes(self) -> int:
        """Bytes written to the followed files and not read yet."""
        total = 0
        for tracked in self.files.values():
            if tracked.fd is not None:
                with contextlib.suppress(OSError):  # closed or gone meanwhile: nothing more to read from it
                    total += max(0, os.fstat(tracked.fd).st_size - tracked.offset)
        return total

    # ------------------------------------------------------------------ problems

    def _problem(self, reason: str, key: str, message: str) -> None:
        self.errors[reason] += 1
        if self._last_problem.get(key) != message:  # once per change, not once per poll
            log.warning(message, extra={"reason": reason})
            self._last_problem[key] = message

    def _resolved(self, key: str) -> None:
        if self._last_problem.pop(key, None) is not None:
            log.info("log file readable again", extra={"path": key})

    # ------------------------------------------------------------------ reading

    def read(self) -> Iterator[bytes]:
        """Blocks of complete lines from every followed file, oldest generation first."""
        self._discover()
        self.more = False
        ordered = sorted(self.files.values(), key=lambda f: (f.rotated_since is None, f.path))
        for tracked in ordered:
            budget = [self.max_bytes_per_read]
            try:
                yield from self._read_file(tracked, budget)
                if budget[0] <= 0:
                    self.more = True
            except OSError as exc:
                self._problem("read", tracked.path, f"cannot read log file {tracked.path}: {exc.strerror or exc}; "
                              "regwatch retries on the next run")
        now = self.clock()
        current = {tracked.path for tracked in self.files.values() if tracked.rotated_since is None}
        for key, tracked in list(self.files.items()):
            if tracked.rotated_since is not None and now - tracked.rotated_since >= self.rotated_grace and \
                    self._done(tracked, current):
                tracked.close()
                del self.files[key]
        self._first_run = False

    @staticmethod
    def _done(tracked: TrackedFile, current: set[str]) -> bool:
        """A rotated file is finished once read to its end and its writer has moved on: another
        file is at its path, or it was deleted."""
        try:
            st = os.fstat(tracked.fd)
        except (OSError, TypeError):
            return True
        at_end = st.st_size <= tracked.offset or tracked.skipping
        return at_end and (tracked.path in current or st.st_nlink == 0)

    def _discover(self) -> None:
        seen: set[tuple[int, int]] = set()
        paths = sorted(glob.glob(self.pattern)) if glob.has_magic(self.pattern) else [self.pattern]
        if not self.files and (not paths or not glob.has_magic(self.pattern) and not os.path.lexists(self.pattern)):
            self._problem("missing", self.pattern, f"no log file matches {self.pattern}; "
                          "check auth_logs[].path (regwatch keeps looking)")
        for path in paths:
            try:
                st = os.stat(path)
                if not os.path.isfile(path):
                    raise IsADirectoryError(21, "not a regular file")
                key = (st.st_dev, st.st_ino)
                if key not in self.files:
                    self._open(path, key, st.st_size)
                tracked = self.files[key]
                tracked.path, tracked.rotated_since = path, None
                seen.add(key)
                self._resolved(path)
                self._resolved(self.pattern)
            except FileNotFoundError:
                continue  # rotated away between glob and stat; the next read picks up its successor
            except OSError as exc:
                self._problem("unreadable", path, f"cannot open log file {path}: {exc.strerror or exc}; "
                              "give regwatch read access (it retries on the next run)")
        now = self.clock()
        for key, tracked in self.files.items():
            if key not in seen and tracked.rotated_since is None:
                tracked.rotated_since = now
        # Saved files no longer at their path (rotated while regwatch was down): find them by inode.
        for key, saved in list(self._saved.items()):
            if key in self.files:
                del self._saved[key]
                continue
            found = self._find_by_inode(saved)
            if found is None:
                log.warning("a log file rotated while regwatch was stopped is gone; its unread lines are lost",
                            extra={"path": saved.path, "offset": saved.offset})
                del self._saved[key]
                continue
            try:
                self._open(found, key, None, rotated=True)
                self.files[key].path = saved.path
            except OSError as exc:
                self._problem("unreadable", found, f"cannot open rotated log file {found}: {exc.strerror or exc}")
                del self._saved[key]
        self._watch_siblings()

    def _watch_siblings(self) -> None:
        if not self.files:
            return
        listing: dict[tuple[int, int], str] = {}
        for path in {tracked.path for tracked in self.files.values()}:
            listing.update(_siblings(path))
        if self._siblings is not None:
            # New candidates join those not consumed yet; vanished ones are dropped.
            self._new_siblings = {key: path for key, path in listing.items() if key not in self.files and
                                  (key in self._new_siblings or key not in self._siblings)}
        self._siblings = set(listing) - set(self._new_siblings)

    def _consume(self, key: tuple[int, int]) -> None:
        """A sibling's lines were read (or it is known to be a copy of what was): never again."""
        self._new_siblings.pop(key, None)
        if self._siblings is not None:
            self._siblings.add(key)

    def _find_by_inode(self, saved: TrackedFile) -> str | None:
        directory = os.path.dirname(saved.path) or "."
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) == saved.identity and entry.is_file(follow_symlinks=False):
                        return entry.path
        except OSError:
            pass
        return None

    def _open(self, path: str, key: tuple[int, int], size: int | None, rotated: bool = False) -> None:
        fd = os.open(path, os.O_RDONLY)
        tracked = TrackedFile(path, key[0], key[1], fd=fd)
        saved = self._saved.pop(key, None)
        if saved is not None:
            # Same inode: resume. If the content changed meanwhile (copytruncate or a reused
            # inode), _read_file sees the truncation and handles it from the saved position.
            tracked.offset, tracked.fingerprint, tracked.fp_len = saved.offset, saved.fingerprint, saved.fp_len
            tracked.skipping = saved.skipping
        elif self._first_run and self.start_at == "end" and size:
            tracked.offset = self._end_of_last_line(fd, size)
        if rotated:
            tracked.rotated_since = self.clock()
        self.files[key] = tracked

    @staticmethod
    def _end_of_last_line(fd: int, size: int) -> int:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            data = os.pread(fd, pos - start, start)
            nl = data.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
        return 0

    def _refresh_fingerprint(self, tracked: TrackedFile) -> None:
        if tracked.fp_len < FINGERPRINT_BYTES and tracked.fd is not None:
            data = _read_prefix(tracked.fd, FINGERPRINT_BYTES)
            if len(data) > tracked.fp_len:
                tracked.fingerprint, tracked.fp_len = fingerprint(data), len(data)

    def _truncated(self, tracked: TrackedFile, size: int) -> bool:
        if size < tracked.offset:
            return True
        if tracked.fp_len >= MIN_FINGERPRINT and tracked.offset:
            return fingerprint(_read_prefix(tracked.fd, tracked.fp_len)) != tracked.fingerprint
        return False

    def _read_file(self, tracked: TrackedFile, budget: list[int]) -> Iterator[bytes]:
        if tracked.fd is None:
            return
        size = os.fstat(tracked.fd).st_size
        if tracked.rotated_since is None and tracked.offset == 0 and tracked.fp_len < MIN_FINGERPRINT:
            # Nothing of this file was read yet, so a copy of it made since the last read
            # (written and copytruncated within one poll interval) holds lines nobody read.
            for key, copy in sorted(self._new_siblings.items(), key=lambda item: item[1]):
                if copy.startswith(tracked.path) and key not in self.files:
                    self._consume(key)
                    yield from self._read_copy(copy, 0, False)
        if self._truncated(tracked, size):
            copy = self._find_copy(tracked)
            log.info("log file was truncated (copytruncate); reading the rest from its copy first",
                     extra={"path": tracked.path, "copy": copy or "not found", "offset": tracked.offset})
            if copy is not None:
                yield from self._read_copy(copy, tracked.offset, tracked.skipping)
            else:
                self._problem("truncated", tracked.path, f"log file {tracked.path} was truncated and its copy "
                              "was not found next to it; lines written just before the truncation may be "
                              "uncounted (use logrotate delaycompress so the copy stays readable)")
            tracked.offset, tracked.fingerprint, tracked.fp_len, tracked.skipping = 0, "", 0, False
        self._refresh_fingerprint(tracked)
        yield from self._read_lines(tracked, budget)

    def _read_copy(self, copy: str, offset: int, skipping: bool) -> Iterator[bytes]:
        fd = os.open(copy, os.O_RDONLY)
        try:
            yield from self._read_lines(TrackedFile(copy, 0, 0, offset, fd=fd, skipping=skipping), budget=[1 << 62])
        finally:
            os.close(fd)

    def _find_copy(self, tracked: TrackedFile) -> str | None:
        if tracked.fp_len < MIN_FINGERPRINT:
            # Too few bytes to recognise the copy by content: a copy made since the last read.
            for key, candidate in sorted(self._new_siblings.items(), key=lambda item: item[1]):
                try:
                    if key not in self.files and os.stat(candidate).st_size >= tracked.offset:
                        self._consume(key)
                        return candidate
                except OSError:
                    continue
            return None
        for key, candidate in sorted(_siblings(tracked.path).items(), key=lambda item: item[1]):
            try:
                if key in self.files or os.stat(candidate).st_size < tracked.offset:
                    continue
                with open(candidate, "rb") as handle:
                    if fingerprint(handle.read(tracked.fp_len)) == tracked.fingerprint:
                        self._consume(key)
                        return candidate
            except OSError:
                continue
        return None

    def _read_lines(self, tracked: TrackedFile, budget: list[int]) -> Iterator[bytes]:
        """Complete lines from ``tracked.offset`` on; advances the offset past what it yields."""
        read_size = max(CHUNK, self.max_line_bytes)
        while budget[0] > 0:
            data = os.pread(tracked.fd, read_size, tracked.offset)
            if not data:
                return
            if tracked.skipping:
                nl = data.find(b"\n")
                if nl < 0:
                    tracked.offset += len(data)
                    continue
                tracked.offset += nl + 1
                tracked.skipping = False
                continue
            nl = data.rfind(b"\n")
            if nl < 0:
                if len(data) < self.max_line_bytes:
                    return  # a partial last line: wait for its newline
                self._problem("line_too_long", tracked.path + "#long",
                              f"skipped a line longer than {self.max_line_bytes} bytes in {tracked.path} at offset "
                              f"{tracked.offset}; such lines are not registry log lines")
                tracked.skipping = True
                continue
            block = data[:nl + 1]
            too_long = self._first_overlong(block)
            if too_long is not None:
                block = block[:too_long]
            tracked.offset += len(block)
            budget[0] -= len(block)
            if block:
                yield block
            if too_long is not None:
                self._problem("line_too_long", tracked.path + "#long",
                              f"skipped a line longer than {self.max_line_bytes} bytes in {tracked.path} at offset "
                              f"{tracked.offset}; such lines are not registry log lines")
                tracked.skipping = True

    def _first_overlong(self, block: bytes) -> int | None:
        """Start of the first line longer than max_line_bytes in ``block``, if any."""
        if len(block) <= self.max_line_bytes:
            return None
        start = 0
        while start < len(block):
            nl = block.find(b"\n", start)
            if nl - start >= self.max_line_bytes:
                return start
            start = nl + 1
        return None


def _siblings(path: str) -> dict[tuple[int, int], str]:
    """Uncompressed files next to ``path`` whose name extends it (``app.log.1``, ``app.log-2026...``)."""
    directory, base = os.path.split(path)
    found: dict[tuple[int, int], str] = {}
    try:
        with os.scandir(directory or ".") as entries:
            for entry in entries:
                name = entry.name
                if name == base or not name.startswith(base) or name.endswith((".gz", ".bz2", ".xz", ".zst")):
                    continue
                st = entry.stat()
                if entry.is_file():
                    found[(st.st_dev, st.st_ino)] = entry.path
    except OSError:
        pass
    return found
