"""Scale-out: how many targets move when a shard is added, regwatch's rendezvous hashing vs Prometheus hashmod.

The peer is Prometheus's own way of sharding scrape targets (and the Prometheus Operator's
``shards``): ``hashmod`` relabeling, i.e. md5(address) mod N. A real Prometheus is started with
one scrape job per (N, shard) over the same target list, and which targets each job keeps is
read from its /api/v1/targets. regwatch's assignment is read from real ``regwatch serve --shard``
processes for the 30-target case (their /metrics), and from ``regwatch.sharding`` for the
larger lists (the tests check the two agree). Prints, per target count and step N -> N+1, the
share of targets that changed shard (ideal: 1/(N+1)) and the largest shard over the mean.

    .venv/bin/python bench/bench_sharding.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regwatch.sharding import shard_of
from regwatch.localregistry import free_port, wait_for_port

STEPS = [(2, 3), (3, 4), (4, 5), (8, 9)]
COUNTS = [30, 1000]


def address(i: int) -> str:
    return f"registry-{i:04d}.example.invalid:5000"


def prometheus_assignment(work: Path, counts: list[int], shard_counts: set[int]) -> dict[tuple[int, int], dict]:
    """{(targets, N): {address: shard}} as a real Prometheus's hashmod relabeling decides it."""
    jobs = []
    for count in counts:
        targets = [address(i) for i in range(count)]
        for n in sorted(shard_counts):
            for shard in range(n):
                jobs.append({
                    "job_name": f"t{count}-n{n}-s{shard}", "scrape_interval": "1h",
                    "static_configs": [{"targets": targets}],
                    "relabel_configs": [
                        {"source_labels": ["__address__"], "modulus": n, "target_label": "__tmp_hash",
                         "action": "hashmod"},
                        {"source_labels": ["__tmp_hash"], "regex": str(shard), "action": "keep"}]})
    (work / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1h"}, "scrape_configs": jobs}))
    port = free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, 30, proc), "prometheus did not start"
        expected = sum(count * len(shard_counts) for count in counts)
        deadline = time.monotonic() + 60
        while True:
            response = requests.get(f"http://127.0.0.1:{port}/api/v1/targets?state=active", timeout=10)
            active = response.json()["data"]["activeTargets"] if response.status_code == 200 else []
            if len(active) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(10)
    out: dict[tuple[int, int], dict] = {}
    for target in active:
        count, n, shard = (int(part[1:]) for part in target["labels"]["job"].split("-"))
        out.setdefault((count, n), {})[target["labels"]["instance"]] = shard
    return out


def regwatch_serve_assignment(work: Path, count: int, n: int) -> dict[str, int]:
    """{target: shard} as real ``regwatch serve --shard i/n`` processes export it."""
    config = work / f"config-{count}.yml"
    config.write_text(yaml.safe_dump({"targets": [
        {"name": address(i).split(".")[0], "kind": "distribution", "url": f"http://127.0.0.1:9/{i}",
         "timeout": "1s"} for i in range(count)]}))
    out: dict[str, int] = {}
    procs = []
    for shard in range(n):
        port = free_port()
        procs.append((shard, port, subprocess.Popen(
            [sys.executable, "-m", "regwatch", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
             "--shard", f"{shard}/{n}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    try:
        for shard, port, proc in procs:
            assert wait_for_port("127.0.0.1", port, 30, proc)
            deadline = time.monotonic() + 30
            while requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "serve not ready"
                time.sleep(0.1)
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                if family.name == "regwatch_target_up":
                    for sample in family.samples:
                        out[sample.labels["target"]] = shard
    finally:
        for _, _, proc in procs:
            proc.terminate()
            proc.wait(10)
    return out


def moved(before: dict, after: dict) -> float:
    return sum(before[k] != after[k] for k in before) / len(before)


def imbalance(assignment: dict, n: int) -> float:
    sizes = [0] * n
    for shard in assignment.values():
        sizes[shard] += 1
    return max(sizes) / (len(assignment) / n)


def main() -> None:
    shard_counts = {n for step in STEPS for n in step}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-sharding-") as tmp:
        work = Path(tmp)
        prom = prometheus_assignment(work, COUNTS, shard_counts)
        serve = {n: regwatch_serve_assignment(work, 30, n) for n in (3, 4)}
    ours = {(count, n): {address(i).split(".")[0]: shard_of(address(i).split(".")[0], n) for i in range(count)}
            for count in COUNTS for n in shard_counts}
    assert serve[3] == ours[(30, 3)] and serve[4] == ours[(30, 4)], "serve --shard disagrees with regwatch.sharding"
    print(f"{'targets':>7} {'step':>6} {'ideal':>6} | {'regwatch moved':>14} {'hashmod moved':>13} {'ratio':>6} |"
          f" {'regwatch max/mean':>17} {'hashmod max/mean':>16}")
    for count in COUNTS:
        for a, b in STEPS:
            if (count, a) not in prom or len(prom[(count, a)]) != count or len(prom[(count, b)]) != count:
                print(f"{count:>7} {a}->{b}: prometheus did not report every target")
                continue
            ours_moved = moved(serve[3], serve[4]) if (count, a, b) == (30, 3, 4) else \
                moved(ours[(count, a)], ours[(count, b)])
            peer_moved = moved(prom[(count, a)], prom[(count, b)])
            print(f"{count:>7} {a:>2}->{b:<2} {1 / b:>6.2f} | {ours_moved:>14.2f} {peer_moved:>13.2f}"
                  f" {peer_moved / ours_moved if ours_moved else float('inf'):>6.1f} |"
                  f" {imbalance(ours[(count, b)], b):>17.2f} {imbalance(prom[(count, b)], b):>16.2f}")
    print(f"(30 targets 3->4: regwatch from real `regwatch serve --shard` /metrics; hashmod from a real "
          f"Prometheus {prometheus_version()}; {time.monotonic() - started:.0f} s)")


def prometheus_version() -> str:
    out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split()[2]


if __name__ == "__main__":
    main()
