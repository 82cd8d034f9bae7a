"""Harbor garbage collection and audit-log purge: last run, last success, next scheduled run.

Example exposition::

    regwatch_harbor_gc_last_run_succeeded{target="harbor"} 1.0
    regwatch_harbor_gc_last_run_timestamp_seconds{target="harbor"} 1.7e+09
    regwatch_harbor_gc_last_success_timestamp_seconds{target="harbor"} 1.7e+09
    regwatch_harbor_gc_next_run_timestamp_seconds{target="harbor"} 1.7e+09
    regwatch_harbor_gc_running{target="harbor"} 0.0
    regwatch_harbor_purge_audit_last_run_succeeded{target="harbor"} 1.0

"Last run" is the newest *finished* run (Success, Error or Stopped); its time is when it
finished (``update_time``). No schedule (type None/Manual) means no ``next_run`` series.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected, gauge, timestamp

_FINISHED = {"Success": 1.0, "Error": 0.0, "Stopped": 0.0}
_SCHEDULED = {"Hourly", "Daily", "Weekly", "Custom", "Schedule"}


class GCGroup(HarborGroup):
    group = "gc"
    endpoints = ("/system/gc", "/system/gc/schedule", "/system/purgeaudit", "/system/purgeaudit/schedule")

    def gather(self) -> Iterable[Metric]:
        yield from self._job("/system/gc", "gc", "garbage collection")
        yield from self._job("/system/purgeaudit", "purge_audit", "audit-log purge")

    def _job(self, path: str, prefix: str, what: str) -> Iterable[Metric]:
        name = self.target.name
        try:
            runs = self.api.get(path, {"page": 1, "page_size": 100, "sort": "-creation_time"})
        except NotCollected:
            return
        runs = sorted(runs or [], key=lambda r: r.get("id") or 0, reverse=True)
        last = next((r for r in runs if r.get("job_status") in _FINISHED), None)
        success = next((r for r in runs if r.get("job_status") == "Success"), None)
        running = bool(runs) and runs[0].get("job_status") in ("Running", "Pending")
        metric = f"regwatch_harbor_{prefix}"
        if last is not None:
            yield gauge(f"{metric}_last_run_succeeded", f"1 if the last finished {what} succeeded.",
                        ["target"], [([name], _FINISHED[last["job_status"]])])
            when = timestamp(last.get("update_time"))
            if when is not None:
                yield gauge(f"{metric}_last_run_timestamp_seconds", f"When the last finished {what} ended.",
                            ["target"], [([name], when)])
        if success is not None and timestamp(success.get("update_time")) is not None:
            yield gauge(f"{metric}_last_success_timestamp_seconds", f"When the last successful {what} ended.",
                        ["target"], [([name], timestamp(success.get("update_time")))])
        yield gauge(f"{metric}_running", f"1 if a {what} is pending or running.", ["target"],
                    [([name], 1.0 if running else 0.0)])
        try:
            schedule = self.api.get(f"{path}/schedule")
        except NotCollected:
            return
        sched = (schedule or {}).get("schedule") or {}
        nxt = timestamp(sched.get("next_scheduled_time"))
        if sched.get("type") in _SCHEDULED and nxt is not None:
            yield gauge(f"{metric}_next_run_timestamp_seconds", f"When the next scheduled {what} starts.",
                        ["target"], [([name], nxt)])
