"""Harbor replication: per policy, whether it is enabled and how its last execution went.

Example exposition::

    regwatch_harbor_replication_policy_enabled{policy="to-dr",target="harbor"} 1.0
    regwatch_harbor_replication_last_execution_succeeded{policy="to-dr",target="harbor"} 0.0
    regwatch_harbor_replication_last_execution_start_timestamp_seconds{policy="to-dr",target="harbor"} 1.7e+09
    regwatch_harbor_replication_last_execution_end_timestamp_seconds{policy="to-dr",target="harbor"} 1.7e+09
    regwatch_harbor_replication_tasks{policy="to-dr",status="failed",target="harbor"} 2.0
    regwatch_harbor_replication_execution_in_progress{policy="to-dr",target="harbor"} 0.0

``succeeded`` is 1 for Succeed and 0 for Failed or Stopped, and describes the last *finished*
execution: a running one shows in ``execution_in_progress`` and the task counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected, gauge, timestamp

_FINISHED = {"Succeed": 1.0, "Failed": 0.0, "Stopped": 0.0}
_TASKS = ("succeed", "failed", "in_progress", "stopped")


class ReplicationGroup(HarborGroup):
    group = "replication"
    endpoints = ("/replication/policies", "/replication/executions")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            policies = self.api.list_all("/replication/policies")
        except NotCollected:
            return
        enabled, succeeded, start, end, tasks, running = [], [], [], [], [], []
        for policy in policies:
            label = [name, str(policy.get("name"))]
            enabled.append((label, 1.0 if policy.get("enabled") else 0.0))
            try:
                recent = self.api.get("/replication/executions", {"policy_id": policy.get("id"), "page": 1,
                                                                  "page_size": 10, "sort": "-start_time"})
            except NotCollected:
                continue
            if not recent:
                continue
            latest = recent[0]
            running.append((label, 1.0 if latest.get("status") == "InProgress" else 0.0))
            for status in _TASKS:
                tasks.append((label + [status], float(latest.get(status) or 0)))
            last = next((e for e in recent if e.get("status") in _FINISHED), None)
            if last is None:
                continue
            succeeded.append((label, _FINISHED[last["status"]]))
            for rows, key in ((start, "start_time"), (end, "end_time")):
                value = timestamp(last.get(key))
                if value is not None:
                    rows.append((label, value))
        labels = ["target", "policy"]
        yield gauge("regwatch_harbor_replication_policy_enabled", "1 if the replication policy is enabled.",
                    labels, enabled)
        yield gauge("regwatch_harbor_replication_last_execution_succeeded",
                    "1 if the policy's last finished execution succeeded, 0 if it failed or was stopped.",
                    labels, succeeded)
        yield gauge("regwatch_harbor_replication_last_execution_start_timestamp_seconds",
                    "Start time of the policy's last finished execution.", labels, start)
        yield gauge("regwatch_harbor_replication_last_execution_end_timestamp_seconds",
                    "End time of the policy's last finished execution.", labels, end)
        yield gauge("regwatch_harbor_replication_execution_in_progress",
                    "1 if the policy's latest execution is still running.", labels, running)
        yield gauge("regwatch_harbor_replication_tasks",
                    "Tasks of the policy's latest execution by status (succeed, failed, in_progress, stopped).",
                    labels + ["status"], tasks)
