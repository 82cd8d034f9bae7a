"""Time budgets come from one place (regwatch/budget.py), cover the client's worst case, and a job that
runs out of time says which request it was waiting on, for every kind of target."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from regwatch.budget import GRACE, Budget, Run, running
from regwatch.client import RegistryClient
from regwatch.collectors import build_jobs
from regwatch.config import parse_config
from regwatch.failures import RateLimited, Timeout
from regwatch.runner import Runner
from tests.fakes.hostile import HostileServer, Reply


class HungServer:
    """Accepts connections and reads requests, never answers: an overloaded registry."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def stop(self):
        self.stopped = True
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hung():
    server = HungServer()
    yield server
    server.stop()


def test_the_worst_case_is_every_attempt_timing_out_and_every_wait_the_longest():
    budget = Budget(timeout=10, retries=2, backoff=0.5, retry_after_cap=30)
    assert budget.exchange_worst_case() == 3 * 10 + 30 + 30
    assert budget.call_worst_case() == 3 * budget.exchange_worst_case()  # challenge, token, authorised retry
    assert budget.job_timeout == budget.call_worst_case() + GRACE
    fan_out = Budget(timeout=10, collection=300)
    assert (fan_out.deadline, fan_out.job_timeout) == (300, 300 + GRACE)


def test_the_client_never_outlasts_its_budget_when_every_attempt_hangs(hung):
    budget = Budget(timeout=0.3, retries=2, backoff=0.1, retry_after_cap=0.2)
    started = time.monotonic()
    with RegistryClient(hung.url, name="h", budget=budget) as client, pytest.raises(Timeout):
        client.ping()
    elapsed = time.monotonic() - started
    assert 3 * 0.3 <= elapsed <= budget.exchange_worst_case() + 0.5


@pytest.mark.servers
def test_the_client_never_outlasts_its_budget_when_every_answer_is_429_with_the_longest_wait():
    server = HostileServer({"/v2/": Reply(429, {"Retry-After": "3"})}).start()
    try:
        waits: list[float] = []
        budget = Budget(timeout=1, retries=2, backoff=0.1, retry_after_cap=2, sleep=waits.append)
        with RegistryClient(server.url, name="rl", budget=budget) as client, pytest.raises(RateLimited):
            client.ping()
        assert waits == []  # a Retry-After beyond the cap ends the call at once, saying when the limit resets
        budget = Budget(timeout=1, retries=2, backoff=0.1, retry_after_cap=3, sleep=waits.append)
        with RegistryClient(server.url, name="rl", budget=budget) as client, pytest.raises(RateLimited):
            client.ping()
        assert waits == [3.0, 3.0] and sum(waits) <= budget.exchange_worst_case()
    finally:
        server.stop()


def test_a_collection_deadline_cuts_the_backoff_short(hung):
    budget = Budget(timeout=0.2, retries=5, backoff=5.0)
    started = time.monotonic()
    with RegistryClient(hung.url, name="h", budget=budget) as client, running(Run(1.0)), pytest.raises(Timeout):
        client.ping()
    # Without the run's deadline this is 6 attempts and 5+10+20+40+80 s of backoff.
    assert time.monotonic() - started < 2.0


def every_kind(url: str, tmp_path) -> dict:
    secret = tmp_path / "pw"
    secret.write_text("pw")
    common = {"url": url, "timeout": "0.3s", "username": "u", "password_file": str(secret)}
    return {"targets": [
        {"name": "dist", "kind": "distribution", "debug_url": url, **common,
         "probes": [{"image": "lib/app:1", "timeout": "0.3s"}]},
        {"name": "harbor", "kind": "harbor", **common},
        {"name": "nexus", "kind": "nexus", **common, "nexus": {"docker_connectors": {"docker-hosted": url}}},
        {"name": "jfrog", "kind": "artifactory", **common},
    ]}


def test_every_job_timeout_is_its_budgets(hung, tmp_path):
    jobs = build_jobs(parse_config(every_kind(hung.url, tmp_path)))
    assert {job.target for job in jobs} >= {"dist", "harbor", "nexus", "jfrog"}
    for job in jobs:
        assert job.timeout == job.budget.job_timeout
        if job.context is not None and job.collector.name != "probe":
            assert job.budget.deadline >= job.context.budget.call_worst_case()


def test_a_hung_endpoint_is_named_by_every_kind(hung, tmp_path):
    jobs = build_jobs(parse_config(every_kind(hung.url, tmp_path)), sleep=lambda seconds: None)
    runner = Runner(jobs)
    threads = [threading.Thread(target=runner.run_once, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    where = f"127.0.0.1:{hung.port}"
    # A probe's failure is its own metric, not a failed job; Harbor's health group reports an unreachable core as
    # its health (core 0), which is what it is for.
    errors = {(s["target"], s["collector"]): s["last_error"] for s in runner.status()
              if s["collector"] not in ("probe", "harbor_health")}
    assert [key for key, error in errors.items() if not error] == []
    hung_text = f"{where} accepted the connection but did not answer within 0.3s; the registry (or a proxy in front " \
                "of it) is hung or overloaded"
    assert errors[("dist", "distribution")] == f"target dist: GET /v2/: {hung_text}"
    assert errors[("dist", "proxycache")] == f"target dist: GET /debug/vars: {hung_text}"
    assert errors[("nexus", "nexus")] == f"target nexus: GET /service/rest/v1/status: {hung_text}"
    assert errors[("nexus", "nexus_docker")] == f"target nexus: GET /v2/: {hung_text}"
    assert errors[("jfrog", "artifactory")] == f"target jfrog: GET /api/system/ping: {hung_text}"
    assert errors[("harbor", "harbor")] == f"target harbor: GET /api/v2.0/systeminfo: {hung_text}"
    # Every other job names the request it was stuck on the same way (the endpoint differs per group).
    for (target, collector), error in errors.items():
        if collector == "probe":
            continue
        assert error.startswith(f"target {target}: GET /") and hung_text in error, (target, collector, error)
    probe = next(job for job in jobs if job.collector.name == "probe").collector.last
    assert (probe.reason, probe.failed_phase) == ("timeout", "ping")
