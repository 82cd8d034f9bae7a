"""Harbor projects and repositories: counts, public/private, per-project repositories, artifacts
and pulls, proxy-cache projects and the health of their upstream registries, and the
``/statistics`` totals when the account may see them (a sysadmin; robots never do).

Example exposition::

    regwatch_harbor_projects{public="true",target="harbor"} 3.0
    regwatch_registry_repositories{target="harbor"} 120.0
    regwatch_harbor_project_repositories{project="library",target="harbor"} 12.0
    regwatch_harbor_project_artifacts{project="library",target="harbor"} 40.0
    regwatch_harbor_project_pulls_total{project="library",target="harbor"} 1234.0
    regwatch_harbor_proxy_cache_project{project="dockerhub",registry="hub",target="harbor"} 1.0
    regwatch_harbor_registry_healthy{registry="hub",target="harbor"} 1.0

Per-repository series (``regwatch_harbor_repository_artifacts``, ``..._pulls_total``) only
with ``per_repository_metrics: true``. Repositories are read page by page and summed per
project as they come, so 100,000 repositories are never held in memory at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected
from regwatch.families import counter, gauge


class ProjectsGroup(HarborGroup):
    group = "projects"
    endpoints = ("/projects", "/repositories", "/registries", "/statistics")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            projects = self.api.projects()
        except NotCollected:
            return
        by_id = {p.id: p.name for p in projects}
        public = sum(1 for p in projects if p.public)
        yield gauge("regwatch_harbor_projects", "Projects the account can see, by visibility (cached).",
                    ["target", "public"], [([name, "true"], public), ([name, "false"], len(projects) - public)])
        yield gauge("regwatch_harbor_project_repositories",
                    "Repositories per project (the project's repo_count; cached).",
                    ["target", "project"], [([name, p.name], p.repo_count) for p in projects])

        registries = self.optional(self.api.list_all, "/registries") or []
        registry_names = {r.integer("id"): r.text("name") for r in registries}
        yield gauge("regwatch_harbor_proxy_cache_project",
                    "1 for each proxy-cache project, with the upstream registry it caches (cached).",
                    ["target", "project", "registry"],
                    [([name, p.name, registry_names.get(p.registry_id, str(p.registry_id))], 1.0)
                     for p in projects if p.registry_id])
        yield gauge("regwatch_harbor_registry_healthy",
                    "1 if Harbor reports the registry endpoint (replication or proxy-cache upstream) healthy "
                    "(cached).",
                    ["target", "registry"],
                    [([name, r.text("name")], 1.0 if r.text("status") == "healthy" else 0.0) for r in registries])

        yield from self._repositories(by_id)

        stats = self.optional(self.api.obj, "/statistics")
        # Only a sysadmin sees the total_* fields; for anyone else they are 0, so they are left out.
        if stats and (stats.number("total_project_count") or stats.number("total_storage_consumption")):
            yield gauge("regwatch_harbor_statistics_repositories",
                        "Repositories in all of Harbor from /statistics (sysadmin only; cached).",
                        ["target"], [([name], stats.number("total_repo_count", 0.0))])
            yield gauge("regwatch_harbor_storage_consumption_bytes",
                        "Storage all projects use, from /statistics (sysadmin only; cached).",
                        ["target"], [([name], stats.number("total_storage_consumption", 0.0))])

    def _repositories(self, projects: dict[int, str]) -> Iterable[Metric]:
        name = self.target.name
        per_repo = self.target.per_repository_metrics
        artifacts: dict[str, float] = defaultdict(float)
        pulls: dict[str, float] = defaultdict(float)
        repo_rows: list[tuple[str, str, float, float]] = []
        count = 0
        try:
            for page in self.api.pages("/repositories"):
                for repo in page:
                    full = repo.text("name")
                    project = projects.get(repo.integer("project_id")) or full.split("/", 1)[0]
                    n_artifacts, n_pulls = repo.number("artifact_count", 0.0), repo.number("pull_count", 0.0)
                    artifacts[project] += n_artifacts
                    pulls[project] += n_pulls
                    count += 1
                    if per_repo:
                        repo_rows.append((project, full.split("/", 1)[-1], n_artifacts, n_pulls))
        except NotCollected:
            return
        yield gauge("regwatch_registry_repositories", "Repositories the account can see in Harbor (cached).",
                    ["target"], [([name], count)])
        yield gauge("regwatch_harbor_project_artifacts", "Artifacts over a project's repositories.",
                    ["target", "project"], [([name, p], v) for p, v in artifacts.items()])
        yield counter("regwatch_harbor_project_pulls", "Pulls over a project's repositories, as Harbor counts them "
                      "(cached).", ["target", "project"], [([name, p], v) for p, v in pulls.items()])
        if per_repo:
            yield gauge("regwatch_harbor_repository_artifacts",
                        "Artifacts per repository (opt-in: per_repository_metrics).",
                        ["target", "project", "repository"], [([name, p, r], a) for p, r, a, _ in repo_rows])
            yield counter("regwatch_harbor_repository_pulls", "Pulls per repository (opt-in: per_repository_metrics; "
                          "cached).", ["target", "project", "repository"],
                          [([name, p, r], n) for p, r, _, n in repo_rows])
