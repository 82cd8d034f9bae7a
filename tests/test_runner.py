"""The framework owns failure: a collector that raises or hangs never breaks /metrics."""

from __future__ import annotations

import subprocess
import threading

from prometheus_client.core import GaugeMetricFamily

from regwatch.budget import Budget
from regwatch.collectors import Collector, Job
from regwatch.runner import Runner
from tests.helpers import value


class Boom(Collector):
    name = "boom"

    def collect(self):
        yield GaugeMetricFamily("regwatch_partial", "never exported", value=1)
        raise RuntimeError("the API changed shape")


class Hang(Collector):
    name = "hang"

    def __init__(self):
        self.release = threading.Event()

    def collect(self):
        self.release.wait(10)
        yield GaugeMetricFamily("regwatch_late", "late", value=1)


class Fine(Collector):
    name = "fine"

    def collect(self):
        family = GaugeMetricFamily("regwatch_registry_tags", "tags", labels=["target"])
        family.add_metric(["a"], 3)
        yield family


def test_raising_collector_is_success_zero_and_a_log_line(caplog):
    runner = Runner([Job("a", Boom(), 60, Budget.local(5), kind="distribution"), Job("a", Fine(), 60, Budget.local(5))])
    for job in runner.jobs:
        runner.run_once(job)
    text = runner.exposition().decode()
    assert value(text, "regwatch_collector_success", target="a", collector="boom") == 0
    assert value(text, "regwatch_collector_success", target="a", collector="fine") == 1
    assert value(text, "regwatch_target_up", target="a", kind="distribution") == 0
    assert value(text, "regwatch_registry_tags", target="a") == 3
    assert "regwatch_partial" not in text  # a failed run's half-built families are thrown away
    failed = [r for r in caplog.records if r.getMessage() == "collector failed"]
    assert failed and failed[0].target == "a" and "the API changed shape" in failed[0].err


def test_hanging_collector_times_out_and_never_overlaps():
    hang = Hang()
    job = Job("h", hang, 60, Budget(collection=0.2, grace=0.0))
    runner = Runner([job])
    worker = runner.run_once(job)
    text = runner.exposition().decode()
    assert value(text, "regwatch_collector_success", target="h", collector="hang") == 0
    assert runner.status()[0]["last_error"] == "timed out after 0.2s, no request was in flight"
    assert worker.is_alive()
    hang.release.set()
    worker.join(5)
    assert "regwatch_late" not in runner.exposition().decode()


def test_exposition_passes_promtool_lint(tmp_path):
    runner = Runner([Job("a", Fine(), 60, Budget.local(5), kind="distribution")])
    runner.run_once(runner.jobs[0])
    out = subprocess.run(["promtool", "check", "metrics"], input=runner.exposition(), capture_output=True)
    assert out.returncode == 0, out.stdout + out.stderr
