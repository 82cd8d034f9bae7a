"""Runs every job in the background and keeps the latest finished snapshot of each.

Each job has its own thread and schedule, so a slow or dead target delays nobody else.
A run happens in a worker thread that the job's thread waits on for at most the job's
timeout: past that the run counts as failed (its late result is thrown away) and the next
run waits until the stuck one has finished, so runs of one job never overlap.

A scrape never collects: after every finished run the exposition is rendered once into
bytes, and ``/metrics`` serves those bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om
from prometheus_client.process_collector import ProcessCollector

from regwatch import __version__
from regwatch.budget import Run, running
from regwatch.collectors import Job

log = logging.getLogger("regwatch.runner")

# The shortest time between two runs of a job that its collector woke (Job.wake).
WAKE_FLOOR = 0.25


@dataclass
class JobState:
    families: list[Metric] = field(default_factory=list)
    rendered: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    success: bool | None = None
    duration: float = 0.0
    last_success: float | None = None
    last_run: float | None = None
    last_error: str = ""
    runs: int = 0


class _Families:
    """A prometheus_client collector over a fixed list of families."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


@dataclass
class Exposition:
    text: bytes = b""
    text_gzip: bytes | None = None
    openmetrics: bytes | None = None


class Runner:
    def __init__(self, jobs: list[Job], static: Iterable[Metric] = ()):
        self.jobs = jobs
        self.states: dict[tuple[str, ...], JobState] = {job.key: JobState() for job in jobs}
        if len(self.states) != len(jobs):
            raise ValueError("two jobs share a target name and collector")
        self._static = list(static) + [_build_info()]
        self._static_rendered = _render_families(self._static)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._exposition = Exposition()
        self._reload_ok, self._reload_success_time = True, time.time()
        self._process = CollectorRegistry()
        ProcessCollector(registry=self._process)
        self._render()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for job in self.jobs:
            thread = threading.Thread(target=self._loop, args=(job,), name=f"job-{job.target}-{job.collector.name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        for job in self.jobs:
            job.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        contexts = {id(job.context): job.context for job in self.jobs if job.context is not None}
        for closer in [job.collector.close for job in self.jobs] + [c.close for c in contexts.values()]:
            with contextlib.suppress(Exception):  # any error: closing one collector must not stop the shutdown
                closer()

    def reload_failed(self) -> None:
        """A config reload failed: this runner's config stays in force, and the metrics say so."""
        self._reload_ok = False
        self._render()

    @property
    def ready(self) -> bool:
        with self._lock:
            return all(state.runs > 0 for state in self.states.values())

    def pending(self) -> list[str]:
        with self._lock:
            return ["/".join(key) for key, state in self.states.items() if state.runs == 0]

    # ------------------------------------------------------------------ running

    def _loop(self, job: Job) -> None:
        worker: threading.Thread | None = None
        if job.kind is None and job.context is not None and any(j.kind and j.context is job.context for j in self.jobs):
            # A secondary job's first run waits for its target's primary job (which finds a wrong kind or url),
            # bounded by the primary's own timeout.
            primary = next(j for j in self.jobs if j.kind and j.context is job.context)
            wait = time.monotonic() + primary.timeout
            while not job.context.primary_ran.wait(0.2):
                if self._stop.is_set() or time.monotonic() > wait:
                    break
        next_run = time.monotonic()
        last_start = float("-inf")
        while True:
            # A job runs on its interval, or sooner when its collector has news (job.wake: a followed log
            # counted new lines), but never more often than WAKE_FLOOR.
            woke = job.wake.wait(max(0.0, next_run - time.monotonic()))
            if self._stop.is_set():
                break
            if woke:
                job.wake.clear()
                gap = WAKE_FLOOR - (time.monotonic() - last_start)
                if gap > 0 and self._stop.wait(gap):
                    break
            started = last_start = time.monotonic()
            if worker is not None and worker.is_alive():
                self._record(job, None, time.monotonic() - started,
                             f"the previous collection is still running after {job.timeout:g}s timeout; skipped")
            else:
                worker = self.run_once(job)
            next_run = max(next_run + job.interval, time.monotonic() + min(job.interval, 1.0))

    def run_once(self, job: Job) -> threading.Thread:
        """Run ``job`` once (waiting at most its timeout) and record the result; returns the worker thread."""
        box: dict[str, object] = {}
        run = Run(job.budget.deadline, f"{job.target}/{job.collector.name}")

        def work() -> None:
            try:
                with running(run):
                    if job.context is not None:
                        job.context.check(primary=job.kind is not None)
                    box["families"] = list(job.collector.collect())
            except BaseException as exc:  # noqa: BLE001 - the framework owns failure
                box["error"] = exc

        started = time.monotonic()
        worker = threading.Thread(target=work, name=f"collect-{job.target}-{job.collector.name}", daemon=True)
        worker.start()
        worker.join(job.timeout)
        duration = time.monotonic() - started
        if worker.is_alive():
            self._record(job, None, duration, f"timed out after {job.timeout:g}s, {run.describe_waiting()}")
        elif "error" in box:
            exc = box["error"]
            self._record(job, None, duration, job.redact(_describe_error(exc)))
        else:
            self._record(job, box["families"], duration, "")  # type: ignore[arg-type]
        if job.kind is not None and job.context is not None:
            job.context.primary_ran.set()
        return worker

    def _record(self, job: Job, families: list[Metric] | None, duration: float, error: str) -> None:
        # Rendered here, in the job's own thread, once per run: a scrape or another job never pays for it.
        rendered = _render_families(families) if families else {}
        with self._lock:
            state = self.states[job.key]
            state.runs += 1
            state.last_run = time.time()
            state.duration = duration
            if families is None:
                state.success = False
                state.last_error = error
                state.families = []
                state.rendered = {}
            else:
                state.success = True
                state.last_error = ""
                state.families = families
                state.rendered = rendered
                state.last_success = time.time()
        if families is None:
            log.warning("collector failed", extra={"target": job.target, "collector": job.collector.name,
                                                   "duration_seconds": round(duration, 3), "err": error})
        else:
            log.debug("collector succeeded", extra={"target": job.target, "collector": job.collector.name,
                                                    "duration_seconds": round(duration, 3)})
        self._render()

    # ------------------------------------------------------------------ exposition

    def _self_metrics(self) -> list[Metric]:
        up = GaugeMetricFamily("regwatch_target_up",
                               "1 if the target's API answered the last collection (its primary collector succeeded).",
                               labels=["target", "kind"])
        per_job: dict[tuple[str, ...], tuple[Metric, Metric, Metric]] = {}
        for job in self.jobs:
            state = self.states[job.key]
            if state.runs == 0:
                continue
            extra = tuple(sorted(job.labels))
            if extra not in per_job:
                # Jobs that run once per item of a target (probes) carry that item's labels too; one family
                # per label set, joined under one HELP/TYPE when rendered.
                names = ["target", "collector", *extra]
                per_job[extra] = (
                    GaugeMetricFamily("regwatch_collector_success",
                                      "1 if the collector's last background run succeeded.", labels=names),
                    GaugeMetricFamily("regwatch_collector_duration_seconds",
                                      "Duration of the collector's last background run.", labels=names),
                    GaugeMetricFamily("regwatch_collector_last_success_timestamp_seconds",
                                      "Unix time of the collector's last successful run; its metrics date from then.",
                                      labels=names))
            success, duration, last = per_job[extra]
            labels = [job.target, job.collector.name, *(job.labels[k] for k in extra)]
            success.add_metric(labels, 1.0 if state.success else 0.0)
            duration.add_metric(labels, state.duration)
            if state.last_success is not None:
                last.add_metric(labels, state.last_success)
            if job.kind is not None:
                up.add_metric([job.target, job.kind], 1.0 if state.success else 0.0)
        reload_ok = GaugeMetricFamily("regwatch_config_last_reload_successful",
                                      "1 if the last config (re)load succeeded; 0 means an older config is in force.",
                                      value=1.0 if self._reload_ok else 0.0)
        reload_time = GaugeMetricFamily("regwatch_config_last_reload_success_timestamp_seconds",
                                        "Unix time of the last successful config load.",
                                        value=self._reload_success_time)
        families: list[Metric] = [up]
        for triple in per_job.values():
            families.extend(triple)
        return families + [reload_ok, reload_time]

    def _merged(self) -> list[Metric]:
        merged: dict[str, Metric] = {}
        with self._lock:
            families = [f for state in self.states.values() for f in state.families] + self._self_metrics()
        for family in self._static + families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            into.samples.extend(family.samples)
        return list(merged.values())

    def _render(self) -> None:
        """Join the per-job rendered families (one HELP/TYPE per name) with fresh self-metrics."""
        with self._render_lock:
            with self._lock:
                parts = [self._static_rendered] + [state.rendered for state in self.states.values()]
                parts.append(_render_families(self._self_metrics()))
            merged: dict[str, list[bytes]] = {}
            for rendered in parts:
                for name, (header, body) in rendered.items():
                    chunks = merged.get(name)
                    if chunks is None:
                        merged[name] = [header, body]
                    else:
                        chunks.append(body)
            self._exposition = Exposition(text=b"".join(b"".join(chunks) for chunks in merged.values()))

    def exposition(self, openmetrics: bool = False, gzipped: bool = False) -> bytes:
        """The latest rendered snapshot plus the live process metrics."""
        expo = self._exposition
        if openmetrics:
            if expo.openmetrics is None:
                registry = CollectorRegistry()
                registry.register(_Families(self._merged()))
                body = om.generate_latest(registry)
                expo.openmetrics = body[: -len(b"# EOF\n")] if body.endswith(b"# EOF\n") else body
            process = om.generate_latest(self._process)
            return expo.openmetrics + process
        process = generate_latest(self._process)
        if not gzipped:
            return expo.text + process
        if expo.text_gzip is None:
            expo.text_gzip = gzip.compress(expo.text, compresslevel=6)
        # Concatenated gzip members form one valid gzip stream (RFC 1952), so only the small live part
        # is compressed per scrape.
        return expo.text_gzip + gzip.compress(process, compresslevel=1)

    def status(self) -> list[dict]:
        """Per-job state for the landing page."""
        with self._lock:
            return [
                {"target": job.target, "collector": job.collector.name, **job.labels, "runs": self.states[job.key].runs,
                 "success": self.states[job.key].success, "duration_seconds": round(self.states[job.key].duration, 3),
                 "last_success": self.states[job.key].last_success, "last_run": self.states[job.key].last_run,
                 "last_error": self.states[job.key].last_error}
                for job in self.jobs
            ]


def _render_families(families: list[Metric]) -> dict[str, tuple[bytes, bytes]]:
    """Text exposition per family name: (HELP and TYPE lines, sample lines); same-name families are joined."""
    out: dict[str, tuple[bytes, bytes]] = {}
    for family in families:
        registry = CollectorRegistry()
        registry.register(_Families([family]))
        text = generate_latest(registry)
        split = text.index(b"\n", text.index(b"\n") + 1) + 1
        header, body = text[:split], text[split:]
        if family.name in out:
            out[family.name] = (out[family.name][0], out[family.name][1] + body)
        else:
            out[family.name] = (header, body)
    return out


def _build_info() -> Metric:
    info = GaugeMetricFamily("regwatch_build_info", "regwatch's version; always 1.",
                             labels=["version", "python_version"])
    info.add_metric([__version__, platform.python_version()], 1.0)
    return info


def _describe_error(exc: BaseException) -> str:
    text = " ".join((str(exc) or exc.__class__.__name__).split())[:1000]
    if type(exc).__module__.startswith("regwatch") or isinstance(exc, OSError):
        return text
    return f"{exc.__class__.__name__}: {text}"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
