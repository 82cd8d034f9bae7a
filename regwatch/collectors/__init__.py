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
from dataclasses import dataclass

from regwatch.collectors.base import Collector, Job
from regwatch.collectors.context import Contexts, TargetContext
from regwatch.config import Config

__all__ = ["COLLECTOR_MODULES", "Collector", "Contexts", "Factory", "Job", "TargetContext", "build_jobs", "factories",
           "job_factory"]

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
    "regwatch.collectors.upstream",
]


@dataclass(frozen=True)
class Factory:
    name: str
    build: Callable[[Config, Contexts], Iterable[Job]]
    default_enabled: bool = True
    help: str = ""


_FACTORIES: dict[str, Factory] = {}


def job_factory(name: str, *, default_enabled: bool = True, help: str = "") -> Callable:  # noqa: A002 - like click's help=
    """Register ``fn(config, contexts) -> Iterable[Job]`` under ``name``; ``contexts`` hands out the one
    ``TargetContext`` of each target (``contexts.of_kind("nexus")``, ``contexts[name]``)."""

    def register(fn: Callable[[Config, Contexts], Iterable[Job]]) -> Callable[[Config, Contexts], Iterable[Job]]:
        _FACTORIES[name] = Factory(name, fn, default_enabled, help or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


def factories() -> dict[str, Factory]:
    for module in COLLECTOR_MODULES:
        importlib.import_module(module)
    return dict(_FACTORIES)


def build_jobs(config: Config, enabled: dict[str, bool] | None = None, *,
               sleep: Callable[[float], None] | None = None) -> list[Job]:
    """Every job the config asks for, from every enabled collector. ``sleep`` replaces the clients' backoff
    waits (tests of failure paths do not sleep through real backoff)."""
    jobs: list[Job] = []
    contexts = Contexts(config, sleep=sleep)
    for name, factory in sorted(factories().items()):
        on = factory.default_enabled if enabled is None or enabled.get(name) is None else enabled[name]
        if on:
            jobs.extend(factory.build(config, contexts))
    return jobs
