"""Artifacts per project and artifact type (image, Helm chart, CNAB, ...), as Harbor's own exporter
counts them (``harbor_project_artifact_total{artifact_type}``) — visited a project at a time.

Example exposition::

    regwatch_harbor_project_artifacts_by_type{artifact_type="IMAGE",project="library",target="harbor"} 40.0
    regwatch_harbor_project_artifacts_by_type{artifact_type="CHART",project="library",target="harbor"} 2.0
    regwatch_harbor_detail_coverage_ratio{group="artifacts",target="harbor"} 1.0

``artifact_type`` is the artifact's ``type`` as Harbor's processors name it (IMAGE, CHART, CNAB,
CNAI, SBOM, WASM, UNKNOWN); anything else is OTHER, so the label stays bounded. Counting needs
the project's artifact list (``/projects/{id}/artifacts``, Harbor 2.12+, 100 a call), so each
collection (every ``harbor.detail_interval``) spends at most ``harbor.detail_calls_per_cycle``
calls, a project at a time, continuing where the last one stopped, and exports the latest counts
of every project visited so far. ``regwatch_harbor_project_artifacts`` (from the repositories'
counts, every interval) stays the cheap total.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.client import NotFound
from regwatch.collectors.harbor.api import HarborAPI, HarborGroup, NotCollected
from regwatch.collectors.harbor.rotation import Rotation
from regwatch.families import gauge

ARTIFACTS = "/projects/{project_name_or_id}/artifacts"
# src/controller/artifact/processor/*: the types Harbor gives artifacts.
TYPES = frozenset({"IMAGE", "CHART", "CNAB", "CNAI", "SBOM", "WASM", "UNKNOWN"})


class ArtifactsGroup(HarborGroup):
    group = "artifacts"
    endpoints = (ARTIFACTS,)

    def __init__(self, api: HarborAPI):
        super().__init__(api)
        self.rotation = Rotation()
        self.counts: dict[int, tuple[str, Counter]] = {}

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            projects = sorted((p.id, p.name) for p in self.api.projects())
        except NotCollected:
            return
        alive = {pid for pid, _ in projects}
        self.counts = {pid: v for pid, v in self.counts.items() if pid in alive}
        calls = 0

        def within_budget() -> bool:  # asked before each project: reads the calls spent so far, on purpose
            return calls < self.target.harbor.detail_calls_per_cycle

        for pid, pname in self.rotation.walk(projects, within_budget):
            counts: Counter = Counter()
            try:
                for page in self.api.pages(f"/projects/{pid}/artifacts", {"with_tag": "false"}, endpoint=ARTIFACTS):
                    calls += 1
                    for artifact in page:
                        kind = artifact.text("type").upper()
                        counts[kind if kind in TYPES else "OTHER"] += 1
            except NotCollected:  # Harbor before 2.12, or the account may not list artifacts
                return
            except NotFound:  # deleted meanwhile
                self.counts.pop(pid, None)
                continue
            self.counts[pid] = (pname, counts)
        yield gauge("regwatch_harbor_project_artifacts_by_type",
                    "Artifacts of a project by artifact type (IMAGE, CHART, CNAB, CNAI, SBOM, WASM, UNKNOWN, OTHER; "
                    "projects visited so far; cached).", ["target", "project", "artifact_type"],
                    [([name, pname, kind], n) for pname, counts in sorted(self.counts.values(), key=lambda v: v[0])
                     for kind, n in sorted(counts.items())])
        yield gauge("regwatch_harbor_detail_coverage_ratio",
                    "Share of projects or repositories an incremental group has visited so far, 0..1 (cached).",
                    ["target", "group"], [([name, self.group], len(self.counts) / len(projects) if projects else 1.0)])

