"""The collector framework: what a collector is, and how the config becomes a list of jobs.

A collector is a class whose ``collect()`` yields fresh prometheus_client metric families
(``GaugeMetricFamily`` ...) or raises. It never emits its own error metric: the runner
(``regwatch.runner``) times every run, turns an exception into
``regwatch_collector_success 0`` plus one "collector failed" log line, and keeps the
finished families as the job's snapshot.

Each collector module registers a *job factory* with ``@job_factory(name)``: a function
from the config to the ``Job``s it wants run. The name becomes the ``collector`` label and
the ``--collector.<name>`` switch of ``regwatch serve``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from regwatch.config import Config

# Modules that register job factories, imported when jobs are built (not at CLI start-up).
COLLECTOR_MODULES = [
    "regwatch.collectors.distribution",
    "regwatch.collectors.storage",
    "regwatch.collectors.probes",
    "regwatch.collectors.harbor",
    "regwatch.collectors.authlogs",
    "regwatch.collectors.drill",
    "regwatch.collectors.nexus",
    "regwatch.collectors.artifactory",
    "regwatch.collectors.proxycache",
]


class Collector:
    """Base class for collectors. Subclasses set ``name`` and implement ``collect``."""

    name: str = ""

    def collect(self) -> Iterable[Metric]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; called once when serve stops."""


@dataclass
class Job:
    """One collector instance run on its own schedule.

    ``target`` is the value of the ``target`` label on the framework's self-metrics (a
    target's, volume's or auth source's name). When ``kind`` is set the job is its target's
    primary job: its success is that target's ``regwatch_target_up``.
    """

    target: str
    collector: Collector
    interval: float
    timeout: float
    kind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.target, self.collector.name)


@dataclass(frozen=True)
class Factory:
    name: str
    build: Callable[[Config], Iterable[Job]]
    default_enabled: bool = True
    help: str = ""


_FACTORIES: dict[str, Factory] = {}


def job_factory(name: str, *, default_enabled: bool = True, help: str = "") -> Callable:
    """Register ``fn(config) -> Iterable[Job]`` under ``name``."""

    def register(fn: Callable[[Config], Iterable[Job]]) -> Callable[[Config], Iterable[Job]]:
        _FACTORIES[name] = Factory(name, fn, default_enabled, help or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


def factories() -> dict[str, Factory]:
    for module in COLLECTOR_MODULES:
        importlib.import_module(module)
    return dict(_FACTORIES)


def build_jobs(config: Config, enabled: dict[str, bool] | None = None) -> list[Job]:
    """Every job the config asks for, from every enabled collector."""
    jobs: list[Job] = []
    for name, factory in sorted(factories().items()):
        on = factory.default_enabled if enabled is None or enabled.get(name) is None else enabled[name]
        if on:
            jobs.extend(factory.build(config))
    return jobs
