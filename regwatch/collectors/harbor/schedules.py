"""The schedule watchdog every Harbor group with a scheduled job shares: when should it have run?

Harbor's own ``next_scheduled_time`` is computed from *now* (``utils.NextSchedule(cron,
time.Now())`` in ``src/server/v2.0/handler/model/gc.go``), so it moves forward even when the
job service stopped firing (goharbor/harbor 15276, 18137) and can never show a missed run.
regwatch computes the run the cron should have triggered next after the last *scheduled* run
started (manual runs do not count: they say nothing about the schedule), or, for a schedule
that never ran, after it was created or last changed; with neither known, after regwatch first
saw the schedule. ``time() - next_run > grace`` is then a run that did not happen.

Example exposition (schedule: replication | gc | scan_all | purge_audit | retention; policy: the
replication policy's name, the retention's project, "" for system jobs)::

    regwatch_harbor_schedule_next_run_timestamp_seconds{policy="",schedule="gc",target="harbor"} 1.7e+09
    regwatch_harbor_schedule_period_seconds{policy="",schedule="gc",target="harbor"} 86400.0
    regwatch_harbor_schedule_last_run_start_timestamp_seconds{policy="",schedule="gc",target="harbor"} 1.7e+09
    regwatch_harbor_schedule_last_run_end_timestamp_seconds{policy="",schedule="gc",target="harbor"} 1.7e+09
    regwatch_harbor_schedule_last_run_success{policy="",schedule="gc",target="harbor"} 1.0

End and success describe the last scheduled run once it has finished; the period is the gap
between the next two runs the cron gives (Harbor's presets: 3600, 86400, 604800).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborAPI
from regwatch.collectors.harbor.cron import Cron, CronError
from regwatch.families import gauge

# Harbor's schedule types (ScheduleObj.type in the swagger) that fire by cron; None and Manual do not.
SCHEDULED_TYPES = frozenset({"hourly", "daily", "weekly", "custom", "schedule"})
# How Harbor names a run its scheduler started: task.ExecutionTriggerSchedule "SCHEDULE" (GC, purge, scan-all),
# retention's "Schedule", replication's "scheduled".
SCHEDULED_TRIGGERS = frozenset({"schedule", "scheduled"})
LABELS = ["target", "schedule", "policy"]


def is_scheduled_type(kind: str) -> bool:
    return kind.lower() in SCHEDULED_TYPES


def is_scheduled_trigger(trigger: str) -> bool:
    return trigger.lower() in SCHEDULED_TRIGGERS


@dataclass
class Watch:
    """One scheduled job as a group read it from Harbor."""

    schedule: str
    policy: str
    cron: str
    since: float | None = None  # when the schedule was created or last changed, if Harbor says
    start: float | None = None  # the last scheduled run
    end: float | None = None
    success: float | None = None  # 1/0 once that run finished
    fallback_next: float | None = None  # Harbor's next_scheduled_time, used only without a cron
    # The last run is what regwatch saw itself (scan-all: Harbor's API has no run times), so a run before
    # regwatch started is unknown and the schedule is expected to fire after regwatch first saw it.
    observed: bool = False


class Watchdog:
    """Turns a group's ``Watch`` list (all of its schedules, once per collection) into the
    ``regwatch_harbor_schedule_*`` families."""

    def __init__(self, api: HarborAPI):
        self.api = api
        self._first_seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def families(self, watches: list[Watch], *, now: float | None = None) -> list[Metric]:
        now = time.time() if now is None else now
        name = self.api.target.name
        rows: dict[str, list] = {key: [] for key in ("next", "period", "start", "end", "success")}
        alive = set()
        for w in watches:
            label = [name, w.schedule, w.policy]
            key = (w.schedule, w.policy, w.cron)
            alive.add(key)
            with self._lock:
                first = self._first_seen.setdefault(key, now)
            known = [t for t in (w.start, w.since) if t is not None]
            base = max(known + [first]) if w.observed or not known else max(known)
            nxt, period = self._next(w, base)
            rows["next"].append((label, nxt))
            rows["period"].append((label, period))
            rows["start"].append((label, w.start))
            rows["end"].append((label, w.end if w.start is not None else None))
            rows["success"].append((label, w.success if w.start is not None else None))
        with self._lock:  # a group passes all its watches at once: forget the schedules that are gone
            self._first_seen = {k: v for k, v in self._first_seen.items() if k in alive}
        return [
            gauge("regwatch_harbor_schedule_next_run_timestamp_seconds",
                  "When the schedule should fire next after its last scheduled run (or, if it never ran, after it "
                  "was set up), from its cron in UTC as Harbor evaluates it; in the past means a missed run "
                  "(cached).", LABELS, rows["next"]),
            gauge("regwatch_harbor_schedule_period_seconds",
                  "Seconds between the schedule's next two runs by its cron (cached).", LABELS, rows["period"]),
            gauge("regwatch_harbor_schedule_last_run_start_timestamp_seconds",
                  "Start of the schedule's last scheduled run (cached).", LABELS, rows["start"]),
            gauge("regwatch_harbor_schedule_last_run_end_timestamp_seconds",
                  "End of the schedule's last scheduled run, once finished (cached).", LABELS, rows["end"]),
            gauge("regwatch_harbor_schedule_last_run_success",
                  "1 if the schedule's last scheduled run succeeded, 0 if it failed or was stopped; absent while "
                  "it runs (cached).", LABELS, rows["success"]),
        ]

    def _next(self, w: Watch, base: float) -> tuple[float | None, float | None]:
        if not w.cron:
            return w.fallback_next, None
        try:
            cron = _parse(w.cron)
        except CronError as exc:
            self.api.warn_once(f"cron:{w.schedule}:{w.policy}:{w.cron}",
                               "Harbor schedule has a cron regwatch cannot evaluate; no next-run series for it",
                               schedule=w.schedule, policy=w.policy, cron=w.cron[:80], err=str(exc),
                               hint="fix the schedule in Harbor (six fields, seconds first)")
            return None, None
        return cron.next(base), cron.period(base)


_CACHE: dict[str, Cron] = {}
_CACHE_LOCK = threading.Lock()


def _parse(text: str) -> Cron:
    with _CACHE_LOCK:
        cron = _CACHE.get(text)
    if cron is None:
        cron = Cron.parse(text)
        with _CACHE_LOCK:
            if len(_CACHE) > 1000:  # a hostile Harbor inventing crons must not grow memory
                _CACHE.clear()
            _CACHE[text] = cron
    return cron
