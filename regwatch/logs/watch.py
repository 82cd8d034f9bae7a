"""Wait for a followed log to change: inotify on Linux (through ctypes), a short poll elsewhere.

``Watcher.wait(timeout)`` returns when something in the watched directories may concern the
followed files, when ``wake()`` is called, or after ``timeout`` seconds. It never says *what*
changed: the follower re-reads its files (an fstat and a pread each), so a missed or merged
event costs nothing but a later read. Directories, not files, are watched, so a rotation
(rename, create, truncate) and a file that appears later are seen too; a directory that does
not exist yet, or a kernel without inotify, falls back to the poll.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import logging
import os
import select
import struct
import sys
import time

log = logging.getLogger("regwatch.logs")

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x002, 0x004, 0x008
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x040, 0x080, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | \
    IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")

_libc = None


def _inotify():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                lib.inotify_init1.argtypes = [ctypes.c_int]
                lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
                _libc = lib
            except (OSError, AttributeError):
                pass
    return _libc or None


def _drain(fd: int) -> bytes:
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
            if len(data) > 1 << 20:
                break
    except BlockingIOError:
        pass
    return data


class Watcher:
    """Waits for changes in the directories of ``patterns`` (glob patterns of followed files)."""

    def __init__(self, patterns: list[str], use_inotify: bool = True):
        self.patterns = patterns
        self._names = [os.path.basename(p) for p in patterns]
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._fd: int | None = None
        self._watched: dict[int, str] = {}
        lib = _inotify() if use_inotify else None
        if lib is not None:
            fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
            else:
                log.info("inotify is not available; polling the log files",
                         extra={"err": os.strerror(ctypes.get_errno())})
        self.refresh()

    @property
    def inotify(self) -> bool:
        """True while every watched directory has an inotify watch (so waiting needs no poll)."""
        return self._fd is not None and len(self._watched) == len(self._directories())

    def _directories(self) -> set[str]:
        dirs = set()
        for pattern in self.patterns:
            directory = os.path.dirname(pattern) or "."
            if not any(ch in directory for ch in "*?["):
                dirs.add(directory)
        return dirs

    def refresh(self) -> None:
        """Add watches for directories that exist now (called after each read; cheap when all are watched)."""
        lib = _inotify()
        if self._fd is None or lib is None:
            return
        wanted = self._directories()
        if wanted == set(self._watched.values()):
            return
        for directory in wanted - set(self._watched.values()):
            wd = lib.inotify_add_watch(self._fd, os.fsencode(directory), MASK)
            if wd >= 0:
                self._watched[wd] = directory
            elif ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):
                log.info("cannot watch a log directory with inotify; polling it",
                         extra={"path": directory, "err": os.strerror(ctypes.get_errno())})

    def follows(self, extra_names: list[str]) -> None:
        """Also wake for files whose name starts with one of ``extra_names`` (rotated copies)."""
        self._names = [os.path.basename(p) for p in self.patterns] + extra_names

    def _relevant(self, data: bytes) -> bool:
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            name = data[pos + _EVENT.size: pos + _EVENT.size + length].rstrip(b"\0").decode("utf-8", "replace")
            pos += _EVENT.size + length
            if mask & (IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                    self._watched.pop(wd, None)  # the directory went away; re-added when it is back
                return True
            if not name or any(fnmatch.fnmatchcase(name, p) or name.startswith(p) for p in self._names):
                return True
        return False

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; True if woken by one (or by ``wake()``)."""
        fds = [self._wake_r] + ([self._fd] if self._fd is not None else [])
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                ready, _, _ = select.select(fds, [], [], remaining)
            except InterruptedError:
                continue
            if not ready:
                return False
            woken = False
            if self._wake_r in ready:
                _drain(self._wake_r)
                woken = True
            if self._fd is not None and self._fd in ready:
                # events about other files in the same directory are read and ignored
                woken = self._relevant(_drain(self._fd)) or woken
            if woken:
                return True
        return False

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # the reader end is closed already: nothing is waiting to be woken
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):  # closed already
                    os.close(fd)
        self._fd = None
