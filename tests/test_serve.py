"""``regwatch serve`` end to end: a real registry, real HTTP, a real Prometheus."""

from __future__ import annotations

import contextlib
import gzip
import re
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest
import requests

from regwatch.images import build_image, push_image
from tests.conftest import log_events
from tests.helpers import samples, value
from tests.promserver import PrometheusServer

pytestmark = pytest.mark.servers


def target(registry, password_file, **extra) -> dict:
    return {"name": "hub", "kind": "distribution", "url": registry.url, "debug_url": registry.debug_url,
            "username": "alice", "password_file": str(password_file), "interval": "1s", "timeout": "5s", **extra}


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "hub-password"
    path.write_text("alice-secret\n")
    return path


def test_serve_exports_what_the_registry_holds(registry, registry_client, password_file, write_config, serve):
    # Five repositories and their tags, counted here, independently of regwatch.
    pushed_tags = 0
    for r in range(5):
        image = build_image([{"f": f"repo {r}".encode()}])
        for t in range(r + 1):
            push_image(registry_client, f"proj/repo{r}", f"t{t}", image)
            pushed_tags += 1
    config = write_config({"targets": [target(registry, password_file, page_size=2)]})
    proc = serve(config)
    proc.wait_ready()
    text = proc.metrics()
    assert value(text, "regwatch_target_up", target="hub", kind="distribution") == 1
    assert value(text, "regwatch_registry_repositories", target="hub") == 5
    assert value(text, "regwatch_registry_tags", target="hub") == pushed_tags
    assert value(text, "regwatch_registry_healthy", target="hub") == 1
    assert value(text, "regwatch_collector_success", target="hub", collector="distribution") == 1
    assert value(text, "regwatch_collector_last_success_timestamp_seconds", target="hub",
                 collector="distribution") == pytest.approx(time.time(), abs=30)
    assert any(k[0] == "regwatch_build_info" for k in samples(text))

    lint = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert requests.get(proc.url + "/healthz", timeout=5).status_code == 200
    landing = requests.get(proc.url + "/", timeout=5).text
    assert 'href="/metrics"' in landing
    # Each collector's row says when it last succeeded, as a UTC time and an age (tests/test_landing.py
    # checks the last-run column, which needs the runner's status() to carry last_run).
    row = re.search(r"<tr><td>hub</td><td>distribution</td>(.*?)</tr>", landing).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[0] == "ok", cells
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\)", cells[2]), cells
    om = requests.get(proc.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                      timeout=5)
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n") and om.text.count("# EOF") == 1
    raw = requests.get(proc.url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True).raw
    assert raw.headers["Content-Encoding"] == "gzip"
    assert b"regwatch_registry_tags" in gzip.decompress(raw.read())


def test_wrong_password_is_target_down_not_a_crash(registry, tmp_path, write_config, serve):
    bad = tmp_path / "bad-password"
    bad.write_text("wrong-hunter2")
    config = write_config({"targets": [target(registry, bad)]})
    proc = serve(config)
    proc.wait_ready()
    text = proc.metrics()
    assert value(text, "regwatch_target_up", target="hub", kind="distribution") == 0
    assert value(text, "regwatch_collector_success", target="hub", collector="distribution") == 0
    log = proc.log()
    failed = log_events(log, "collector failed")
    assert {e["collector"]: e["err"] for e in failed if e["target"] == "hub"} == {
        "distribution": "target hub: GET /v2/: the registry rejected user alice (from the config) (HTTP 401); "
                        "check the username and password (or token)"}
    assert "wrong-hunter2" not in log and "wrong-hunter2" not in text
    assert proc.proc.poll() is None  # still serving


class _SlowRegistry(BaseHTTPRequestHandler):
    """Answers /v2/ after 5 s, like an overloaded registry."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(5)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def slow_registry():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowRegistry)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_slow_target_delays_no_one(registry, password_file, slow_registry, tmp_path, write_config, serve):
    config = write_config({
        "targets": [target(registry, password_file),
                    {"name": "slow", "kind": "distribution", "url": slow_registry, "interval": "1s", "timeout": "2s"}],
        "storage": [{"name": "data", "path": str(tmp_path), "interval": "1s"}],
    })
    proc = serve(config)
    started = time.monotonic()
    # The healthy target and the volume are collected while the slow one is still waiting.
    while time.monotonic() - started < 4:
        text = proc.metrics()
        if value(text, "regwatch_target_up", target="hub", kind="distribution") == 1 and \
                value(text, "regwatch_storage_used_ratio", volume="data") is not None:
            break
        time.sleep(0.1)
    assert value(text, "regwatch_target_up", target="hub", kind="distribution") == 1
    assert value(text, "regwatch_target_up", target="slow", kind="distribution") is None  # still pending
    assert requests.get(proc.url + "/readyz", timeout=5).status_code == 503
    # A scrape is served from the snapshot while the slow collection runs.
    t0 = time.monotonic()
    requests.get(proc.url + "/metrics", timeout=5)
    assert time.monotonic() - t0 < 1.0
    # Past its 2 s timeout the slow target counts as down, with a reason in the log.
    proc.wait_ready(timeout=10)
    text = proc.metrics()
    assert value(text, "regwatch_target_up", target="slow", kind="distribution") == 0
    port = slow_registry.rsplit(":", 1)[1]
    errors = {e["err"] for e in log_events(proc.log(), "collector failed") if e["target"] == "slow"}
    assert errors == {f"target slow: GET /v2/: 127.0.0.1:{port} accepted the connection but did not answer within "
                      "2s; the registry (or a proxy in front of it) is hung or overloaded"}


def test_sigterm_stops_within_two_seconds(registry, password_file, write_config, serve):
    proc = serve(write_config({"targets": [target(registry, password_file)]}))
    proc.wait_ready()
    assert proc.stop() < 2.0
    assert proc.proc.returncode == 0


def test_storage_matches_df(tmp_path, write_config, serve):
    config = write_config({"storage": [{"name": "data", "path": str(tmp_path), "interval": "1s"},
                                       {"name": "gone", "path": str(tmp_path / "missing"), "interval": "1s"}]})
    proc = serve(config)
    proc.wait_ready()

    def df() -> tuple[int, int, int]:
        out = subprocess.run(["df", "-B1", "--output=size,used,avail", str(tmp_path)], capture_output=True,
                             text=True, check=True).stdout
        size, used, avail = (int(x) for x in out.split("\n")[1].split())
        return size, used, avail

    # Other tests (other xdist workers) write to the same file system. Compare only across a quiet
    # second: df before and after a collection interval agree within 1 MiB, and the scrape in between
    # shows a collection made inside it.
    for _ in range(30):
        before = df()
        time.sleep(1.2)
        text = proc.metrics()
        size, used, avail = df()
        if abs(used - before[1]) < 2**20:
            break
    else:
        pytest.fail("the file system under tmp_path never stayed quiet for a second")
    assert value(text, "regwatch_storage_capacity_bytes", volume="data") == size
    assert value(text, "regwatch_storage_used_bytes", volume="data") == pytest.approx(used, abs=2**20)
    assert value(text, "regwatch_storage_used_ratio", volume="data") == pytest.approx(used / (used + avail), abs=1e-3)
    # A missing path is a failed collector and a clear log line, not a crash.
    assert value(text, "regwatch_collector_success", target="gone", collector="storage") == 0
    assert value(text, "regwatch_storage_used_ratio", volume="gone") is None
    assert f"storage path {tmp_path / 'missing'} of volume gone does not exist" in proc.log()


def test_real_prometheus_scrapes_serve(registry, password_file, tmp_path, write_config, serve):
    proc = serve(write_config({"targets": [target(registry, password_file)]}))
    proc.wait_ready()
    with PrometheusServer(tmp_path / "prom", [proc.url.removeprefix("http://")]) as prom:
        result = prom.wait_for("regwatch_target_up == 1")
        assert result[0]["metric"]["target"] == "hub"
        assert result[0]["value"][1] == "1"
        assert prom.query('up{job="regwatch"}')[0]["value"][1] == "1"


def test_sighup_reloads_and_a_bad_config_keeps_the_last_good_one(registry, password_file, tmp_path, write_config,
                                                                   serve):
    import signal

    config = write_config({"targets": [target(registry, password_file)]}, name="live.yml")
    proc = serve(config)
    proc.wait_ready()
    assert value(proc.metrics(), "regwatch_config_last_reload_successful") == 1

    config.write_text("targets: [{name: hub, kind: quay}]\n")
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while value(proc.metrics(), "regwatch_config_last_reload_successful") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    text = proc.metrics()
    assert value(text, "regwatch_config_last_reload_successful") == 0
    assert value(text, "regwatch_target_up", target="hub", kind="distribution") == 1  # old config still runs
    assert "config reload failed; keeping the last good config" in proc.log()

    import yaml
    config.write_text(yaml.safe_dump({"storage": [{"name": "data", "path": str(tmp_path), "interval": "1s"}]}))
    proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while value(proc.metrics(), "regwatch_storage_used_ratio", volume="data") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    text = proc.metrics()
    assert value(text, "regwatch_config_last_reload_successful") == 1
    assert value(text, "regwatch_target_up", target="hub", kind="distribution") is None  # target removed
    assert proc.proc.poll() is None


@pytest.fixture
def many_open_files():
    """Let this test process hold a few thousand sockets (its clients), whatever its soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if want < 1100:
        pytest.skip(f"the open-files hard limit ({hard}) leaves no room for 1,000 client sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections: half send nothing, half send a request head without its end."""
    held = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            with contextlib.suppress(OSError):  # the server may already have closed it to make room
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: regwatch\r\n")
        held.append(sock)
    return held


@pytest.mark.parametrize("nofile", [None, 256], ids=["default-limit", "ulimit-n-256"])
def test_metrics_answers_and_sigterm_is_fast_with_1000_idle_connections(tmp_path, write_config, serve, nofile,
                                                                          many_open_files):
    proc = serve(write_config({"storage": [{"name": "data", "path": str(tmp_path), "interval": "1s"}]}),
                 nofile=nofile)
    proc.wait_ready()
    held = open_idle_connections(proc.port, 1000)
    try:
        server = psutil.Process(proc.proc.pid)
        # No thread per connection, and no more connections than the cap leaves descriptors for.
        assert server.num_threads() < 20, server.num_threads()
        cap = 512 if nofile is None else 256 - 64
        # A connection evicted for a new one closes on a later turn of serve's event loop, so right after
        # a burst of accepts (at most 16 a turn) the count can pass the cap by a few for a moment; once
        # the burst is taken, it is at most the cap.
        deadline = time.monotonic() + 10
        while True:
            established = [c for c in server.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED]
            if len(established) <= cap or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(established) <= cap, len(established)
        for _ in range(5):
            resp = requests.get(proc.url + "/metrics", timeout=1)  # a new connection each time
            assert resp.status_code == 200
            assert 'regwatch_storage_used_ratio{volume="data"}' in resp.text
    finally:
        elapsed = proc.stop()
        for sock in held:
            sock.close()
    assert proc.proc.returncode == 0
    assert elapsed < 2.0, elapsed
    log = proc.log()
    assert "Traceback" not in log and "Too many open files" not in log, log


def test_a_slow_loris_client_is_cut_off(tmp_path, write_config, serve):
    proc = serve(write_config({"storage": [{"name": "data", "path": str(tmp_path), "interval": "1s"}]}))
    proc.wait_ready()
    head = b"GET /metrics HTTP/1.1\r\nHost: regwatch\r\n\r\n"
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        started = time.monotonic()
        while sent < len(head) and time.monotonic() - started < 30:
            sock.sendall(head[sent:sent + 1])  # one byte every 2 s
            sent += 1
            if select.select([sock], [], [], 2.0)[0]:
                while chunk := sock.recv(4096):
                    answer += chunk
                break
    # Cut off 5 s after its first byte, with a reason, long before its request was complete.
    assert sent <= 4, sent
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert b"\r\nConnection: close\r\n" in rest
    assert rest.endswith(b"\r\n\r\nrequest head not received within 5s\n"), answer
    assert requests.get(proc.url + "/metrics", timeout=5).status_code == 200


def test_a_burst_of_sighups_is_survived_and_sigterm_still_stops(registry, password_file, write_config, serve):
    config = write_config({"targets": [target(registry, password_file)]})
    proc = serve(config)
    proc.wait_ready()
    for _ in range(50):
        proc.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while proc.log().count("config reloaded") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.wait_ready()
    text = proc.metrics()
    assert value(text, "regwatch_config_last_reload_successful") == 1
    assert value(text, "regwatch_target_up", target="hub", kind="distribution") == 1
    assert "config reload failed" not in proc.log()
    proc.stop()
    assert proc.proc.returncode == 0


class _BigRunner:
    """Stands in for the runner: a 14 MB exposition, more than the kernel's socket buffers hold."""

    body = b"".join(f'regwatch_big{{n="{i:09d}"}} {i}\n'.encode() for i in range(400_000))

    def exposition(self, openmetrics=False, gzipped=False):
        return self.body


def test_a_large_response_arrives_whole_and_a_client_that_never_reads_is_dropped():
    from regwatch.server import Limits, MetricsServer

    server = MetricsServer(_BigRunner(), "127.0.0.1", 0, Limits(write_timeout=1.0))
    server.start()
    try:
        host, port = server.address
        resp = requests.get(f"http://{host}:{port}/metrics", headers={"Accept-Encoding": "identity"}, timeout=10)
        assert resp.content == _BigRunner.body and len(resp.content) > 13_000_000
        # A client that asks and never reads: after write_timeout its connection is closed (a reset
        # or an end of stream where the rest of the body should be), and others are served meanwhile.
        with socket.socket() as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            stuck.connect((host, port))
            stuck.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            assert requests.get(f"http://{host}:{port}/healthz", timeout=2).text == "ok\n"
            time.sleep(2.5)
            received = 0
            stuck.settimeout(5)
            try:
                while chunk := stuck.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert 0 < received < len(_BigRunner.body)
    finally:
        server.stop()
