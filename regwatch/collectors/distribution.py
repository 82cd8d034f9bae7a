"""The ``distribution`` collector: a Docker Distribution registry seen through its v2 API.

Example exposition::

    # HELP regwatch_registry_repositories Repositories listed by the registry's _catalog (cached; see ...
    # TYPE regwatch_registry_repositories gauge
    regwatch_registry_repositories{target="hub"} 3.0
    # HELP regwatch_registry_tags Tags over all repositories, from tags/list (cached).
    # TYPE regwatch_registry_tags gauge
    regwatch_registry_tags{target="hub"} 7.0
    # HELP regwatch_registry_healthy 1 if the registry's debug /debug/health reports no failing check.
    # TYPE regwatch_registry_healthy gauge
    regwatch_registry_healthy{target="hub"} 1.0

Counting is a fan-out (one ``tags/list`` per repository, ``concurrency`` at a time), so the
job runs on a collection budget (``regwatch.budget``): the whole count ends within it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.budget import ContextPool
from regwatch.client import NotFound, RegistryClient
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.config import Config
from regwatch.families import gauge

log = logging.getLogger("regwatch.collectors.distribution")


def count_tags(client: RegistryClient, page_size: int, concurrency: int) -> tuple[list[str], list[int]]:
    """(repositories, tag count of each) through the registry v2 API: ping, _catalog, tags/list."""
    client.ping()
    repos = list(client.catalog(page_size))

    def tag_count(repo: str) -> int:
        try:
            return len(client.tags(repo, page_size))
        except NotFound:
            # Listed in the catalog but without tags (all deleted): Distribution answers 404.
            return 0

    with ContextPool(max_workers=concurrency, thread_name_prefix=f"tags-{client.name}") as pool:
        counts = list(pool.map(tag_count, repos))
    return repos, counts


class DistributionCollector(Collector):
    name = "distribution"

    def __init__(self, ctx: TargetContext):
        self.target = ctx.target
        self.client = ctx.client()
        self.debug_client = ctx.client("debug") if ctx.target.debug_url else None

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        repos, counts = count_tags(self.client, self.target.page_size, self.target.concurrency)
        yield gauge("regwatch_registry_repositories",
                    "Repositories listed by the registry's _catalog (cached; see "
                    "regwatch_collector_last_success_timestamp_seconds).", ["target"], [([name], len(repos))])
        yield gauge("regwatch_registry_tags", "Tags over all repositories, from tags/list (cached).",
                    ["target"], [([name], sum(counts))])
        if self.target.per_repository_metrics:
            yield gauge("regwatch_registry_repository_tags", "Tags per repository (opt-in: per_repository_metrics).",
                        ["target", "repository"],
                        [([name, repo], count) for repo, count in zip(repos, counts, strict=True)])
        if self.debug_client is not None:
            yield gauge("regwatch_registry_healthy",
                        "1 if the registry's debug /debug/health reports no failing check.",
                        ["target"], [([name], self._healthy())])

    def _healthy(self) -> int:
        resp = self.debug_client.request("GET", "/debug/health", ok=(200, 503), limit=64 * 1024)
        if resp.status_code == 200:
            return 1
        log.warning("registry health check failing", extra={"target": self.target.name,
                                                            "checks": resp.text[:300]})
        return 0


@job_factory("distribution", help="Repositories, tags and health of Docker Distribution targets.")
def distribution_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("distribution"):
        yield ctx.job(DistributionCollector(ctx), primary=True, collection=ctx.fan_out_budget())
