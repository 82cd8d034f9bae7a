"""End to end: a real docker-registry with htpasswd auth, real pulls, rotations, a kill -9 of serve.

The registry's stdout (app log and access log) goes through a small writer this test
controls, the way a logging daemon writes a file: it can rename the file and keep writing
to the renamed one until it reopens (logrotate ``create`` + postrotate), and the file is
opened O_APPEND so copytruncate works as logrotate does it (copy, then truncate in place).

The test counts what it sent itself: every request that carried credentials, and which
of those had a wrong password. ``regwatch_auth_requests_total`` and
``regwatch_auth_failures_total`` must equal those counts exactly at the end, through a
rename rotation, a copytruncate while serve is down, and a kill -9 of serve.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from regwatch.client import MANIFEST_ACCEPT, RegistryClient
from regwatch.images import build_image, push_image
from regwatch.localregistry import REGISTRY_BINARY, LocalRegistry, wait_for_port

SOURCE = "registry"


class PipedRegistry:
    """docker-registry whose stdout a thread copies line by line into ``log_path``."""

    def __init__(self, workdir):
        self.spec = LocalRegistry(workdir, users={"alice": "alice-secret"}, debug=False)
        self.log_path = str(self.spec.log_path)
        self.url = self.spec.url
        self._lock = threading.Lock()
        self._handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(self.spec.config_path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={"PATH": os.environ["PATH"], "OTEL_TRACES_EXPORTER": "none"})
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()
        assert wait_for_port(self.spec.host, self.spec.port, 15, self.proc), "docker-registry did not start"

    def _copy(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            with self._lock:
                self._handle.write(line)
                self._handle.flush()

    def settle(self) -> None:
        """Wait until the registry's last lines are in the file (it logs after answering)."""
        last = -1
        while True:
            time.sleep(0.15)
            size = os.fstat(self._handle.fileno()).st_size
            if size == last:
                return
            last = size

    def rename(self, rotated: str) -> None:
        with self._lock:
            os.rename(self.log_path, rotated)  # the writer keeps appending to the renamed file

    def reopen(self) -> None:
        with self._lock:
            self._handle.close()
            self._handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()

    def copytruncate(self, copy: str) -> None:
        with self._lock:
            shutil.copyfile(self.log_path, copy)
            os.truncate(self.log_path, 0)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._thread.join(5)
        self._handle.close()


class Traffic:
    """Pulls against the registry, counting what it sends."""

    def __init__(self, url: str):
        self.url = url
        self.credentialed = 0
        self.wrong_password = 0
        self.anonymous = 0
        self.session = requests.Session()

    def _get(self, path: str, auth=None) -> int:
        response = self.session.get(self.url + path, auth=auth, headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
        if "Authorization" in response.request.headers:
            self.credentialed += 1
        else:
            self.anonymous += 1
        return response.status_code

    def pull(self, password: str) -> None:
        """What a client does to pull: an anonymous ping (challenged), then the manifest with credentials."""
        assert self._get("/v2/") == 401
        status = self._get("/v2/lib/app/manifests/v1", auth=("alice", password))
        assert status == (200 if password == "alice-secret" else 401)
        if status == 401:
            self.wrong_password += 1

    def run(self, good: int, bad: int, anonymous: int) -> None:
        for i in range(max(good, bad, anonymous)):
            if i < good:
                self.pull("alice-secret")
            if i < bad:
                self.pull(f"wrong-{i}")
            if i < anonymous:
                assert self._get("/v2/lib/app/tags/list") == 401


def auth_counters(serve) -> tuple[float, float, float]:
    values = {"requests": 0.0, "failures": 0.0, "challenges": 0.0}
    for family in text_string_to_metric_families(serve.metrics()):
        for sample in family.samples:
            if sample.labels.get("source") != SOURCE or not sample.name.endswith("_total"):
                continue
            if sample.name == "regwatch_auth_requests_total":
                values["requests"] += sample.value
            elif sample.name == "regwatch_auth_failures_total":
                values["failures"] += sample.value
            elif sample.name == "regwatch_auth_challenges_total":
                values["challenges"] += sample.value
    return values["requests"], values["failures"], values["challenges"]


def wait_for(serve, expected: tuple[float, float, float], timeout: float = 20) -> tuple[float, float, float]:
    deadline = time.monotonic() + timeout
    seen = auth_counters(serve)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = auth_counters(serve)
    return seen


def test_counts_exact_through_rotations_and_kill_9(tmp_path, write_config, serve):
    registry = PipedRegistry(tmp_path / "reg")
    try:
        with RegistryClient(registry.url, username="alice", password="alice-secret") as client:
            push_image(client, "lib/app", "v1", build_image([{"hello.txt": b"hello"}]))
        registry.settle()
        positions = tmp_path / "state" / "positions.json"
        config = write_config({"auth_logs": [{"name": SOURCE, "path": registry.log_path, "format": "auto",
                                              "positions_file": str(positions), "interval": "200ms"}]})
        first = serve(config)
        first.wait_ready()
        # The push above happened before serve's first run: start_at end leaves it uncounted.
        assert auth_counters(first) == (0, 0, 0)

        traffic = Traffic(registry.url)
        traffic.run(good=12, bad=3, anonymous=5)
        registry.settle()
        registry.rename(registry.log_path + ".1")  # logrotate "create": rename ...
        traffic.run(good=5, bad=2, anonymous=2)  # ... the daemon still writes to the renamed file ...
        registry.settle()
        registry.reopen()  # ... until postrotate makes it reopen
        traffic.run(good=7, bad=4, anonymous=3)
        registry.settle()
        expected = (traffic.credentialed, traffic.wrong_password, traffic.anonymous)
        assert wait_for(first, expected) == expected

        traffic.run(good=9, bad=5, anonymous=4)
        before_kill = auth_counters(first)
        first.stop(signal.SIGKILL)  # mid-stream: some of these lines may have been counted, some not
        traffic.run(good=6, bad=3, anonymous=1)  # while serve is down ...
        registry.settle()
        registry.copytruncate(registry.log_path + ".2")  # ... the log is copytruncated
        traffic.run(good=4, bad=2, anonymous=2)
        registry.settle()

        second = serve(config)
        second.wait_ready()
        restarted = auth_counters(second)
        assert restarted[0] >= before_kill[0] and restarted[1] >= before_kill[1], "counters went back after restart"
        expected = (traffic.credentialed, traffic.wrong_password, traffic.anonymous)
        assert wait_for(second, expected) == expected
        # Spelled out: N good and M bad pulls each presented credentials once.
        good_pulls = 12 + 5 + 7 + 9 + 6 + 4
        bad_pulls = 3 + 2 + 4 + 5 + 3 + 2
        assert expected[:2] == (good_pulls + bad_pulls, bad_pulls)
        time.sleep(1.0)  # several more runs: nothing is counted twice
        assert auth_counters(second) == expected
    finally:
        registry.stop()
