"""Harbor vulnerability scanning: scan-all progress and its schedule watchdog, scanners, and the
security summary (2.10+).

Example exposition::

    regwatch_harbor_scan_all_scans{target="harbor"} 100.0
    regwatch_harbor_scan_all_completed{target="harbor"} 90.0
    regwatch_harbor_scan_all_ongoing{target="harbor"} 1.0
    regwatch_harbor_scan_all_tasks{status="Error",target="harbor"} 2.0
    regwatch_harbor_scanner_enabled{default="true",scanner="Trivy",target="harbor"} 1.0
    regwatch_harbor_scanner_healthy{scanner="Trivy",target="harbor"} 1.0
    regwatch_harbor_vulnerabilities{severity="critical",target="harbor"} 3.0
    regwatch_harbor_schedule_next_run_timestamp_seconds{policy="",schedule="scan_all",target="harbor"} 1.7e+09

``scanner_healthy`` exists only when Harbor filled a scanner's ``health`` (it does so after a
ping); regwatch does not ping scanners itself, since that reaches into the adapter.

Harbor's API gives no start or end time of a scan-all (``/scans/all/metrics`` has counts, a
trigger and ``ongoing``; ``src/server/v2.0/handler/scan_all.go``), so for the watchdog regwatch
observes runs itself: a run *started* when it is first seen ongoing, or when its figures changed
between two collections that both saw none running (a run shorter than the interval); it *ended*
when it is first seen no longer ongoing, and succeeded if none of its scans errored or stopped.
Times are those observations (within one interval of the truth), and a scheduled scan-all is
expected only after regwatch first saw the schedule. A scan-all shorter than the interval whose
figures come out the same as the last one's is not seen: give the scans group a short interval
if that matters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.client import ProtocolError
from regwatch.collectors.harbor.api import Fields, HarborAPI, HarborGroup, NotCollected
from regwatch.collectors.harbor.schedules import Watch, Watchdog, is_scheduled_trigger, is_scheduled_type
from regwatch.families import gauge

_STATUSES = ("Pending", "Running", "Success", "Error", "Stopped")
_SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")


class ScanAllRuns:
    """What regwatch has seen of scan-all runs: the last scheduled run's observed start, end and result."""

    def __init__(self) -> None:
        self.previous: tuple | None = None  # (ongoing, figures) of the last observation
        self.start: float | None = None
        self.end: float | None = None
        self.success: float | None = None
        self._scheduled = False  # the run being watched was started by the schedule
        self._lock = threading.Lock()

    def observe(self, stats: Fields, now: float) -> None:
        figures = (stats.text("trigger"), stats.number("total", 0.0), stats.number("completed", 0.0),
                   tuple(stats.obj("metrics").number(s, 0.0) for s in _STATUSES))
        ongoing = stats.flag("ongoing")
        with self._lock:
            before = self.previous
            self.previous = (ongoing, figures)
            if not figures[0]:
                return  # no scan-all ever ran
            started = (ongoing and (before is None or not before[0])) or \
                (not ongoing and before is not None and not before[0] and before[1] != figures)
            if started:
                self._scheduled = is_scheduled_trigger(figures[0])
                if self._scheduled:
                    self.start, self.end, self.success = now, None, None
            finished = not ongoing and (started or (before is not None and before[0]))
            if finished and self._scheduled:
                failed = figures[3][_STATUSES.index("Error")] + figures[3][_STATUSES.index("Stopped")]
                self.end, self.success = now, 0.0 if failed else 1.0


class ScansGroup(HarborGroup):
    group = "scans"
    endpoints = ("/scans/all/metrics", "/system/scanAll/schedule", "/scanners", "/security/summary")

    def __init__(self, api: HarborAPI):
        super().__init__(api)
        self.watchdog = Watchdog(api)
        self.runs = ScanAllRuns()

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        stats = self.optional(self.api.obj, "/scans/all/metrics")
        if stats is not None:
            self.runs.observe(stats, time.time())
            yield gauge("regwatch_harbor_scan_all_scans", "Scans the last scan-all started (cached).", ["target"],
                        [([name], stats.number("total", 0.0))])
            yield gauge("regwatch_harbor_scan_all_completed", "Scans of the last scan-all that finished (cached).",
                        ["target"], [([name], stats.number("completed", 0.0))])
            yield gauge("regwatch_harbor_scan_all_ongoing", "1 while a scan-all runs (cached).", ["target"],
                        [([name], 1.0 if stats.flag("ongoing") else 0.0)])
            counts = stats.obj("metrics")
            yield gauge("regwatch_harbor_scan_all_tasks", "Scans of the last scan-all by status (cached).",
                        ["target", "status"], [([name, s], counts.number(s, 0.0)) for s in _STATUSES])
        yield from self.watchdog.families(self._watches(stats is not None))
        try:
            scanners = self.api.list_all("/scanners")
        except NotCollected:
            scanners = None
        if scanners is not None:
            yield gauge("regwatch_harbor_scanner_enabled", "1 for each enabled scanner registration (cached).",
                        ["target", "scanner", "default"],
                        [([name, s.text("name"), "true" if s.flag("is_default") else "false"],
                          0.0 if s.flag("disabled") else 1.0) for s in scanners])
            yield gauge("regwatch_harbor_scanner_healthy",
                        "1 if Harbor reports the scanner healthy (only where Harbor has pinged it; cached).",
                        ["target", "scanner"],
                        [([name, s.text("name")], 1.0 if s.text("health") == "healthy" else 0.0)
                         for s in scanners if s.text("health")])
        summary = self.optional(self.api.obj, "/security/summary")
        if summary is not None:
            yield gauge("regwatch_harbor_vulnerabilities",
                        "Vulnerabilities over scanned artifacts, by severity (cached).",
                        ["target", "severity"], [([name, s], summary.number(f"{s}_cnt", 0.0)) for s in _SEVERITIES])
            yield gauge("regwatch_harbor_fixable_vulnerabilities", "Vulnerabilities that have a fix (cached).",
                        ["target"], [([name], summary.number("fixable_cnt", 0.0))])
            yield gauge("regwatch_harbor_scanned_artifacts", "Artifacts with a scan report (cached).", ["target"],
                        [([name], summary.number("scanned_cnt", 0.0))])
            yield gauge("regwatch_harbor_artifacts", "Artifacts in Harbor, from the security summary (cached).",
                        ["target"], [([name], summary.number("total_artifact", 0.0))])

    def _watches(self, observed: bool) -> list[Watch]:
        if not observed:
            return []
        try:
            data = self.api.get("/system/scanAll/schedule")
        except NotCollected:
            return []
        except ProtocolError as exc:
            if exc.status == 412:  # no scanner configured: nothing to schedule
                return []
            raise
        if not data:
            return []
        schedule = Fields(data, self.api.where("/system/scanAll/schedule"))
        sched = schedule.obj("schedule")
        if not is_scheduled_type(sched.text("type")):
            return []
        runs = self.runs
        return [Watch("scan_all", "", sched.text("cron"), since=schedule.time("update_time")
                      or schedule.time("creation_time"), start=runs.start, end=runs.end, success=runs.success,
                      observed=True)]
