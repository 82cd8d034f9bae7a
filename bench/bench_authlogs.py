"""Auth-log parsing speed and memory: regwatch vs mtail on the same real-format registry log.

1. Starts a real docker-registry with htpasswd auth, sends good, wrong-password and
   anonymous requests, and keeps the lines it logged (app log + access log) as templates.
2. Writes a log of 1,000,000 lines (and one of 2,000,000 for the memory check) by repeating
   those real lines with fresh request ids; 2 % of the requests have a wrong password.
3. Counts attempts and failures in it with regwatch's authlogs collector (a subprocess,
   reading from the beginning) and with ``mtail --one_shot`` running the equivalent program,
   timing the wall clock of each, and checks that both counted exactly what was generated.

    .venv/bin/python bench/bench_authlogs.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MTAIL_PROGRAM = r'''
counter regwatch_auth_requests_total
counter regwatch_auth_failures_total by reason

/msg="authorized request"/ {
  regwatch_auth_requests_total++
}
/msg="error authorizing context: .*: authentication failure"/ {
  regwatch_auth_requests_total++
  regwatch_auth_failures_total["bad_credentials"]++
}
'''


def capture_templates(workdir: Path) -> dict[str, list[str]]:
    """Real lines of one good, one wrong-password and one anonymous request, from a real registry."""
    from regwatch.localregistry import LocalRegistry

    groups: dict[str, list[str]] = {}
    with LocalRegistry(workdir, users={"alice": "alice-secret"}, debug=False) as reg:
        for kind, auth in (("good", ("alice", "alice-secret")), ("bad", ("alice", "wrong")), ("anon", None)):
            before = reg.log_path.stat().st_size
            requests.get(reg.url + "/v2/lib/app/tags/list", auth=auth, timeout=10)
            time.sleep(0.3)
            with open(reg.log_path, "rb") as handle:
                handle.seek(before)
                groups[kind] = handle.read().decode().splitlines()
    return groups


def write_log(path: Path, groups: dict[str, list[str]], lines: int, failure_share: float) -> tuple[int, int]:
    """Repeat the real request groups (fresh request ids) up to ``lines`` lines; returns (attempts, failures)."""
    uuid_re = re.compile(r"http\.request\.id=[0-9a-f-]{36}")
    rng = random.Random(42)
    attempts = failures = written = 0
    with open(path, "w") as out:
        buf = []
        while written < lines:
            roll = rng.random()
            kind = "bad" if roll < failure_share else ("anon" if roll < failure_share + 0.05 else "good")
            group = groups[kind]
            if written + len(group) > lines:
                group = [groups["good"][-1]] * (lines - written)  # access-log lines fill the rest
                kind = "fill"
            rid = f"http.request.id={uuid.UUID(int=rng.getrandbits(128))}"
            buf.extend(uuid_re.sub(rid, line) for line in group)
            written += len(group)
            attempts += kind in ("good", "bad")
            failures += kind == "bad"
            if len(buf) > 10000:
                out.write("\n".join(buf) + "\n")
                buf = []
        if buf:
            out.write("\n".join(buf) + "\n")
    return attempts, failures


def regwatch_worker(log_path: str) -> None:
    """Run in a subprocess: count the whole file with the authlogs collector; print JSON."""
    from regwatch.collectors.authlogs import AuthLogCollector
    from regwatch.config import AuthLogConfig

    collector = AuthLogCollector(AuthLogConfig(name="bench", path=log_path, format="distribution",
                                               start_at="beginning"))
    started = time.perf_counter()
    while True:
        collector.collect()
        if collector.follower.lag_bytes() == 0:
            break
    elapsed = time.perf_counter() - started
    totals = collector.totals
    print(json.dumps({"seconds": elapsed, "lines": totals.lines, "attempts": totals.requests,
                      "failures": sum(totals.failures.values()),
                      "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def run_regwatch(log_path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", str(log_path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_mtail(log_path: Path, progs: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(["mtail", "--one_shot", "--one_shot_format", "json", "--logs", str(log_path),
                           "--progs", str(progs), "--logtostderr"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mtail failed:\n{proc.stderr[-2000:]}")
    metrics = json.loads(proc.stdout[proc.stdout.find("{"):])
    values = {}
    for name, entries in metrics.items():
        for entry in entries:
            values[name] = values.get(name, 0) + sum(int(ld.get("Value", {}).get("Value", 0))
                                                     for ld in entry.get("LabelValues", []))
    return {"seconds": elapsed, "attempts": values.get("regwatch_auth_requests_total"),
            "failures": values.get("regwatch_auth_failures_total")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        regwatch_worker(args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="bench-authlogs-") as tmp:
        tmp_path = Path(tmp)
        print("capturing real log lines from docker-registry ...", flush=True)
        groups = capture_templates(tmp_path / "registry")
        progs = tmp_path / "progs"
        progs.mkdir()
        (progs / "auth.mtail").write_text(MTAIL_PROGRAM)
        rows = []
        for lines in (args.lines, 2 * args.lines):
            log = tmp_path / f"registry-{lines}.log"
            print(f"writing {lines:,} lines ...", flush=True)
            attempts, failures = write_log(log, groups, lines, 0.02)
            ours = run_regwatch(log)
            theirs = run_mtail(log, progs) if lines == args.lines else None
            for name, result in (("regwatch", ours), ("mtail", theirs)):
                if result is None:
                    continue
                ok = (result["attempts"], result["failures"]) == (attempts, failures)
                rows.append((name, lines, result["seconds"], lines / result["seconds"], result.get("max_rss_kib"), ok))
            log.unlink()
            print(f"  generated: {attempts:,} attempts, {failures:,} failures "
                  f"({100 * failures / attempts:.1f} % of attempts)", flush=True)
        print()
        print(f"{'tool':<10}{'lines':>12}{'seconds':>10}{'lines/s':>14}{'peak RSS MiB':>14}  counts exact")
        for name, lines, seconds, rate, rss, ok in rows:
            rss_text = f"{rss / 1024:.1f}" if rss else "-"
            print(f"{name:<10}{lines:>12,}{seconds:>10.2f}{rate:>14,.0f}{rss_text:>14}  {'yes' if ok else 'NO'}")
        ours_1m = next(r for r in rows if r[0] == "regwatch" and r[1] == args.lines)
        mtail_1m = next(r for r in rows if r[0] == "mtail")
        ours_2m = next(r for r in rows if r[0] == "regwatch" and r[1] == 2 * args.lines)
        print(f"\nregwatch / mtail lines/s: {ours_1m[3] / mtail_1m[3]:.1f}x   "
              f"peak RSS {2 * args.lines:,} vs {args.lines:,} lines: {ours_2m[4] / ours_1m[4]:.2f}x")
        if os.environ.get("BENCH_STRICT") and not all(r[5] for r in rows):
            raise SystemExit("a tool miscounted")


if __name__ == "__main__":
    main()
