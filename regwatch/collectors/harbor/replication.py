"""Harbor replication: per policy, whether it is enabled and how its last execution went.

Example exposition::

    regwatch_harbor_replication_policy_enabled{policy="to-dr",target="harbor"} 1.0
    regwatch_harbor_replication_last_execution_succeeded{policy="to-dr",target="harbor"} 0.0
    regwatch_harbor_replication_last_execution_start_timestamp_seconds{policy="to-dr",target="harbor"} 1.7e+09
    regwatch_harbor_replication_last_execution_end_timestamp_seconds{policy="to-dr",target="harbor"} 1.7e+09
    regwatch_harbor_replication_tasks{policy="to-dr",status="failed",target="harbor"} 2.0
    regwatch_harbor_replication_execution_in_progress{policy="to-dr",target="harbor"} 0.0
    regwatch_harbor_replication_policy_trigger_info{policy="to-dr",target="harbor",trigger="scheduled"} 1.0
    regwatch_harbor_schedule_next_run_timestamp_seconds{policy="to-dr",schedule="replication",target="harbor"} 1.7e+09

``succeeded`` is 1 for Succeed and 0 for Failed or Stopped, and describes the last *finished*
execution: a running one shows in ``execution_in_progress`` and the task counts. Enabled policies
with a cron trigger also get the schedule watchdog (schedules.py), from their last execution whose
trigger is ``scheduled``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import Fields, HarborAPI, HarborGroup, NotCollected
from regwatch.collectors.harbor.schedules import Watch, Watchdog, is_scheduled_trigger
from regwatch.families import gauge

_FINISHED = {"Succeed": 1.0, "Failed": 0.0, "Stopped": 0.0}
_TASKS = ("succeed", "failed", "in_progress", "stopped")
# ReplicationTrigger.type in the swagger; anything else is "other" so the label stays bounded.
TRIGGERS = frozenset({"manual", "scheduled", "event_based"})
EXECUTIONS = "/replication/executions"


class ReplicationGroup(HarborGroup):
    group = "replication"
    endpoints = ("/replication/policies", EXECUTIONS)

    def __init__(self, api: HarborAPI):
        super().__init__(api)
        self.watchdog = Watchdog(api)

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            policies = self.api.list_all("/replication/policies")
        except NotCollected:
            return
        enabled, trigger_rows, succeeded, start, end, tasks, running = [], [], [], [], [], [], []
        watches: list[Watch] = []
        for policy in policies:
            label = [name, policy.text("name")]
            on = policy.flag("enabled")
            enabled.append((label, 1.0 if on else 0.0))
            trigger = policy.obj("trigger")
            kind = trigger.text("type").lower()
            trigger_rows.append((label + [kind if kind in TRIGGERS else "other"], 1.0))
            try:
                recent, total = self.api.page(EXECUTIONS, 1, {"policy_id": policy.integer("id", 0),
                                                              "sort": "-start_time"}, page_size=10)
            except NotCollected:
                continue
            if kind == "scheduled" and on:
                watches.append(self._watch(policy, trigger, recent, total))
            if not recent:
                continue
            latest = recent[0]
            running.append((label, 1.0 if latest.text("status") == "InProgress" else 0.0))
            for status in _TASKS:
                tasks.append((label + [status], latest.number(status, 0.0)))
            last = next((e for e in recent if e.text("status") in _FINISHED), None)
            if last is None:
                continue
            succeeded.append((label, _FINISHED[last.text("status")]))
            start.append((label, last.time("start_time")))
            end.append((label, last.time("end_time")))
        labels = ["target", "policy"]
        yield gauge("regwatch_harbor_replication_policy_enabled", "1 if the replication policy is enabled (cached).",
                    labels, enabled)
        yield gauge("regwatch_harbor_replication_policy_trigger_info",
                    "The replication policy's trigger type (manual, scheduled, event_based, other); always 1 "
                    "(cached).", labels + ["trigger"], trigger_rows)
        yield gauge("regwatch_harbor_replication_last_execution_succeeded",
                    "1 if the policy's last finished execution succeeded, 0 if it failed or was stopped (cached).",
                    labels, succeeded)
        yield gauge("regwatch_harbor_replication_last_execution_start_timestamp_seconds",
                    "Start time of the policy's last finished execution (cached).", labels, start)
        yield gauge("regwatch_harbor_replication_last_execution_end_timestamp_seconds",
                    "End time of the policy's last finished execution (cached).", labels, end)
        yield gauge("regwatch_harbor_replication_execution_in_progress",
                    "1 if the policy's latest execution is still running (cached).", labels, running)
        yield gauge("regwatch_harbor_replication_tasks",
                    "Tasks of the policy's latest execution by status (succeed, failed, in_progress, stopped; "
                    "cached).", labels + ["status"], tasks)
        yield from self.watchdog.families(watches)

    def _watch(self, policy: Fields, trigger: Fields, recent: list[Fields], total: int | None) -> Watch:
        """The schedule of an enabled cron-triggered policy and its last *scheduled* execution."""
        watch = Watch("replication", policy.text("name"), trigger.obj("trigger_settings").text("cron"),
                      since=policy.time("update_time") or policy.time("creation_time"))
        scheduled = next((e for e in recent if is_scheduled_trigger(e.text("trigger"))), None)
        if scheduled is None and total is not None and total > len(recent):
            # Ten manual runs since the last scheduled one: ask for that one alone.
            older, _ = self.api.page(EXECUTIONS, 1, {"policy_id": policy.integer("id", 0), "trigger": "scheduled",
                                                     "sort": "-start_time"}, page_size=1)
            scheduled = older[0] if older else None
        if scheduled is not None:
            watch.start = scheduled.time("start_time")
            status = scheduled.text("status")
            if status in _FINISHED:
                watch.end, watch.success = scheduled.time("end_time"), _FINISHED[status]
        return watch
