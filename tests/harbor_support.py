"""What the Harbor tests share: a harbor target for the fake, a TargetContext with no real
backoff sleeping, and Scrape, which runs every Harbor job once through the real runner."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from regwatch.budget import Budget
from regwatch.collectors import TargetContext
from regwatch.collectors.harbor import harbor_jobs_for
from regwatch.collectors.harbor.api import HarborAPI
from regwatch.config import parse_config
from regwatch.runner import Runner
from tests.fakes.harbor import FakeHarbor


def target_for(fake: FakeHarbor, tmp_path, user: str = "admin", **harbor: object):
    secret = tmp_path / f"secret-{user}"
    secret.write_text(fake.accounts.get(user, ("wrong", ""))[0])
    config = parse_config({"targets": [{"name": "h", "kind": "harbor", "url": fake.url, "username": user,
                                        "password_file": str(secret), "interval": "30s", "harbor": harbor}]})
    return config.targets[0]


def context(target, **budget: float) -> TargetContext:
    """The target's context; ``budget`` overrides (retries, backoff) with no real sleeping."""
    return TargetContext(target, budget=Budget(timeout=target.timeout, sleep=lambda s: None, **budget))


def api_for(target, **budget: float) -> HarborAPI:
    return HarborAPI(target, context(target, **budget).client())


class Scrape:
    """Runs every Harbor job once through the real runner and reads the rendered exposition."""

    def __init__(self, target, api: HarborAPI | None = None, ctx: TargetContext | None = None):
        self.jobs = harbor_jobs_for(ctx or context(target), api)
        self.runner = Runner(self.jobs)

    def run(self) -> Scrape:
        for job in self.jobs:
            self.runner.run_once(job)
        text = self.runner.exposition().decode()
        self.samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return self

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def series(self, name: str) -> dict:
        return {dict(k[1]).get("project") or k[1]: v for k, v in self.samples.items() if k[0] == name}

    def close(self) -> None:
        self.runner.stop(0)
