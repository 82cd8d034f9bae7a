"""Signed artifacts per project: artifacts carrying a cosign or notation signature accessory.

Example exposition::

    regwatch_harbor_project_signed_artifacts{project="library",target="harbor"} 12.0
    regwatch_harbor_project_checked_artifacts{project="library",target="harbor"} 40.0
    regwatch_harbor_detail_coverage_ratio{group="signatures",target="harbor"} 0.3

Harbor shows accessories only per repository (``.../artifacts?with_accessory=true``), so this
costs one call per repository: each collection (every ``harbor.detail_interval``) visits at most
``harbor.detail_calls_per_cycle`` repositories, reading ``/repositories`` one page at a time from
where the last collection stopped. Counts are of the first 100 artifacts of each repository.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.budget import ContextPool
from regwatch.client import NotFound
from regwatch.collectors.harbor.api import PAGE_SIZE, Fields, HarborGroup, NotCollected, repo_path
from regwatch.families import gauge

ARTIFACTS = "/projects/{project_name}/repositories/{repository_name}/artifacts"
SIGNATURE_TYPES = ("signature.cosign", "signature.notation")


class SignaturesGroup(HarborGroup):
    group = "signatures"
    endpoints = (ARTIFACTS,)

    def __init__(self, api):
        super().__init__(api)
        self.offset = 0  # index of the next repository to visit in /repositories order
        # repository id -> (project, signed, artifacts); ints and one shared project string per entry
        self.seen: dict[int, tuple[str, int, int]] = {}
        self.total_repos = 0

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        budget = self.target.harbor.detail_calls_per_cycle
        repos: list[Fields] = []
        offset = self.offset
        try:
            while len(repos) < budget:
                page, total = self.api.page("/repositories", offset // PAGE_SIZE + 1, endpoint="/repositories")
                self.total_repos = total if total is not None else max(self.total_repos, len(self.seen))
                chunk = page[offset % PAGE_SIZE:][:budget - len(repos)]
                repos.extend(chunk)
                offset += len(chunk)
                if not chunk or offset >= (total or 0):
                    offset = 0  # wrapped: start again from the first repository next time
                    break
        except NotCollected:
            return
        self.offset = offset
        with ContextPool(max_workers=self.target.concurrency) as pool:
            for repo_id, result in pool.map(self._check, repos[:budget]):
                if result is not None:
                    self.seen[repo_id] = result
                else:
                    self.seen.pop(repo_id, None)
        signed: dict[str, int] = defaultdict(int)
        checked: dict[str, int] = defaultdict(int)
        for project, n_signed, n_artifacts in self.seen.values():
            signed[project] += n_signed
            checked[project] += n_artifacts
        yield gauge("regwatch_harbor_project_signed_artifacts",
                    "Artifacts with a cosign or notation signature, over the repositories visited so far.",
                    ["target", "project"], [([name, p], v) for p, v in signed.items()])
        yield gauge("regwatch_harbor_project_checked_artifacts",
                    "Artifacts checked for a signature, over the repositories visited so far.",
                    ["target", "project"], [([name, p], v) for p, v in checked.items()])
        coverage = min(1.0, len(self.seen) / self.total_repos) if self.total_repos else 1.0
        yield gauge("regwatch_harbor_detail_coverage_ratio",
                    "Share of projects or repositories an incremental group has visited so far, 0..1.",
                    ["target", "group"], [([name, self.group], coverage)])

    def _check(self, repo: Fields) -> tuple[int, tuple[str, int, int] | None]:
        repo_id = repo.integer("id", -1)
        full = repo.text("name")
        project, _, short = full.partition("/")
        path = f"/projects/{project}/repositories/{repo_path(short)}/artifacts"
        try:
            artifacts, _ = self.api.page(path, 1, {"with_tag": "false", "with_accessory": "true"}, endpoint=ARTIFACTS)
        except (NotCollected, NotFound):
            return repo_id, None
        n_signed = sum(1 for a in artifacts
                       if any(acc.text("type") in SIGNATURE_TYPES for acc in a.objects("accessories")))
        return repo_id, (project, n_signed, len(artifacts))
