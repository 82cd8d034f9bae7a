"""What backup, restore and verify share: opening a registry by URL or target name (with the
credential order of interface.md), the per-image ledger and per-phase accounting every figure of the
report comes from, and progress output (a rich bar on a TTY that log lines share, plain log lines
otherwise)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from regwatch.client import RateLimited, RegistryClient
from regwatch.config import Config

log = logging.getLogger("regwatch.drill")

PHASES = ("backup", "restore", "verify")


class DrillUsageError(Exception):
    """Bad usage (exit 2): an unknown target name, a malformed URL."""


@dataclass
class Registry:
    """A registry the drill talks to: the client (which paces ``--max-rps`` and the registry's own rate
    limit), a printable name, and what its 429s said (for the final message)."""
    client: RegistryClient
    url: str
    limited: int = 0
    reset_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def seen(self, exc: BaseException) -> None:
        """Note a failure; a RateLimited one says when the limit resets (from Retry-After, or, when the client
        stopped pacing because the wait would outlast the drill, from the registry's last RateLimit-Reset)."""
        if isinstance(exc, RateLimited):
            reset_at = exc.reset_at
            rl = self.client.last_ratelimit if self.client is not None else None
            if reset_at is None and rl is not None and (rl.reset is not None or rl.window):
                reset_at = time.time() + (rl.reset if rl.reset is not None else rl.window) - (time.monotonic() - rl.at)
            with self._lock:
                self.limited += 1
                if reset_at is not None:
                    self.reset_at = max(self.reset_at or 0.0, reset_at)

    def describe_reset(self) -> str | None:
        """For the end of a drill that ran into 429s: when the limit resets."""
        if not self.limited:
            return None
        host = self.client.name
        if self.reset_at is None:
            return (f"{host} rate-limited the drill ({self.limited} request(s) refused or not sent) without saying "
                    "when the limit resets; run the drill again later, or lower --max-rps")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.reset_at))
        left = max(self.reset_at - time.time(), 0.0)
        return (f"{host} rate-limited the drill ({self.limited} request(s) refused or not sent); the limit resets "
                f"at {when} (in {left:.0f} s); run the drill again after that, or lower --max-rps")

    def close(self) -> None:
        self.client.close()


def open_registry(ref: str, config: Config | None, *, pool_size: int = 8, ca_file: str | None = None,
                  insecure: bool = False, max_rps: float | None = None, role: str = "source") -> Registry:
    """``ref`` is a target name from the config or a registry URL. Credentials: one resolution
    (regwatch.credentials): the config's target, then REGWATCH_USERNAME/REGWATCH_PASSWORD, then the
    docker config (credsStore/credHelpers included). ``ca_file``/``insecure`` apply to URLs."""
    from regwatch.credentials import CredentialsError, resolve

    try:
        if config is not None and (target := config.target(ref)) is not None:
            if ca_file or insecure:
                raise DrillUsageError(f"--ca-file and --insecure apply to registries given by URL; {role} {ref!r} is "
                                      "a target of the config: set its tls.ca_file or tls.insecure_skip_verify "
                                      "instead")
            client = RegistryClient.for_target(target, credentials=resolve(target.url, target), pool_size=pool_size,
                                               timeout=max(target.timeout, 60.0), max_rps=max_rps)
            return Registry(client, client.url)
        parts = urlsplit(ref)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            known = ", ".join(t.name for t in config.targets) if config else "none (no --config given)"
            raise DrillUsageError(f"{ref!r} is neither a registry URL (http(s)://host[:port]) nor a target name "
                                  f"in the config (known targets: {known}); pass a URL or fix --config")
        if parts.username or parts.password:
            raise DrillUsageError(f"{parts.scheme}://{parts.hostname}...: a registry URL must not carry credentials; "
                                  "use REGWATCH_USERNAME/REGWATCH_PASSWORD, the config or docker login")
        if ca_file and not Path(ca_file).is_file():
            raise DrillUsageError(f"--ca-file {ca_file}: no such file")
        # the client gives the one TLS-off warning (regwatch.tls.warn_verification_off) itself
        client = RegistryClient(ref, credentials=resolve(ref), pool_size=pool_size, timeout=60.0, ca_file=ca_file,
                                insecure_skip_verify=insecure and parts.scheme == "https", max_rps=max_rps)
        return Registry(client, client.url)
    except CredentialsError as exc:
        raise DrillUsageError(str(exc)) from None


def human_bytes(n: float | None) -> str:
    """Decimal units, as registries and docker show sizes: 3.5 MB is 3,500,000 bytes."""
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


# ---------------------------------------------------------------------------------------------- ledger

@dataclass
class ImageRow:
    """One selected tag (or, in a restore or verify without a backup, one tag of the store)."""
    repo: str
    tag: str
    digest: str = ""
    media_type: str = ""
    platforms: list[str] = field(default_factory=list)
    size: int = 0                 # bytes of every manifest, config and layer this image reaches, once each
    referrers: list[dict] = field(default_factory=list)  # {"digest", "artifactType", "via"}
    status: dict[str, str] = field(default_factory=dict)  # phase -> outcome
    problems: list[str] = field(default_factory=list)
    confirmed: float | None = None  # when a backup last saw the source serve this digest
    referrer_of: str | None = None  # a referrers-tag-schema or cosign tag: the subject digest

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def ok(self) -> bool:
        return bool(self.status) and all(s in OK_OUTCOMES for s in self.status.values())

    def as_dict(self) -> dict:
        return {"image": self.name, "repository": self.repo, "tag": self.tag, "digest": self.digest,
                "media_type": self.media_type, "platforms": self.platforms, "size_bytes": self.size,
                "size": human_bytes(self.size), "referrers": self.referrers, "status": dict(self.status),
                "problems": list(self.problems), "confirmed": self.confirmed, "referrer_of": self.referrer_of,
                "ok": self.ok}


OK_OUTCOMES = {"copied", "unchanged", "pushed", "present", "verified", "planned"}


class Ledger:
    """Every image of this run, by name, shared by the phases; thread-safe."""

    def __init__(self) -> None:
        self.rows: dict[str, ImageRow] = {}
        self._lock = threading.Lock()

    def row(self, repo: str, tag: str) -> ImageRow:
        with self._lock:
            key = f"{repo}:{tag}"
            if key not in self.rows:
                self.rows[key] = ImageRow(repo, tag)
            return self.rows[key]

    def set(self, row: ImageRow, phase: str, outcome: str, problem: str | None = None) -> None:
        with self._lock:
            if row.status.get(phase) == "failed":
                return  # a failure stays (a referrer failing after its subject was pushed)
            row.status[phase] = outcome
            if problem:
                row.problems.append(f"{phase}: {problem}")

    def sorted(self) -> list[ImageRow]:
        return [self.rows[k] for k in sorted(self.rows)]


# ---------------------------------------------------------------------------------------------- phases

@dataclass
class Failure:
    image: str  # repository:tag (or repository@digest, or "*" for the whole phase)
    message: str

    def as_dict(self) -> dict:
        return {"image": self.image, "message": self.message}


# outcome of one object (manifest or blob) in a phase; every object is counted once with one outcome
MOVED, MOUNTED, PRESENT, CHECKED, FAILED = "moved", "mounted", "present", "checked", "failed"


@dataclass
class PhaseResult:
    phase: str
    started: float = field(default_factory=time.time)
    ended: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)  # outcome -> count (filled by finish())
    objects: dict[tuple, tuple[int, str, str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, image: str, message: str) -> None:
        with self._lock:
            self.failures.append(Failure(image, message))
        log.error("drill %s: %s: %s", self.phase, image, message)

    def change(self, line: str) -> None:
        with self._lock:
            self.changes.append(line)

    def note(self, line: str) -> None:
        with self._lock:
            if line not in self.notes:
                self.notes.append(line)

    def account(self, key: tuple, size: int, outcome: str, kind: str = "blob") -> bool:
        """Record one object once (``key``: its digest, or (repository, digest) where placement counts);
        a later failure overrides an earlier outcome. True if this call recorded it first."""
        with self._lock:
            old = self.objects.get(key)
            if old is None or (outcome == FAILED and old[1] != FAILED):
                self.objects[key] = (size, outcome, kind)
            return old is None

    def seen(self, key: tuple) -> bool:
        with self._lock:
            return key in self.objects

    def finish(self, ledger: Ledger | None = None) -> PhaseResult:
        self.ended = time.time()
        if ledger is not None:
            counts: dict[str, int] = {}
            for row in ledger.rows.values():
                if self.phase in row.status:
                    counts[row.status[self.phase]] = counts.get(row.status[self.phase], 0) + 1
            self.images = counts
        return self

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def duration(self) -> float:
        return max((self.ended or time.time()) - self.started, 0.0)

    def totals(self) -> dict:
        """Objects and bytes by outcome; ``objects == moved + mounted + present + checked + failed``."""
        out = {"objects": 0, "bytes": 0, "manifests": 0, "blobs": 0}
        for outcome in (MOVED, MOUNTED, PRESENT, CHECKED, FAILED):
            out[f"{outcome}_objects"] = 0
            out[f"{outcome}_bytes"] = 0
        with self._lock:
            values = list(self.objects.values())
        for size, outcome, kind in values:
            out["objects"] += 1
            out["bytes"] += size
            out["manifests" if kind == "manifest" else "blobs"] += 1
            out[f"{outcome}_objects"] += 1
            out[f"{outcome}_bytes"] += size
        return out

    def as_dict(self) -> dict:
        t = self.totals()
        rate = t["moved_bytes"] / self.duration if self.duration and t["moved_bytes"] else None
        return {"phase": self.phase, "started": self.started, "ended": self.ended,
                "duration_seconds": self.duration, "images": dict(self.images), **t,
                "rate_bytes_per_second": rate, "failures": [f.as_dict() for f in self.failures],
                "changes": list(self.changes), "notes": list(self.notes), "ok": self.ok}


# ---------------------------------------------------------------------------------------------- progress

class _ConsoleLines:
    """A stream for the log handler while a bar is live: each complete line is printed through the bar's
    console (above the bar), as it is: no markup, no highlighting, no wrapping (a registry's error text
    with ``[brackets]`` stays text, and a long line stays one line)."""

    def __init__(self, console):  # console: a rich Console
        self.console = console
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buf += text
            *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._buf = self._buf, ""
        if line:
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)


class Progress:
    """Images and bytes done: a rich bar on a TTY, a plain log line every few seconds otherwise. While
    the bar is shown, log lines go through the bar's console (above the bar, never into its line)."""

    def __init__(self, phase: str, total_images: int | None = None, *, enabled: bool | None = None):
        self.phase = phase
        self.images = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._start = self._last
        self._rich = None
        self._swapped: list = []
        if enabled if enabled is not None else sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            console = Console(file=sys.stderr)
            self._rich = RichProgress(TextColumn(f"[bold]{phase}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("images  {task.fields[mb]}  {task.fields[rate]}"),
                                      transient=True, console=console, redirect_stdout=False,
                                      redirect_stderr=False)
            self._task = self._rich.add_task(phase, total=total_images, mb="0 B", rate="- MB/s")
            proxy = _ConsoleLines(console)
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                    self._swapped.append((handler, handler.setStream(proxy)))
            self._rich.start()

    def set_total(self, total: int) -> None:
        if self._rich is not None:
            self._rich.update(self._task, total=total)

    def advance(self, images: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.images += images
            self.bytes += nbytes
            now = time.monotonic()
            if self._rich is not None:
                self._rich.update(self._task, completed=self.images, mb=human_bytes(self.bytes),
                                  rate=f"{self.bytes / 1e6 / max(now - self._start, 1e-9):.1f} MB/s")
            elif images and now - self._last >= 2.0:
                self._last = now
                rate = self.bytes / max(now - self._start, 1e-9)
                log.info("drill %s: %d images, %s, %.1f MB/s", self.phase, self.images, human_bytes(self.bytes),
                         rate / 1e6)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.refresh()  # the final count is drawn once, even for a phase shorter than a refresh
            self._rich.stop()
            for handler, old in self._swapped:
                handler.setStream(old)
            self._swapped = []
            self._rich = None
        log.info("drill %s done: %d images, %s in %.1fs", self.phase, self.images, human_bytes(self.bytes),
                 time.monotonic() - self._start)
