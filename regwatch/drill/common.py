"""What backup, restore and verify share: opening a registry by URL or target name (with the
credential order of interface.md), walking a manifest's references, the drill result record, and
progress output (a rich bar on a TTY, plain log lines otherwise)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from regwatch.client import INDEX_MEDIA_TYPES, RegistryClient
from regwatch.config import Config

log = logging.getLogger("regwatch.drill")


class DrillUsageError(Exception):
    """Bad usage (exit 2): an unknown target name, a malformed URL."""


def open_registry(ref: str, config: Config | None, *, pool_size: int = 8) -> RegistryClient:
    """``ref`` is a target name from the config or a registry URL. Credentials: the config's target,
    then REGWATCH_USERNAME/REGWATCH_PASSWORD, then the docker config file."""
    from regwatch.credentials import CredentialsError, resolve

    try:
        if config is not None and (target := config.target(ref)) is not None:
            return RegistryClient.for_target(target, credentials=resolve(target.url, target), pool_size=pool_size,
                                             timeout=max(target.timeout, 60.0))
        parts = urlsplit(ref)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            known = ", ".join(t.name for t in config.targets) if config else "none (no --config given)"
            raise DrillUsageError(f"{ref!r} is neither a registry URL (http(s)://host[:port]) nor a target name "
                                  f"in the config (known targets: {known}); pass a URL or fix --config")
        if parts.username or parts.password:
            raise DrillUsageError(f"{parts.scheme}://{parts.hostname}...: a registry URL must not carry credentials; "
                                  "use REGWATCH_USERNAME/REGWATCH_PASSWORD, the config or docker login")
        return RegistryClient(ref, credentials=resolve(ref), pool_size=pool_size, timeout=60.0)
    except CredentialsError as exc:
        raise DrillUsageError(str(exc)) from None


def children(manifest: dict, media_type: str) -> tuple[list[dict], list[dict]]:
    """(child manifests, blobs) a manifest references: an index's manifests, an image's config and layers
    (plus an OCI 1.1 artifact's subject is *not* followed: it points back at the signed image)."""
    if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
        return list(manifest.get("manifests") or []), []
    blobs = [manifest["config"]] if manifest.get("config") else []
    return [], blobs + list(manifest.get("layers") or [])


def media_type_of(body: bytes, fallback: str) -> str:
    try:
        return json.loads(body).get("mediaType") or fallback
    except ValueError:
        return fallback


@dataclass
class Failure:
    image: str  # repository:tag (or repository@digest)
    message: str

    def as_dict(self) -> dict:
        return {"image": self.image, "message": self.message}


@dataclass
class PhaseResult:
    phase: str
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    images_ok: int = 0
    images_failed: int = 0
    images_skipped: int = 0
    tags: int = 0
    blobs: int = 0
    blobs_transferred: int = 0
    bytes_ok: int = 0
    bytes_transferred: int = 0
    bytes_skipped: int = 0
    bytes_failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, image: str, message: str) -> None:
        with self._lock:
            self.failures.append(Failure(image, message))
        log.error("drill %s: %s: %s", self.phase, image, message)

    def change(self, line: str) -> None:
        with self._lock:
            self.changes.append(line)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def finish(self) -> PhaseResult:
        self.ended = time.time()
        return self

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def duration(self) -> float:
        return max((self.ended or time.time()) - self.started, 0.0)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in (
            "phase", "started", "ended", "images_ok", "images_failed", "images_skipped", "tags", "blobs",
            "blobs_transferred", "bytes_ok", "bytes_transferred", "bytes_skipped", "bytes_failed")}
        d["duration_seconds"] = self.duration
        d["rate_bytes_per_second"] = (self.bytes_transferred or self.bytes_ok) / self.duration \
            if self.duration else 0.0
        d["failures"] = [f.as_dict() for f in self.failures]
        d["changes"] = list(self.changes)
        d["ok"] = self.ok
        return d


class Progress:
    """Images and bytes done: a rich bar on a TTY, a plain log line every few seconds otherwise."""

    def __init__(self, phase: str, total_images: int | None = None, *, enabled: bool | None = None):
        self.phase = phase
        self.images = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._start = self._last
        self._rich = None
        if enabled if enabled is not None else sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self._rich = RichProgress(TextColumn(f"[bold]{phase}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("images  {task.fields[mb]:.1f} MB  {task.fields[rate]:.1f} MB/s"),
                                      transient=True)
            self._task = self._rich.add_task(phase, total=total_images, mb=0.0, rate=0.0)
            self._rich.start()

    def advance(self, images: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.images += images
            self.bytes += nbytes
            now = time.monotonic()
            if self._rich is not None:
                self._rich.update(self._task, completed=self.images, mb=self.bytes / 1e6,
                                  rate=self.bytes / 1e6 / max(now - self._start, 1e-9))
            elif images and now - self._last >= 2.0:
                self._last = now
                rate = self.bytes / max(now - self._start, 1e-9)
                log.info("drill %s: %d images, %d bytes, %.1f MB/s", self.phase, self.images, self.bytes, rate / 1e6)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        log.info("drill %s done: %d images, %d bytes in %.1fs", self.phase, self.images, self.bytes,
                 time.monotonic() - self._start)


class Once:
    """Run ``fn`` at most once per key on a bounded thread pool; later callers get the same future."""

    def __init__(self, workers: int, name: str):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix=name)
        self._futures: dict = {}
        self._lock = threading.Lock()

    def submit(self, key, fn, *args):  # noqa: ANN001, ANN201 - generic helper
        """Returns (future, first): ``first`` is True for the call that scheduled the work."""
        with self._lock:
            fut = self._futures.get(key)
            if fut is not None:
                return fut, False
            fut = self.pool.submit(fn, *args)
            self._futures[key] = fut
            return fut, True

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
