"""What the probe tests share: a ProbeCollector built from a config the way serve builds it, one
probe run into a registry of its own, and that registry's samples for target "hub"."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from regwatch.collectors import build_jobs
from regwatch.collectors.probes import ProbeCollector
from regwatch.config import parse_config


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def run(collector: ProbeCollector) -> CollectorRegistry:
    """Run one probe and return a registry holding exactly what it exposed."""
    registry = CollectorRegistry()
    registry.register(_Families(list(collector.collect())))
    return registry


def make_collector(tmp_path: Path, url: str, image: str, *, password: str | None = "alice-secret",
                   tls: dict | None = None, **probe: object) -> ProbeCollector:
    target: dict = {"name": "hub", "kind": "distribution", "url": url, "probes": [{"image": image, **probe}]}
    if tls is not None:
        target["tls"] = tls
    if password is not None:
        secret = tmp_path / f"password-{len(password)}-{abs(hash(password))}"
        secret.write_text(password)
        target.update(username="alice", password_file=str(secret))
    config = parse_config({"targets": [target]})
    jobs = [job for job in build_jobs(config) if isinstance(job.collector, ProbeCollector)]
    assert len(jobs) == 1
    return jobs[0].collector


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"target": "hub", **labels})
