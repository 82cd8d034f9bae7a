"""The ``drill`` collector: serve exposes the last ``regwatch drill`` run's metrics, read from the
report.json in ``drill.report_dir`` (the drill itself runs as a separate job, e.g. a CronJob).

Example exposition::

    # HELP regwatch_drill_success 1 if the last full drill (backup, restore into the destination and verify ...
    # TYPE regwatch_drill_success gauge
    regwatch_drill_success{store="/store"} 1.0
    # HELP regwatch_drill_phase_success 1 if the phase passed the last time it ran (alone or in a drill).
    # TYPE regwatch_drill_phase_success gauge
    regwatch_drill_phase_success{phase="backup",store="/store"} 1.0
    # HELP regwatch_drill_coverage_ratio Share of the source's selected tags that are in the store and verified, ...
    # TYPE regwatch_drill_coverage_ratio gauge
    regwatch_drill_coverage_ratio{store="/store"} 1.0
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric

from regwatch.budget import Budget
from regwatch.collectors import Collector, Contexts, Job, job_factory
from regwatch.config import Config


class DrillCollector(Collector):
    name = "drill"

    def __init__(self, report_dir: Path):
        self.path = Path(report_dir) / "report.json"

    def collect(self) -> Iterable[Metric]:
        from regwatch.drill.report import families

        try:
            report = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no drill report at {self.path} yet; run `regwatch drill ... --report-dir "
                                    f"{self.path.parent}` or fix drill.report_dir") from None
        yield from families(report)


@job_factory("drill", help="Metrics of the last DR drill, from drill.report_dir/report.json.")
def drill_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    if config.drill.report_dir is not None:
        yield Job("drill", DrillCollector(config.drill.report_dir), 30.0, Budget.local(10.0))
