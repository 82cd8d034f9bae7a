"""Harbor project members by role, from each project's ``/summary`` — visited a slice at a time.

Example exposition::

    regwatch_harbor_project_members{project="library",role="project_admin",target="harbor"} 1.0
    regwatch_harbor_project_members{project="library",role="developer",target="harbor"} 4.0
    regwatch_harbor_detail_coverage_ratio{group="members",target="harbor"} 0.02

This needs one call per project, so each collection (every ``harbor.detail_interval``) visits at
most ``harbor.detail_calls_per_cycle`` projects, continuing where the last one stopped, and
exports the latest counts of every project visited so far. Roles with no member have no series.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.budget import ContextPool
from regwatch.client import NotFound
from regwatch.collectors.harbor.api import Fields, HarborGroup, NotCollected
from regwatch.collectors.harbor.rotation import Rotation
from regwatch.families import gauge

ROLES = ("project_admin", "maintainer", "developer", "guest", "limited_guest")
SUMMARY = "/projects/{project_name_or_id}/summary"


class MembersGroup(HarborGroup):
    group = "members"
    endpoints = (SUMMARY,)  # /projects itself is reported by the projects group

    def __init__(self, api):
        super().__init__(api)
        self.rotation = Rotation()
        self.counts: dict[int, tuple[str, tuple[float, ...]]] = {}

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            projects = [(p.id, p.name) for p in self.api.projects()]
        except NotCollected:
            return
        alive = {pid for pid, _ in projects}
        self.counts = {pid: v for pid, v in self.counts.items() if pid in alive}
        chosen = self.rotation.take(projects, self.target.harbor.detail_calls_per_cycle)
        with ContextPool(max_workers=self.target.concurrency) as pool:
            for pid, pname, summary in pool.map(self._summary, chosen):
                if summary is not None:
                    self.counts[pid] = (pname, tuple(summary.number(f"{r}_count", 0.0) for r in ROLES))
        rows = [([name, pname, role], n) for pname, values in self.counts.values()
                for role, n in zip(ROLES, values, strict=True) if n]
        yield gauge("regwatch_harbor_project_members", "Members of a project by role (visited a slice at a time).",
                    ["target", "project", "role"], rows)
        yield gauge("regwatch_harbor_detail_coverage_ratio",
                    "Share of projects or repositories an incremental group has visited so far, 0..1.",
                    ["target", "group"], [([name, self.group], len(self.counts) / len(projects) if projects else 1.0)])

    def _summary(self, project: tuple[int, str]) -> tuple[int, str, Fields | None]:
        pid, pname = project
        try:
            return pid, pname, self.api.obj(f"/projects/{pid}/summary", endpoint=SUMMARY)
        except (NotCollected, NotFound):
            return pid, pname, None
