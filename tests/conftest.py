"""Shared fixtures: real registries on free loopback ports, temp configs, a serve process.

Every server a test starts listens on 127.0.0.1 only and is stopped when the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from regwatch.client import RegistryClient
from regwatch.localregistry import LocalRegistry, free_port, wait_for_port
from tests.fakes.hostile import HostileServer

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fixtures that start a server (a real one or a fake on loopback). A test that uses one, directly
# or through another fixture, is in the `servers` tier; `make test-fast` runs the others. A test
# that starts a server in its own code says so with `pytestmark = pytest.mark.servers`.
SERVER_FIXTURES = frozenset({
    "make_registry", "registry", "serve",                 # conftest: docker-registry, regwatch serve
    "slow_registry",                                      # test_serve: an HTTP server answering after 5 s
    "jfrog", "nexus", "fake", "traffic",                  # fake Artifactory, Nexus, Harbor
    "start_es", "es",                                     # fake Elasticsearch
    "token_registry", "delayed_registry",                 # token servers (and delaying proxies)
    "stores", "stack", "upstream_and_proxy", "pods",      # registries, Prometheus stack, chart pods
    "hung", "servers",                                    # test_budget's hung server, hostile fakes
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture
def make_registry(tmp_path):
    """Factory: ``make_registry(users={...}, proxy=..., ...)`` starts a real docker-registry."""
    started: list[LocalRegistry] = []

    def make(**kwargs) -> LocalRegistry:
        reg = LocalRegistry(tmp_path / f"registry{len(started)}", **kwargs)
        started.append(reg)
        return reg.start()

    yield make
    for reg in started:
        reg.stop()


@pytest.fixture
def registry(make_registry):
    """A real registry with htpasswd auth: user ``alice`` / ``alice-secret``."""
    reg = make_registry(users={"alice": "alice-secret"})
    reg.username, reg.password = "alice", "alice-secret"
    return reg


@pytest.fixture
def registry_client(registry):
    with RegistryClient(registry.url, username="alice", password="alice-secret") as client:
        yield client


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict (or raw YAML text) to a file and return its path."""
    count = [0]

    def write(data, name: str | None = None) -> Path:
        count[0] += 1
        path = tmp_path / (name or f"config{count[0]}.yml")
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    return write


def log_events(text: str, msg: str | None = None) -> list[dict[str, str]]:
    """The logfmt lines regwatch wrote, parsed into their fields (``msg`` selects by message)."""
    import shlex

    events = []
    for line in text.splitlines():
        if not line.startswith("ts="):
            continue
        fields = {}
        for part in shlex.split(line.replace("\\n", "\n"), posix=True):
            key, _, val = part.partition("=")
            fields[key] = val
        if msg is None or fields.get("msg") == msg:
            events.append(fields)
    return events


def regwatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "regwatch", *args]


class ServeProcess:
    """``regwatch serve`` as a real subprocess on a free port."""

    def __init__(self, config: Path, *extra: str, log_path: Path, nofile: int | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            regwatch_cmd("serve", "--config", str(config), "--listen", f"127.0.0.1:{self.port}", *extra),
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=None if nofile is None else lambda: _limit_open_files(nofile))
        if not wait_for_port("127.0.0.1", self.port, 20, self.proc):
            raise RuntimeError(f"regwatch serve did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5).text

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"serve not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> float:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return time.monotonic() - started


def _limit_open_files(count: int) -> None:
    """In the child: soft and hard open-files limit ``count``, as ``ulimit -n`` sets it."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@pytest.fixture
def serve(tmp_path):
    """Factory: ``serve(config_path, *extra_args, nofile=None)`` starts ``regwatch serve``; stopped after the test.

    ``nofile`` runs it under that open-files limit (``ulimit -n``).
    """
    procs: list[ServeProcess] = []

    def start(config: Path, *extra: str, nofile: int | None = None) -> ServeProcess:
        proc = ServeProcess(config, *extra, log_path=tmp_path / f"serve{len(procs)}.log", nofile=nofile)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def servers():
    """Factory: ``servers(routes, **kwargs)`` starts a scripted hostile registry (tests/fakes/hostile.py)."""
    started: list[HostileServer] = []

    def make(routes=None, **kwargs) -> HostileServer:
        server = HostileServer(routes, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
