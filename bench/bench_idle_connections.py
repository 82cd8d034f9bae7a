"""/metrics latency and SIGTERM time of ``regwatch serve`` while 1,000 idle connections are held open.

Starts a real docker-registry (20 repositories) and ``regwatch serve`` watching it and a
volume, as a subprocess, once with the machine's open-files limit and once under
``ulimit -n 256``. For each: scrapes /metrics for ``--seconds`` on one kept-alive connection
(as Prometheus does) with no idle connections, then opens 1,000 connections (half send
nothing, half send a request head without its end) and scrapes again, on a kept-alive
connection and with a new connection per scrape; then times SIGTERM to exit.
Side by side in the same run: Debian's prometheus-blackbox-exporter (Go's net/http, a
goroutine per connection), scraped on its own /metrics the same way.

    .venv/bin/python bench/bench_idle_connections.py [--seconds 10] [--idle 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import subprocess
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from regwatch.localregistry import LocalRegistry, free_port, wait_for_port


def limit_open_files(count: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def scrape(port: int, seconds: float, keep_alive: bool) -> tuple[list[float], int, int]:
    """(sorted latencies, bytes of the last body, failed scrapes) over ``seconds``."""
    latencies, failures, size = [], 0, 0
    conn = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/metrics")
            size = len(conn.getresponse().read())
            latencies.append(time.perf_counter() - t0)
        except OSError:
            failures += 1
            conn = None
            continue
        if not keep_alive:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return sorted(latencies), size, failures


def hold_idle(port: int, count: int) -> list[socket.socket]:
    held = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            with contextlib.suppress(OSError):  # the server may already have closed it
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n")
        held.append(sock)
    return held


def pct(latencies: list[float], q: float) -> float:
    return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")


def row(name: str, result: tuple[list[float], int, int]) -> str:
    lat, size, failures = result
    return (f"  {name:<44} n={len(lat):<6} p50 {pct(lat, 0.5):7.2f} ms  p99 {pct(lat, 0.99):7.2f} ms  "
            f"max {lat[-1] * 1000 if lat else float('nan'):8.2f} ms  failed {failures}  ({size} bytes)")


def measure(name: str, argv: list[str], port: int, seconds: float, idle: int, nofile: int | None) -> dict:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=limit_open_files(nofile) if nofile else None)
    try:
        if not wait_for_port("127.0.0.1", port, 20, proc):
            raise SystemExit(f"{name} did not start")
        time.sleep(2)  # first collections done
        out = {"baseline": scrape(port, seconds, keep_alive=True)}
        held = hold_idle(port, idle)
        try:
            ps = psutil.Process(proc.pid)
            out["threads"], out["fds"] = ps.num_threads(), ps.num_fds()
            out["idle keep-alive"] = scrape(port, seconds, keep_alive=True)
            out["idle new-conn"] = scrape(port, seconds, keep_alive=False)
            t0 = time.monotonic()
            proc.terminate()
            proc.wait(60)
            out["sigterm"] = time.monotonic() - t0
        finally:
            for sock in held:
                sock.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.idle * 2 + 200)), hard))
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        run(Path(tmp), args.seconds, args.idle, soft)


def run(work: Path, seconds: float, idle: int, soft: int) -> None:
    results = []
    with LocalRegistry(work / "reg") as reg:
        with RegistryClient(reg.url) as client:
            for i in range(20):
                push_image(client, f"bench/repo{i}", "v1", build_image([{"f": str(i).encode()}]))
        config = {"targets": [{"name": "fast", "kind": "distribution", "url": reg.url, "interval": "5s"}],
                  "storage": [{"name": "data", "path": str(work), "interval": "5s"}]}
        (work / "c.yml").write_text(yaml.safe_dump(config))
        (work / "blackbox.yml").write_text(yaml.safe_dump({"modules": {"http_2xx": {"prober": "http"}}}))
        for nofile in (None, 256):
            port = free_port()
            serve = [sys.executable, "-m", "regwatch", "serve", "--config", str(work / "c.yml"), "--listen",
                     f"127.0.0.1:{port}"]
            results.append((f"regwatch serve, ulimit -n {nofile or soft}", measure("serve", serve, port, seconds,
                                                                                 idle, nofile)))
            port = free_port()
            blackbox = ["prometheus-blackbox-exporter", f"--web.listen-address=127.0.0.1:{port}",
                        f"--config.file={work / 'blackbox.yml'}"]
            results.append((f"blackbox_exporter 0.23, ulimit -n {nofile or soft}",
                            measure("blackbox_exporter", blackbox, port, seconds, idle, nofile)))
    print(f"/metrics while {idle} idle connections are held open (half silent, half a request head without "
          f"its end); {seconds:g} s of scrapes each")
    for name, out in results:
        print(f"{name}: {out['threads']} threads and {out['fds']} descriptors with the idle connections open; "
              f"SIGTERM to exit {out['sigterm']:.3f} s")
        for key in ("baseline", "idle keep-alive", "idle new-conn"):
            label = {"baseline": "no idle connections, kept-alive scrapes",
                     "idle keep-alive": f"{idle} idle, kept-alive scrapes",
                     "idle new-conn": f"{idle} idle, a new connection per scrape"}[key]
            print(row(label, out[key]))
    ours = dict(results)
    for nofile in (soft, 256):
        a = ours[f"regwatch serve, ulimit -n {nofile}"]["idle keep-alive"][0]
        b = ours[f"blackbox_exporter 0.23, ulimit -n {nofile}"]["idle keep-alive"][0]
        if a and b:
            print(f"p99 ratio regwatch/blackbox_exporter with {idle} idle, ulimit -n {nofile}: "
                  f"{pct(a, 0.99) / pct(b, 0.99):.2f}")
        elif a:
            print(f"with {idle} idle, ulimit -n {nofile}: blackbox_exporter answered no scrape (its descriptors "
                  "ran out), regwatch answered every one")


if __name__ == "__main__":
    main()
