"""Harbor P2P preheat: per preheat policy, how its last execution went — visited a project at a time.

Example exposition::

    regwatch_harbor_preheat_last_execution_success{policy="library/warm-nodes",target="harbor"} 0.0
    regwatch_harbor_detail_coverage_ratio{group="preheat",target="harbor"} 0.4

``policy`` is ``<project>/<policy name>`` (a preheat policy's name is unique within its project only).
Preheat policies live under each project (``/projects/{name}/preheat/policies``) and each needs a
call for its executions, so each collection (every ``harbor.detail_interval``) spends at most
``harbor.detail_calls_per_cycle`` calls, a project at a time, continuing where the last one
stopped, and exports the latest of every project visited so far. A policy that never ran has no
series. Success is the last *finished* execution's (Success 1; Error or Stopped 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

from prometheus_client.metrics_core import Metric

from regwatch.client import NotFound
from regwatch.collectors.harbor.api import HarborAPI, HarborGroup, NotCollected
from regwatch.collectors.harbor.rotation import Rotation
from regwatch.families import gauge

POLICIES = "/projects/{project_name}/preheat/policies"
EXECUTIONS = "/projects/{project_name}/preheat/policies/{preheat_policy_name}/executions"
_FINISHED = {"Success": 1.0, "Error": 0.0, "Stopped": 0.0}


class PreheatGroup(HarborGroup):
    group = "preheat"
    endpoints = (POLICIES, EXECUTIONS)

    def __init__(self, api: HarborAPI):
        super().__init__(api)
        self.rotation = Rotation()
        self.seen: dict[str, dict[str, float]] = {}  # project -> {policy: last success}

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            projects = sorted({p.name for p in self.api.projects()})
        except NotCollected:
            return
        self.seen = {p: v for p, v in self.seen.items() if p in set(projects)}
        calls = 0

        def within_budget() -> bool:  # asked before each project: reads the calls spent so far, on purpose
            return calls < self.target.harbor.detail_calls_per_cycle

        for project in self.rotation.walk(projects, within_budget):
            try:
                spent, result = self._visit(project)
            except NotCollected:  # the account may not read preheat policies: asking every project is no use
                break
            calls += spent
            if result is None:
                self.seen.pop(project, None)
            else:
                self.seen[project] = result
        yield gauge("regwatch_harbor_preheat_last_execution_success",
                    "1 if the preheat policy's last finished execution succeeded, 0 if it failed or was stopped "
                    "(projects visited so far; cached).", ["target", "policy"],
                    [([name, f"{project}/{policy}"], value) for project, policies in sorted(self.seen.items())
                     for policy, value in sorted(policies.items())])
        yield gauge("regwatch_harbor_detail_coverage_ratio",
                    "Share of projects or repositories an incremental group has visited so far, 0..1 (cached).",
                    ["target", "group"], [([name, self.group], len(self.seen) / len(projects) if projects else 1.0)])

    def _visit(self, project: str) -> tuple[int, dict[str, float] | None]:
        """Calls spent and {policy: last success} of one project (None if it vanished or is not readable)."""
        base = f"/projects/{quote(project, safe='')}/preheat/policies"
        calls = 1
        try:
            policies = self.api.list_all(base, endpoint=POLICIES)
            out: dict[str, float] = {}
            for policy in policies:
                pname = policy.text("name")
                calls += 1
                runs, _ = self.api.page(f"{base}/{quote(pname, safe='')}/executions", 1, endpoint=EXECUTIONS,
                                        page_size=10)
                runs = sorted(runs, key=lambda r: r.time("start_time") or 0.0, reverse=True)
                last = next((r for r in runs if r.text("status") in _FINISHED), None)
                if last is not None:
                    out[pname] = _FINISHED[last.text("status")]
        except NotFound:  # the project (or a policy) was deleted meanwhile
            return calls, None
        return calls, out
