"""Harbor tag retention: per project, how its retention policy's last execution went, and the
schedule watchdog (schedules.py) for policies that run by cron — visited a slice at a time.

Example exposition::

    regwatch_harbor_retention_last_execution_success{policy="library",target="harbor"} 1.0
    regwatch_harbor_schedule_next_run_timestamp_seconds{policy="library",schedule="retention",target="harbor"} 1.7e+09
    regwatch_harbor_detail_coverage_ratio{group="retention",target="harbor"} 1.0

``policy`` is the project's name: a project has at most one retention policy (its
``metadata.retention_id``). Reading one costs two calls (``/retentions/{id}`` for its trigger,
``/retentions/{id}/executions`` for its runs), so each collection (every ``harbor.detail_interval``)
visits at most ``harbor.detail_calls_per_cycle / 2`` policies, continuing where the last one
stopped, and exports the latest of every policy visited so far. A schedule's "created or changed"
time, for a policy that never ran, comes from ``/schedules`` (2.7+) when the account may list it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from regwatch.budget import ContextPool
from regwatch.client import NotFound
from regwatch.collectors.harbor.api import Fields, HarborAPI, HarborGroup, NotCollected
from regwatch.collectors.harbor.rotation import Rotation
from regwatch.collectors.harbor.schedules import Watch, Watchdog, is_scheduled_trigger
from regwatch.families import gauge

POLICY = "/retentions/{id}"
EXECUTIONS = "/retentions/{id}/executions"
_FINISHED = {"Success": 1.0, "Error": 0.0, "Stopped": 0.0}


@dataclass
class Seen:
    project: str
    cron: str  # "" when the policy has no schedule
    last_success: float | None  # of the last finished execution, any trigger
    scheduled: tuple[float | None, float | None, float | None]  # (start, end, success) of the last scheduled run


class RetentionGroup(HarborGroup):
    group = "retention"
    endpoints = (POLICY, EXECUTIONS, "/schedules")

    def __init__(self, api: HarborAPI):
        super().__init__(api)
        self.watchdog = Watchdog(api)
        self.rotation = Rotation()
        self.seen: dict[int, Seen] = {}

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            policies = sorted(self._policies().items())
        except NotCollected:
            return
        alive = {rid for rid, _ in policies}
        self.seen = {rid: v for rid, v in self.seen.items() if rid in alive}
        chosen = self.rotation.take(policies, max(1, self.target.harbor.detail_calls_per_cycle // 2))
        with ContextPool(max_workers=self.target.concurrency) as pool:
            for rid, result in pool.map(self._visit, chosen):
                if result is not None:
                    self.seen[rid] = result
                else:
                    self.seen.pop(rid, None)
        since = self._schedule_times()
        watches = [Watch("retention", s.project, s.cron, since.get(rid), *s.scheduled)
                   for rid, s in self.seen.items() if s.cron]
        yield gauge("regwatch_harbor_retention_last_execution_success",
                    "1 if the project's tag-retention policy's last finished execution succeeded, 0 if it failed or "
                    "was stopped (policies visited so far; cached).", ["target", "policy"],
                    [([name, s.project], s.last_success) for s in self.seen.values()])
        yield from self.watchdog.families(watches)
        yield gauge("regwatch_harbor_detail_coverage_ratio",
                    "Share of projects or repositories an incremental group has visited so far, 0..1 (cached).",
                    ["target", "group"], [([name, self.group], len(self.seen) / len(policies) if policies else 1.0)])

    def _policies(self) -> dict[int, str]:
        """retention id -> project name, from the projects' metadata (a string such as "3" in Harbor's swagger)."""
        return {p.retention_id: p.name for p in self.api.projects() if p.retention_id is not None}

    def _visit(self, item: tuple[int, str]) -> tuple[int, Seen | None]:
        rid, project = item
        try:
            policy = self.api.obj(f"/retentions/{rid}", endpoint=POLICY)
            runs, _ = self.api.page(f"/retentions/{rid}/executions", 1, endpoint=EXECUTIONS, page_size=10)
        except (NotCollected, NotFound):
            return rid, None
        trigger = policy.obj("trigger")
        cron = trigger.obj("settings").text("cron") if trigger.text("kind").lower() == "schedule" else ""
        runs = sorted(runs, key=lambda r: r.time("start_time") or 0.0, reverse=True)
        last = next((r for r in runs if r.text("status") in _FINISHED), None)
        scheduled = next((r for r in runs if is_scheduled_trigger(r.text("trigger"))), None)
        return rid, Seen(project, cron, _FINISHED[last.text("status")] if last is not None else None,
                         _run(scheduled) if scheduled is not None else (None, None, None))

    def _schedule_times(self) -> dict[int, float]:
        """retention id -> when its schedule was set up or changed (``/schedules``, vendor RETENTION)."""
        try:
            schedules = self.api.list_all("/schedules")
        except NotCollected:
            return {}
        return {s.integer("vendor_id", 0): s.time("update_time") for s in schedules
                if s.text("vendor_type") == "RETENTION" and s.time("update_time") is not None}


def _run(run: Fields) -> tuple[float | None, float | None, float | None]:
    status = run.text("status")
    if status in _FINISHED:
        return run.time("start_time"), run.time("end_time"), _FINISHED[status]
    return run.time("start_time"), None, None
