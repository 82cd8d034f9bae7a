"""Time budgets: how long regwatch may wait on a peer, decided in one place.

A ``Budget`` says how long one HTTP exchange may take (connect to last byte: an overall
deadline, not a per-read timeout), how often an idempotent request is retried, how long it
backs off between attempts and how long a ``Retry-After`` is honoured. From those it derives
the worst case of one call, and from that (or from a fan-out collector's collection budget)
the deadline of a collection and the runner's job timeout. No other module computes a
timeout.

A ``Run`` is one collection in progress. The runner opens it around ``collect()``; the client
finds it through a context variable, caps every exchange and every wait by what is left of
it, and records which request it is waiting on, so that a job that runs out of time is
reported with the request it was stuck in. ``ContextPool`` carries the run into the worker
threads of a fan-out collector.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# The runner waits this much past a job's deadline before it gives up on the worker: the
# client raises its own error (naming the request) at the deadline, so the runner's bare
# "timed out" only fires when something outside the client hangs (a stuck NFS statvfs).
GRACE = 2.0
# One logical call may need three exchanges: the unauthenticated attempt that draws the
# challenge, the token fetch from the realm, and the authorised retry.
EXCHANGES_PER_CALL = 3


@dataclass(frozen=True)
class Budget:
    """How long regwatch waits on one peer, and what that adds up to.

    ``timeout`` is one HTTP exchange from connect to the last byte. ``retries`` extra attempts
    are made for idempotent requests on a connection error, a timeout, 429 or 502-504, after
    ``backoff`` seconds doubling each time, or after the peer's ``Retry-After`` up to
    ``retry_after_cap``. ``collection`` is the deadline of a whole fan-out collection (many
    calls); without it a collection is one call. ``grace`` is how much longer the runner waits.
    ``sleep`` is injectable so failure-path tests do not sleep through real backoff.
    """

    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    retry_after_cap: float = 30.0
    collection: float | None = None
    grace: float = GRACE
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    @classmethod
    def local(cls, seconds: float) -> Budget:
        """A job that talks to no peer over HTTP (statvfs, a report file): ``seconds`` in all."""
        return cls(timeout=seconds, retries=0, backoff=0.0, retry_after_cap=0.0, collection=seconds)

    def backoff_wait(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1-based) when the peer gave no Retry-After."""
        return self.backoff * 2 ** (attempt - 1)

    def retry_wait(self, attempt: int, retry_after: float | None) -> float:
        """The wait before retry ``attempt``: the peer's Retry-After (capped) or the backoff."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.retry_after_cap))
        return self.backoff_wait(attempt)

    def exchange_worst_case(self) -> float:
        """One request with all its retries: every attempt times out, every wait is the longest allowed."""
        waits = sum(max(self.backoff_wait(k), self.retry_after_cap) for k in range(1, self.retries + 1))
        return (self.retries + 1) * self.timeout + waits

    def call_worst_case(self) -> float:
        """One call: challenge, token and authorised retry, each at its worst."""
        return EXCHANGES_PER_CALL * self.exchange_worst_case()

    @property
    def deadline(self) -> float:
        """Seconds one collection may take; the client stops at this point with its own error."""
        return self.collection if self.collection is not None else self.call_worst_case()

    @property
    def job_timeout(self) -> float:
        """Seconds the runner waits for a collection before it records a timeout."""
        return self.deadline + self.grace


class Run:
    """One collection (or one command's sequence of requests) in progress: its deadline and the
    requests it is waiting on right now."""

    def __init__(self, seconds: float | None, what: str = ""):
        self.seconds = seconds
        self.what = what
        self.end = None if seconds is None else time.monotonic() + seconds
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[float, str]] = {}
        self._ids = itertools.count()
        self.last = ""

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    @contextmanager
    def waiting_on(self, description: str) -> Iterator[None]:
        """Record that the run waits on ``description`` (``GET https://host/v2/_catalog``) meanwhile."""
        key = next(self._ids)
        with self._lock:
            self._waiting[key] = (time.monotonic(), description)
            self.last = description
        try:
            yield
        finally:
            with self._lock:
                self._waiting.pop(key, None)

    def describe_waiting(self) -> str:
        """The request waited on longest (and how many others), or the last one if none is in flight."""
        with self._lock:
            waiting = sorted(self._waiting.values())
            last = self.last
        if not waiting:
            return f"the last request was {last}" if last else "no request was in flight"
        started, description = waiting[0]
        more = f" (and {len(waiting) - 1} other request(s))" if len(waiting) > 1 else ""
        return f"waiting {time.monotonic() - started:.1f}s on {description}{more}"


_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("regwatch_run", default=None)


def current_run() -> Run | None:
    return _current.get()


@contextmanager
def running(run: Run) -> Iterator[Run]:
    """Make ``run`` the current run of this thread (and of the ContextPool workers it starts)."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


class ContextPool(ThreadPoolExecutor):
    """A thread pool whose tasks see the submitting thread's run (deadline and request tracking)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        context = contextvars.copy_context()

        def call(*args: Any) -> Any:
            return context.copy().run(fn, *args)

        return super().map(call, *iterables, timeout=timeout, chunksize=chunksize)
