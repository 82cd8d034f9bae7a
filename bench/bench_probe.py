"""The cost of one pull-latency probe, side by side with blackbox_exporter's http prober.

Starts a real docker-registry (htpasswd auth) holding a 10 MB image (one 10 MB layer of random
bytes), and the Debian ``prometheus-blackbox-exporter`` with an ``http`` module that GETs the
same manifest URL (Basic auth, the manifest Accept header). Then, one after the other:

- regwatch manifest-only probes and full probes, run in this process as ``serve`` runs them
  (CPU: this thread's CPU time);
- blackbox ``/probe`` requests for the manifest URL, and for the layer's blob URL (the closest it
  comes to a pull: one URL, no digest check) (CPU: the exporter process's CPU time from /proc);
- ``regwatch probe`` as a command (CPU: the child's rusage; Python start-up included).

Prints median wall time and mean CPU time per probe, and what each answer tells a user.

    .venv/bin/python bench/bench_probe.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regwatch.credentials import Credentials
from regwatch.client import MANIFEST_ACCEPT, RegistryClient
from regwatch.images import build_image, push_image
from regwatch.localregistry import LocalRegistry, free_port, wait_for_port
from regwatch.probes import Prober, ProbeSpec

LAYER_BYTES = 10 * 1024 * 1024


def regwatch_runs(spec: ProbeSpec, runs: int) -> tuple[list[float], list[float], object]:
    prober = Prober()
    walls, cpus, last = [], [], None
    for _ in range(runs):
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        last = prober.probe(spec)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.thread_time() - cpu0)
        assert last.success, last.message
    return walls, cpus, last


def blackbox_runs(bb_port: int, bb_pid: int, target: str, runs: int) -> tuple[list[float], list[float], str]:
    proc = psutil.Process(bb_pid)
    url = f"http://127.0.0.1:{bb_port}/probe?module=registry&target={urllib.request.quote(target, safe='')}"
    walls, cpus, body = [], [], ""
    for _ in range(runs):
        t0 = proc.cpu_times()
        wall0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read().decode()
        walls.append(time.perf_counter() - wall0)
        t1 = proc.cpu_times()
        cpus.append((t1.user + t1.system) - (t0.user + t0.system))
        assert "probe_success 1" in body, body
    return walls, cpus, body


def cli_runs(ref: str, runs: int, extra: list[str]) -> tuple[list[float], list[float]]:
    env = {**os.environ, "REGWATCH_USERNAME": "alice", "REGWATCH_PASSWORD": "alice-secret"}
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "regwatch", "probe", ref, "--json", *extra], env=env, check=True,
                       capture_output=True)
        walls.append(time.perf_counter() - wall0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
    return walls, cpus


def row(name: str, walls: list[float], cpus: list[float], tells: str) -> str:
    return (f"{name:<44} {1000 * statistics.median(walls):>9.1f} {1000 * statistics.mean(cpus):>9.1f}   {tells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    runs = args.runs
    with tempfile.TemporaryDirectory() as tmp, \
            LocalRegistry(Path(tmp) / "registry", users={"alice": "alice-secret"}) as reg:
        client = RegistryClient(reg.url, username="alice", password="alice-secret")
        image = build_image([{"payload": os.urandom(LAYER_BYTES)}])
        # gzip of random bytes is slightly larger than 10 MB: the layer as stored is what a pull moves.
        push_image(client, "bench/app", "1", image)
        manifest_url = f"{reg.url}/v2/bench/app/manifests/1"
        blob_url = f"{reg.url}/v2/bench/app/blobs/{image.layers[0].digest}"

        bb_config = Path(tmp) / "blackbox.yml"
        bb_config.write_text(yaml.safe_dump({"modules": {"registry": {"prober": "http", "timeout": "30s", "http": {
            "method": "GET", "headers": {"Accept": MANIFEST_ACCEPT}, "valid_status_codes": [200],
            "preferred_ip_protocol": "ip4", "basic_auth": {"username": "alice", "password": "alice-secret"}}}}}))
        bb_port = free_port()
        bb = subprocess.Popen(["prometheus-blackbox-exporter", f"--config.file={bb_config}",
                               f"--web.listen-address=127.0.0.1:{bb_port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        try:
            if not wait_for_port("127.0.0.1", bb_port, 15, bb):
                sys.exit("prometheus-blackbox-exporter did not start; is the Debian package installed?")
            spec = dict(credentials=Credentials(username="alice", password="alice-secret"), timeout=30)
            # Warm-up: first runs pay page-cache misses on the registry side for both tools.
            regwatch_runs(ProbeSpec(reg.url, "bench/app", "1", mode="full", **spec), 2)
            blackbox_runs(bb_port, bb.pid, blob_url, 2)

            rw_manifest = regwatch_runs(ProbeSpec(reg.url, "bench/app", "1", mode="manifest", **spec), runs)
            rw_full = regwatch_runs(ProbeSpec(reg.url, "bench/app", "1", mode="full", **spec), max(5, runs // 3))
            bb_manifest = blackbox_runs(bb_port, bb.pid, manifest_url, runs)
            bb_blob = blackbox_runs(bb_port, bb.pid, blob_url, max(5, runs // 3))
            ref = f"{reg.url}/bench/app:1"
            cli_manifest = cli_runs(ref, max(3, runs // 6), ["--mode", "manifest"])
            cli_full = cli_runs(ref, max(3, runs // 6), ["--mode", "full"])
        finally:
            bb.terminate()
            bb.wait(10)

    size_mb = (rw_full[2].image_bytes or 0) / 1e6
    print(f"\nOne probe of a {size_mb:.1f} MB image on a real docker-registry over loopback "
          f"({runs} manifest probes, {len(rw_full[0])} full probes; median wall, mean CPU per probe)\n")
    print(f"{'probe':<44} {'wall ms':>9} {'CPU ms':>9}   what the answer tells a user")
    print("-" * 130)
    print(row("regwatch manifest-only (in serve)", *rw_manifest[:2],
              "ping+auth+manifest+platform, digest checked, 9 phases"))
    print(row("regwatch full pull (in serve)", *rw_full[:2],
              "every byte of config+layers pulled and sha256-verified, 9 phases"))
    print(row("blackbox http: same manifest URL", *bb_manifest[:2],
              "one GET: status, 5 phases (resolve/connect/tls/processing/transfer)"))
    print(row("blackbox http: the 10 MB layer's blob URL", *bb_blob[:2],
              "one GET of one blob, bytes counted, no digest check"))
    print(row("`regwatch probe --mode manifest` (command)", *cli_manifest, "as above, plus Python start-up"))
    print(row("`regwatch probe --mode full` (command)", *cli_full, "as above, plus Python start-up"))
    print()
    ratio_wall = statistics.median(rw_manifest[0]) / statistics.median(bb_manifest[0])
    ratio_cpu = statistics.mean(rw_manifest[1]) / statistics.mean(bb_manifest[1])
    print(f"manifest probe, regwatch / blackbox: wall x{ratio_wall:.2f}, CPU x{ratio_cpu:.2f} "
          "(regwatch makes 2 requests, ping and manifest; blackbox 1)")
    full_ratio = statistics.median(rw_full[0]) / statistics.median(bb_blob[0])
    print(f"full pull / blackbox blob GET: wall x{full_ratio:.2f}, CPU x"
          f"{statistics.mean(rw_full[1]) / statistics.mean(bb_blob[1]):.2f} (regwatch also hashes every byte)")
    print("\nregwatch phases of the last full probe (s):",
          {k: round(v, 4) for k, v in rw_full[2].phases.items()})
    durations = [line for line in bb_manifest[2].splitlines() if line.startswith("probe_http_duration_seconds{")]
    print("blackbox phases of the last manifest probe (s):",
          {line.split('"')[1]: round(float(line.split()[-1]), 4) for line in durations})


if __name__ == "__main__":
    main()
