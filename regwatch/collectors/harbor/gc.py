"""Harbor garbage collection and audit-log purge: last run, last success, what GC freed, and the
schedule watchdog (schedules.py) for both.

Example exposition::

    regwatch_harbor_gc_last_run_succeeded{target="harbor"} 1.0
    regwatch_harbor_gc_last_run_timestamp_seconds{target="harbor"} 1.7e+09
    regwatch_harbor_gc_last_success_timestamp_seconds{target="harbor"} 1.7e+09
    regwatch_harbor_gc_next_run_timestamp_seconds{target="harbor"} 1.7e+09
    regwatch_harbor_gc_running{target="harbor"} 0.0
    regwatch_harbor_gc_last_freed_bytes{target="harbor"} 5.2e+08
    regwatch_harbor_gc_last_purged_blobs{target="harbor"} 120.0
    regwatch_harbor_gc_last_purged_manifests{target="harbor"} 8.0
    regwatch_harbor_purge_audit_last_run_succeeded{target="harbor"} 1.0
    regwatch_harbor_schedule_next_run_timestamp_seconds{policy="",schedule="gc",target="harbor"} 1.7e+09

"Last run" is the newest *finished* run (Success, Error or Stopped); its time is when it
finished (``update_time``). ``gc_next_run`` is Harbor's own ``next_scheduled_time`` (counted from
now, so it never shows a missed run: that is the schedule watchdog's job). No schedule (type None
or Manual) means no ``next_run`` and no watchdog series.

Freed bytes, purged blobs and purged manifests are what the GC job checked in
(``src/controller/gc/callback.go``: ``freed_space``, ``purged_blobs``, ``purged_manifests`` in the
execution's extra attributes), which ``/system/gc`` returns as the JSON string ``job_parameters``;
they are of the newest successful run that is not a dry run.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import Fields, HarborAPI, HarborGroup, NotCollected
from regwatch.collectors.harbor.schedules import Watch, Watchdog, is_scheduled_trigger, is_scheduled_type
from regwatch.families import gauge

_FINISHED = {"Success": 1.0, "Error": 0.0, "Stopped": 0.0}
_FREED = (("freed_space", "regwatch_harbor_gc_last_freed_bytes", "Bytes the last successful GC freed (cached)."),
          ("purged_blobs", "regwatch_harbor_gc_last_purged_blobs", "Blobs the last successful GC deleted (cached)."),
          ("purged_manifests", "regwatch_harbor_gc_last_purged_manifests",
           "Manifests the last successful GC deleted (cached)."))


class GCGroup(HarborGroup):
    group = "gc"
    endpoints = ("/system/gc", "/system/gc/schedule", "/system/purgeaudit", "/system/purgeaudit/schedule")

    def __init__(self, api: HarborAPI):
        super().__init__(api)
        self.watchdog = Watchdog(api)

    def gather(self) -> Iterable[Metric]:
        watches: list[Watch] = []
        yield from self._job("/system/gc", "gc", "garbage collection", watches)
        yield from self._job("/system/purgeaudit", "purge_audit", "audit-log purge", watches)
        yield from self.watchdog.families(watches)

    def _job(self, path: str, prefix: str, what: str, watches: list[Watch]) -> Iterable[Metric]:
        name = self.target.name
        try:
            runs, _ = self.api.page(path, 1, {"sort": "-creation_time"})
        except NotCollected:
            return
        runs = sorted(runs, key=lambda r: r.integer("id", 0), reverse=True)
        last = next((r for r in runs if r.text("job_status") in _FINISHED), None)
        success = next((r for r in runs if r.text("job_status") == "Success"), None)
        running = bool(runs) and runs[0].text("job_status") in ("Running", "Pending")
        metric = f"regwatch_harbor_{prefix}"
        if last is not None:
            yield gauge(f"{metric}_last_run_succeeded", f"1 if the last finished {what} succeeded (cached).",
                        ["target"], [([name], _FINISHED[last.text("job_status")])])
            yield gauge(f"{metric}_last_run_timestamp_seconds", f"When the last finished {what} ended (cached).",
                        ["target"], [([name], last.time("update_time"))])
        if success is not None:
            yield gauge(f"{metric}_last_success_timestamp_seconds",
                        f"When the last successful {what} ended (cached).", ["target"],
                        [([name], success.time("update_time"))])
        yield gauge(f"{metric}_running", f"1 if a {what} is pending or running (cached).", ["target"],
                    [([name], 1.0 if running else 0.0)])
        if prefix == "gc":
            yield from self._freed(runs)
        try:
            data = self.api.get(f"{path}/schedule")
        except NotCollected:
            return
        if not data:  # never scheduled: Harbor answers null
            return
        schedule = Fields(data, self.api.where(f"{path}/schedule"))
        sched = schedule.obj("schedule")
        if not is_scheduled_type(sched.text("type")):
            return
        nxt = sched.time("next_scheduled_time")
        yield gauge(f"{metric}_next_run_timestamp_seconds",
                    f"When Harbor says the next scheduled {what} starts (counted from now; cached).", ["target"],
                    [([name], nxt)])
        scheduled = next((r for r in runs if is_scheduled_trigger(r.text("job_kind"))), None)
        watch = Watch(prefix, "", sched.text("cron"), since=schedule.time("update_time")
                      or schedule.time("creation_time"), fallback_next=nxt)
        if scheduled is not None:
            status = scheduled.text("job_status")
            watch.start = scheduled.time("creation_time")
            if status in _FINISHED:
                watch.end, watch.success = scheduled.time("update_time"), _FINISHED[status]
        watches.append(watch)

    def _freed(self, runs: list[Fields]) -> Iterable[Metric]:
        name = self.target.name
        for run in runs:
            if run.text("job_status") != "Success":
                continue
            params = run.embedded("job_parameters")
            if params.flag("dry_run") or not params.has("freed_space"):
                continue
            for key, metric, doc in _FREED:
                yield gauge(metric, doc, ["target"], [([name], params.number(key))])
            return
