"""The ``distribution`` collector: a Docker Distribution registry seen through its v2 API.

Example exposition::

    # HELP regwatch_registry_repositories Repositories listed by the registry's _catalog (cached; see regwatch_collector_last_success_timestamp_seconds).
    # TYPE regwatch_registry_repositories gauge
    regwatch_registry_repositories{target="hub"} 3.0
    # HELP regwatch_registry_tags Tags over all repositories, from tags/list (cached).
    # TYPE regwatch_registry_tags gauge
    regwatch_registry_tags{target="hub"} 7.0
    # HELP regwatch_registry_healthy 1 if the registry's debug /debug/health reports no failing check.
    # TYPE regwatch_registry_healthy gauge
    regwatch_registry_healthy{target="hub"} 1.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.client import NotFound, RegistryClient
from regwatch.collectors import Collector, Job, job_factory
from regwatch.config import Config, TargetConfig

log = logging.getLogger("regwatch.collectors.distribution")


class DistributionCollector(Collector):
    name = "distribution"

    def __init__(self, target: TargetConfig, client: RegistryClient | None = None):
        self.target = target
        self.client = client or RegistryClient.for_target(target)
        self.debug_client = RegistryClient(target.debug_url, name=target.name, timeout=target.timeout) \
            if target.debug_url else None

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        self.client.ping()
        repos = list(self.client.catalog(self.target.page_size))
        with ThreadPoolExecutor(max_workers=self.target.concurrency, thread_name_prefix=f"tags-{name}") as pool:
            counts = list(pool.map(self._tag_count, repos))

        yield _gauge("regwatch_registry_repositories",
                     "Repositories listed by the registry's _catalog (cached; see "
                     "regwatch_collector_last_success_timestamp_seconds).", name, len(repos))
        yield _gauge("regwatch_registry_tags", "Tags over all repositories, from tags/list (cached).",
                     name, sum(counts))
        if self.target.per_repository_metrics:
            per_repo = GaugeMetricFamily("regwatch_registry_repository_tags",
                                         "Tags per repository (opt-in: per_repository_metrics).",
                                         labels=["target", "repository"])
            for repo, count in zip(repos, counts):
                per_repo.add_metric([name, repo], count)
            yield per_repo
        if self.debug_client is not None:
            yield _gauge("regwatch_registry_healthy",
                         "1 if the registry's debug /debug/health reports no failing check.",
                         name, self._healthy())

    def _tag_count(self, repo: str) -> int:
        try:
            return len(self.client.tags(repo, self.target.page_size))
        except NotFound:
            # Listed in the catalog but without tags (all deleted): Distribution answers 404.
            return 0

    def _healthy(self) -> int:
        resp = self.debug_client.request("GET", "/debug/health", ok=(200, 503))
        if resp.status_code == 200:
            return 1
        log.warning("registry health check failing", extra={"target": self.target.name,
                                                            "checks": resp.text[:300]})
        return 0

    def close(self) -> None:
        self.client.close()
        if self.debug_client:
            self.debug_client.close()


def _gauge(name: str, doc: str, target: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["target"])
    family.add_metric([target], value)
    return family


@job_factory("distribution", help="Repositories, tags and health of Docker Distribution targets.")
def distribution_jobs(config: Config) -> Iterable[Job]:
    for target in config.targets:
        if target.kind == "distribution":
            yield Job(target.name, DistributionCollector(target), target.interval, target.timeout, kind=target.kind)
