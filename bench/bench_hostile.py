"""Peak RSS of ``regwatch serve`` while hostile registries stream at it, against its baseline.

Three registries from tests/fakes/hostile.py: one whose ``_catalog`` is endless valid JSON, one whose
``/v2/`` is an endless body, and one whose catalog trickles a byte every 50 ms. ``regwatch serve``
watches all three (interval 1s, timeout 5s) for ``--seconds``; the bench samples serve's RSS every
50 ms and prints the peak, beside the RSS of the same serve watching one well-behaved registry.
The goal (issue 18) is a peak under 300 MB; before the client bounded its reads, an endless body took
serve past 3 GB within seconds.

    .venv/bin/python bench/bench_hostile.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regwatch.localregistry import free_port, wait_for_port
from tests.fakes.hostile import HostileServer, Reply, endless, json_endless_catalog, trickle


def peak_rss(config: dict, seconds: float, workdir: Path) -> tuple[float, int]:
    path = workdir / f"config-{len(list(workdir.iterdir()))}.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "regwatch", "serve", "--config", str(path), "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        process = psutil.Process(proc.pid)
        peak, samples, end = 0, 0, time.monotonic() + seconds
        while time.monotonic() < end:
            peak = max(peak, process.memory_info().rss)
            samples += 1
            time.sleep(0.05)
        return peak / (1 << 20), samples
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    servers = [
        HostileServer({"/v2/": Reply(200), "/v2/_catalog": Reply(200, {}, chunks=json_endless_catalog())}).start(),
        HostileServer({"/v2/": Reply(200, {}, chunks=endless())}).start(),
        HostileServer({"/v2/": Reply(200), "/v2/_catalog": Reply(200, {}, chunks=trickle(b"{" * 100_000),
                                                                 delay=0.05)}).start(),
    ]
    calm = HostileServer({"/v2/": Reply(200), "/v2/_catalog": Reply(200, {}, b'{"repositories": []}')}).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            base, _ = peak_rss({"targets": [{"name": "calm", "kind": "distribution", "url": calm.url,
                                             "interval": "1s", "timeout": "5s"}]}, args.seconds, workdir)
            hostile, samples = peak_rss({"targets": [
                {"name": f"evil{i}", "kind": "distribution", "url": s.url, "interval": "1s", "timeout": "5s"}
                for i, s in enumerate(servers)]}, args.seconds, workdir)
        sent = sum(len(s.seen) for s in servers)
        print(f"serve peak RSS over {args.seconds:g}s ({samples} samples):")
        print(f"  one well-behaved registry:                       {base:7.1f} MiB")
        print(f"  endless catalog + endless /v2/ + trickling body: {hostile:7.1f} MiB  ({sent} requests answered)")
        print(f"  goal: under 300 MiB -> {'met' if hostile < 300 else 'NOT met'}")
    finally:
        for server in [*servers, calm]:
            server.stop()


if __name__ == "__main__":
    main()
