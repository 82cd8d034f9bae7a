"""Benchmark: `regwatch serve` against a big, slow fake Harbor.

Acceptance (issue 4): with 10,000 projects, 100,000 repositories and 20 ms per API call, one full
collection cycle (every Harbor job has run once: /readyz turns 200) finishes in under 60 s with
default settings, serve stays under 150 MB RSS, and /metrics p99 stays under 50 ms while the
collection runs.

The peer: c4po/harbor_exporter (Go) cannot be installed here (no internet), so the comparison is
its algorithm run side by side in this process against the same fake: list /projects and
/repositories one page after another (page_size 100, stop when page*size >= X-Total-Count).

    .venv/bin/python bench/bench_harbor.py [--projects 10000] [--repositories 100000] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regwatch.client import RegistryClient  # noqa: E402 - after the sys.path line
from regwatch.localregistry import free_port, wait_for_port  # noqa: E402 - after the sys.path line
from tests.fakes.harbor import FakeHarbor  # noqa: E402 - after the sys.path line


def c4po_style(fake: FakeHarbor) -> float:
    """Sequential paging as c4po/harbor_exporter does it, for /projects and /repositories."""
    started = time.monotonic()
    with RegistryClient(fake.url, username="admin", password="Harbor12345") as client:
        for path in ("/api/v2.0/projects", "/api/v2.0/repositories"):
            page = 1
            while True:
                resp = client.request("GET", path, params={"page": page, "page_size": 100}, preemptive_basic=True)
                resp.json()
                if page * 100 >= int(resp.headers["X-Total-Count"]):
                    break
                page += 1
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--repositories", type=int, default=100_000)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds per API call")
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()

    fake = FakeHarbor(projects=args.projects, repositories=args.repositories, delay=args.delay, record=False)
    fake.start()
    for _ in range(20):
        fake.add_audit("login", resource_type="user", result=False)
    work = Path(tempfile.mkdtemp(prefix="bench-harbor-"))
    (work / "pw").write_text("Harbor12345")
    config = work / "config.yml"
    config.write_text(yaml.safe_dump({"targets": [{
        "name": "harbor", "kind": "harbor", "url": fake.url, "username": "admin",
        "password_file": str(work / "pw"), "interval": "5m"}]}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - closed in the finally below
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "regwatch", "serve", "--config", str(config), "--listen",
                             f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        if not wait_for_port("127.0.0.1", port, 30, proc):
            raise SystemExit(f"serve did not start; see {work / 'serve.log'}")
        ps = psutil.Process(proc.pid)
        latencies: list[float] = []
        peak_rss = [0]
        stop = threading.Event()

        def sample_rss() -> None:
            while not stop.is_set():
                peak_rss[0] = max(peak_rss[0], ps.memory_info().rss)
                stop.wait(0.1)

        threading.Thread(target=sample_rss, daemon=True).start()
        session = requests.Session()
        cycle = None
        size = 0
        while time.monotonic() - started < 300:
            t0 = time.perf_counter()
            resp = session.get(url + "/metrics", timeout=10)
            latencies.append(time.perf_counter() - t0)
            size = len(resp.content)
            if session.get(url + "/readyz", timeout=10).status_code == 200:
                cycle = time.monotonic() - started
                break
            time.sleep(0.05)
        # A few more scrapes of the full exposition once everything is in.
        after = []
        for _ in range(50):
            t0 = time.perf_counter()
            size = len(session.get(url + "/metrics", timeout=10).content)
            after.append(time.perf_counter() - t0)
        stop.set()
        status = requests.get(url + "/metrics", timeout=10).text
        failed = [line for line in status.splitlines()
                  if line.startswith("regwatch_collector_success{") and line.endswith(" 0.0")]
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    api_calls = sum(fake.calls.values())
    peer = None if args.skip_peer else c4po_style(fake)
    fake.stop()

    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]

    print(f"fake Harbor: {args.projects} projects, {args.repositories} repositories, {args.delay * 1000:g} ms/call")
    print(f"{'figure':<48}{'value':>14}{'goal':>12}")
    rows = [
        ("full collection cycle (all jobs ran once), s", f"{cycle:.1f}" if cycle else "> 300", "< 60"),
        ("Harbor API calls in that cycle", f"{api_calls}", ""),
        ("serve peak RSS, MB", f"{peak_rss[0] / 1e6:.0f}", "< 150"),
        (f"/metrics p99 while collecting ({len(latencies)} scrapes), ms", f"{p99(latencies) * 1000:.1f}", "< 50"),
        (f"/metrics p99 after ({len(after)} scrapes, {size / 1e6:.1f} MB), ms", f"{p99(after) * 1000:.1f}", ""),
        ("failed collectors", f"{len(failed)}", "0"),
    ]
    if peer is not None:
        rows.append(("peer: c4po-style sequential /projects+/repositories, s", f"{peer:.1f}", ""))
        if cycle:
            rows.append(("ratio peer listing time / regwatch full cycle", f"{peer / cycle:.1f}x", ""))
    for name, value, goal in rows:
        print(f"{name:<48}{value:>14}{goal:>12}")
    for line in failed:
        print("  failed:", line)


if __name__ == "__main__":
    main()
