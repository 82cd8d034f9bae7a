"""What a collector is and what a job is (the runner runs jobs; see regwatch/collectors/__init__.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric

from regwatch.budget import Budget

if TYPE_CHECKING:  # the context imports this module; a type-only reference back is no import
    from regwatch.collectors.context import TargetContext


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
    primary job: its success is that target's ``regwatch_target_up``. ``budget`` gives the
    collection's deadline and the runner's timeout (``regwatch.budget``); ``context`` is the
    target's context (None for jobs that watch no target: volumes, auth sources, the drill).
    """

    target: str
    collector: Collector
    interval: float
    budget: Budget
    kind: str | None = None
    context: TargetContext | None = None
    # Labels beside target and collector on the framework's self-metrics, for a collector that runs
    # once per item of a target (a probe: image, endpoint).
    labels: dict[str, str] = field(default_factory=dict)
    # Set by a collector that has news before its interval is up (a followed log counted lines): the
    # runner then runs the job at once (at most every runner.WAKE_FLOOR seconds).
    wake: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def timeout(self) -> float:
        """How long the runner waits for one collection: the budget's deadline plus a grace."""
        return self.budget.job_timeout

    def redact(self, text: str) -> str:
        return self.context.redact(text) if self.context is not None else text

    @property
    def key(self) -> tuple[str, ...]:
        return (self.target, self.collector.name, *(f"{k}={v}" for k, v in sorted(self.labels.items())))
