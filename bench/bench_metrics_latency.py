"""/metrics latency of ``regwatch serve`` while a target is slow (answers after 5 s).

Starts a real docker-registry (with 20 repositories) and a registry stand-in that answers
every request after 5 seconds, runs ``regwatch serve`` on both as a subprocess, and scrapes
/metrics as fast as it can for 15 seconds from one thread, the way Prometheus does, while
the slow target's collections are in flight. Prints p50/p99/max, and how long serve takes
from SIGTERM to exit while that collection is still in flight.

    .venv/bin/python bench/bench_metrics_latency.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from regwatch.localregistry import LocalRegistry, free_port, wait_for_port


class Slow(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(5)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        run(Path(tmp), args.seconds)


def run(work: Path, seconds: float) -> None:
    slow = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    with LocalRegistry(work / "reg") as reg:
        with RegistryClient(reg.url) as client:
            for i in range(20):
                push_image(client, f"bench/repo{i}", "v1", build_image([{"f": str(i).encode()}]))
        port = free_port()
        config = {
            "targets": [
                {"name": "fast", "kind": "distribution", "url": reg.url, "interval": "1s"},
                {"name": "slow", "kind": "distribution", "url": f"http://127.0.0.1:{slow.server_address[1]}",
                 "interval": "1s", "timeout": "10s"},
            ],
            "storage": [{"name": "data", "path": str(work), "interval": "1s"}],
        }
        (work / "c.yml").write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([sys.executable, "-m", "regwatch", "serve", "--config", str(work / "c.yml"),
                                 "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, 20)
            time.sleep(1.5)  # the slow target's first collection is now in flight
            conn = HTTPConnection("127.0.0.1", port, timeout=10)
            latencies = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                latencies.append(time.perf_counter() - t0)
            assert b'regwatch_target_up{kind="distribution",target="fast"} 1.0' in body
        finally:
            t0 = time.monotonic()
            proc.terminate()
            proc.wait(10)
            sigterm = time.monotonic() - t0
    slow.shutdown()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731 - a one-line percentile
    print(f"/metrics while one target answers after 5 s ({len(latencies)} scrapes over {seconds:g}s, "
          f"{len(body)} bytes each)")
    print(f"  p50 {p(0.50):.2f} ms   p99 {p(0.99):.2f} ms   max {latencies[-1] * 1000:.2f} ms   "
          f"mean {statistics.mean(latencies) * 1000:.2f} ms")
    print(f"  goal p99 < 20 ms: {'met' if p(0.99) < 20 else 'NOT met'}")
    print(f"SIGTERM to exit with the slow target's collection in flight: {sigterm:.3f} s")


if __name__ == "__main__":
    main()
