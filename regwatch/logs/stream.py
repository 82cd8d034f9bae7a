"""Stream one ``auth_logs`` file source: read lines as they are written, count them, persist.

A ``FileStream`` owns a follower, a parser and the live ``Tally`` of one source, and runs one
thread that waits for a change (``Watcher``: inotify, else a poll of ``POLL_SECONDS``), reads
every complete line that arrived and counts it at once. ``snapshot()`` is what the collector
exports: a copy of the counters taken between two blocks, so it is never ahead of what was read.

Exactness through restarts: the offsets, the totals and the parser's state are saved together
in the positions file (one atomic write) at the end of a read pass, when the three agree, at
most every ``SAVE_SECONDS`` while lines keep coming and once more on ``stop()``. After a crash
or ``kill -9`` the restarted stream resumes from the last save: the lines read since then are
read and counted again, exactly once, and the counters never go back.

The state is loaded in ``start()``, not in the constructor: on a config reload the new
collector is built while the old one still runs, and must read what the old one saved last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from regwatch.logs.follower import Follower
from regwatch.logs.parsers import Parser, sniff
from regwatch.logs.positions import PositionsError, PositionsFile
from regwatch.logs.tally import Tally, from_json, to_json
from regwatch.logs.watch import Watcher

log = logging.getLogger("regwatch.authlogs")

SNIFF_LINES = 50
SAVE_SECONDS = 2.0  # at most this long between a counted line and its save, while lines come
POLL_SECONDS = 0.5  # without inotify
RESCAN_SECONDS = 5.0  # with inotify: a look even without an event (files moved to another directory, NFS)
RELEASE_SECONDS = 5.0  # lines held after an injecting access-log head are counted after this much quiet


class FileStream:
    def __init__(self, name: str, pattern: str, *, fmt: str = "auto", start_at: str = "end",
                 positions_file: str | None = None, top_n: int = 0, client_source: str = "logged",
                 use_inotify: bool = True, clock=time.monotonic):
        self.name = name
        self.pattern = pattern
        self.configured_format = fmt
        self.start_at = start_at
        self.top_n = top_n
        self.client_source = client_source
        self.use_inotify = use_inotify
        self.clock = clock
        self.positions = PositionsFile(positions_file) if positions_file else None
        self.follower = Follower(pattern, start_at=start_at)
        self.format: str | None = None if fmt == "auto" else fmt
        self.parser: Parser | None = None
        self.totals = Tally()
        self.errors: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Called (in the stream's thread) after a read pass that changed the counters: the collector's
        # job publishes them at once.
        self.on_change: Callable[[], None] | None = None
        self._watcher: Watcher | None = None
        self._started = False
        self._dirty = False
        self._background = True
        self._last_save = 0.0
        self._last_data = 0.0
        self.passes = 0  # read passes done (tests wait on it)
        self._files = self._lag = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, background: bool = True) -> None:
        """Load the saved state, read what is there now, then follow in the background (or, with
        ``background=False``, only when the caller calls ``pump()``)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._background = background
            self._load()
        self._watcher = Watcher([self.pattern], use_inotify=self.use_inotify)
        self.pump()
        if not background:
            return
        self._thread = threading.Thread(target=self._run, name=f"authlogs-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following and save the positions once more."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._started and (self._thread is None or not self._thread.is_alive()):
            with self._lock:
                if self._dirty:
                    self._save()
        self.follower.close()
        if self._watcher is not None:
            self._watcher.close()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def inotify(self) -> bool:
        return self._watcher is not None and self._watcher.inotify

    def _run(self) -> None:
        while not self._stop.is_set():
            timeout = 0.0 if self.follower.more else (RESCAN_SECONDS if self.inotify else POLL_SECONDS)
            if self.parser is not None and self.parser.holding:
                timeout = min(timeout, RELEASE_SECONDS)
            if timeout:
                self._watcher.wait(timeout)  # type: ignore[union-attr]
            if self._stop.is_set():
                break
            try:
                self.pump()
            except Exception as exc:  # noqa: BLE001 - a follower must not die on one bad pass
                log.error(f"auth source {self.name}: reading the logs failed ({type(exc).__name__}: {exc}); "
                          "retrying", extra={"source": self.name})
                self._stop.wait(1.0)

    # ------------------------------------------------------------------ reading

    def pump(self) -> int:
        """One read pass over every followed file; returns the bytes counted."""
        counted = 0
        before = Counter(self.follower.errors)
        for block in self.follower.read():
            with self._lock:
                parser = self._parser_for(block)
                parser.feed(block, self.totals)
                counted += len(block)
        now = self.clock()
        changed = bool(counted)
        with self._lock:
            self._merge_errors(before)
            if counted:
                self._dirty, self._last_data = True, now
            elif self.parser is not None and self.parser.holding and now - self._last_data >= RELEASE_SECONDS:
                self.parser.release(self.totals)
                self._merge_errors(Counter(self.follower.errors))
                self._dirty = changed = True
            self.totals.bound(max(10 * self.top_n, 100))
            # measured here, in the one thread that touches the follower
            self._files, self._lag = len(self.follower.files), self.follower.lag_bytes()
            if self._dirty and (now - self._last_save >= SAVE_SECONDS or self._stop.is_set() or
                                not self._background):
                self._save()
            self.passes += 1
        if self._watcher is not None:
            self._watcher.refresh()
            self._watcher.follows(self.follower.names())
        if changed and self.on_change is not None:
            self.on_change()
        return counted

    def _merge_errors(self, before: Counter) -> None:
        delta = Counter(self.follower.errors)
        delta.subtract(before)
        self.errors.update(+delta)
        if self.parser is not None and self.parser.errors:
            injected = self.parser.errors["injected"]
            if injected:
                log.warning(f"auth source {self.name}: {injected} forged line(s) written into the log through an "
                            "access-log username were not counted", extra={"source": self.name})
            self.errors.update(self.parser.errors)
            self.parser.errors.clear()
        self.errors["binary"] = self.totals.binary_lines

    def _parser_for(self, block: bytes) -> Parser:
        if self.parser is None:
            lines = block[:1 << 16].decode("utf-8", "replace").splitlines()[:SNIFF_LINES]
            sniffed = sniff(lines)
            if sniffed:
                log.info("detected the log format", extra={"source": self.name, "format": sniffed})
                self.format = sniffed
            self._make_parser(sniffed or "distribution")
        return self.parser  # type: ignore[return-value]

    def _make_parser(self, fmt: str | None) -> None:
        if fmt is not None and self.parser is None:
            self.parser = Parser(fmt, breakdown=self.top_n > 0, client_source=self.client_source)

    def busy(self, within: float) -> bool:
        """Whether lines were counted in the last ``within`` seconds."""
        return self._last_data > 0 and self.clock() - self._last_data < within

    def snapshot(self) -> tuple[Tally, Counter, int, int]:
        """(counters, read errors, files followed, lag in bytes) as of the last counted block."""
        with self._lock:
            return self.totals.copy(), Counter(self.errors), self._files, self._lag

    # ------------------------------------------------------------------ persistence

    def _load(self) -> None:
        self._make_parser(self.format)
        if self.positions is None:
            return
        state, problems = self.positions.load()
        for problem in problems:
            log.error(f"{problem}; {'resuming from the backup' if state else 'starting over at the end of the logs'}",
                      extra={"source": self.name})
            self.errors["corrupt_positions"] += 1
        if state is None:
            return
        try:
            totals = from_json(state.get("counters", {}))
            errors = Counter({str(k): int(v) for k, v in dict(state.get("errors", {})).items() if int(v) >= 0})
            saved_format = state.get("format")
            if saved_format is not None and self.configured_format == "auto":
                self.format = str(saved_format)
                self.parser = None
            self._make_parser(self.format)
            if self.parser is not None:
                self.parser.restore(state.get("parser", {}))
            self.follower.restore(state)
            self.totals = totals
            self.errors = errors + self.errors
        except (ValueError, TypeError, KeyError) as exc:
            log.error(f"positions file {self.positions.path} is corrupt ({exc}); starting over at the end of the logs",
                      extra={"source": self.name})
            self.errors["corrupt_positions"] += 1
            self.follower = Follower(self.pattern, start_at=self.start_at)
            self.parser = None
            self._make_parser(None if self.configured_format == "auto" else self.configured_format)

    def _save(self) -> None:
        self._last_save = self.clock()
        self._dirty = False
        if self.positions is None:
            return
        state = {"source": self.name, "format": self.format, **self.follower.positions(),
                 "counters": to_json(self.totals), "errors": {k: v for k, v in self.errors.items() if v},
                 "parser": self.parser.state() if self.parser else {}}
        try:
            self.positions.save(state)
        except PositionsError as exc:
            log.error(str(exc), extra={"source": self.name})
            self.errors["positions_write"] += 1
