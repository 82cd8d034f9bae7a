"""Auth-log freshness, memory and idle cost: ``regwatch serve`` vs mtail following the same log.

1. Starts a real docker-registry with htpasswd auth, sends good, wrong-password and
   anonymous requests, and keeps the lines it logged (app log + access log) as templates.
2. Writes a staging log of 1,000,000 lines by repeating those real lines with fresh request
   ids; 2 % of the requests have a wrong password.
3. End to end, with default settings: ``regwatch serve`` follows an empty file; the staging log
   is appended to it in one go, and the clock runs from the start of the append until
   serve's ``/metrics`` shows exactly the generated attempts and failures. Then the same for
   ``mtail`` (a daemon following a fresh file, with the equivalent program), on the same bytes.
   serve's peak RSS (VmHWM) is read at the end.
4. Idle: serve follows 10 quiet files (10 sources) for 60 s; its CPU time over that minute.

    .venv/bin/python bench/bench_authlogs.py [--lines 1000000] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url: str, names: tuple[str, str]) -> tuple[float, float] | None:
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return None
    values = [0.0, 0.0]
    for line in text.splitlines():
        for i, name in enumerate(names):
            if line.startswith(name) and not line.startswith(name + "_created"):
                values[i] += float(line.rsplit(" ", 1)[1])
    return values[0], values[1]


def wait_exact(url: str, names: tuple[str, str], want: tuple[int, int], started: float, timeout: float = 300) -> float:
    while time.perf_counter() - started < timeout:
        seen = scrape(url, names)
        if seen == want:
            return time.perf_counter() - started
        if seen is not None and (seen[0] > want[0] or seen[1] > want[1]):
            raise SystemExit(f"{url} counted more than was written: {seen} > {want}")
        time.sleep(0.02)
    raise SystemExit(f"{url} did not reach {want} within {timeout}s (last {scrape(url, names)})")


APPEND_SECONDS: list[float] = []


def append(staging: Path, target: Path) -> float:
    """Append the staging log to ``target`` in one go; returns when it started (the append's own
    duration, a floor for both followers, is kept in APPEND_SECONDS)."""
    started = time.perf_counter()
    with open(staging, "rb") as src, open(target, "ab") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    APPEND_SECONDS.append(time.perf_counter() - started)
    return started


def start_serve(tmp: Path, sources: list[dict], name: str) -> tuple[subprocess.Popen, str]:
    import yaml

    port = free_port()
    config = tmp / f"{name}.yml"
    config.write_text(yaml.safe_dump({"auth_logs": sources}))
    with open(tmp / f"{name}.log", "wb") as log:  # the child keeps its own descriptor of it
        proc = subprocess.Popen([sys.executable, "-m", "regwatch", "serve", "--config", str(config), "--listen",
                                 f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log,
                                cwd=Path(__file__).resolve().parent.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url + "/metrics"
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"regwatch serve did not become ready:\n{(tmp / f'{name}.log').read_text()[-2000:]}")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_serve(tmp: Path, staging: Path, want: tuple[int, int]) -> dict:
    target = tmp / "serve-follow.log"
    target.write_bytes(b"")
    proc, url = start_serve(tmp, [{"name": "bench", "path": str(target),
                                   "positions_file": str(tmp / "positions.json")}], "serve")
    try:
        seconds = wait_exact(url, ("regwatch_auth_requests_total", "regwatch_auth_failures_total"), want,
                             append(staging, target))
        return {"seconds": seconds, "rss_mib": peak_rss_mib(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        target.unlink()


def run_mtail(tmp: Path, staging: Path, progs: Path, want: tuple[int, int]) -> dict:
    target = tmp / "mtail-follow.log"
    target.write_bytes(b"")
    port = free_port()
    with open(tmp / "mtail.log", "wb") as log:  # the child keeps its own descriptor of it
        proc = subprocess.Popen(["mtail", "--logs", str(target), "--progs", str(progs), "--address", "127.0.0.1",
                                 "--port", str(port), "--logtostderr"], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while scrape(url, ("regwatch_auth_requests_total", "regwatch_auth_failures_total")) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"mtail did not start:\n{(tmp / 'mtail.log').read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # let it open the file and seek to its end
        seconds = wait_exact(url, ("regwatch_auth_requests_total", "regwatch_auth_failures_total"), want,
                             append(staging, target))
        return {"seconds": seconds, "rss_mib": peak_rss_mib(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        target.unlink()


def run_idle(tmp: Path, groups: dict[str, list[str]], seconds: float) -> dict:
    import psutil

    quiet = tmp / "quiet"
    quiet.mkdir()
    sources = []
    for i in range(10):
        path = quiet / f"registry-{i}.log"
        path.write_text("\n".join(groups["good"]) + "\n")
        sources.append({"name": f"quiet{i}", "path": str(path), "positions_file": str(quiet / f"positions-{i}.json")})
    proc, _ = start_serve(tmp, sources, "idle")
    try:
        time.sleep(3.0)  # past start-up
        process = psutil.Process(proc.pid)
        before = process.cpu_times()
        time.sleep(seconds)
        after = process.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return {"cpu_seconds": cpu, "share": cpu / seconds, "threads": process.num_threads()}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-authlogs-") as tmp:
        tmp_path = Path(tmp)
        print("capturing real log lines from docker-registry ...", flush=True)
        groups = capture_templates(tmp_path / "registry")
        progs = tmp_path / "progs"
        progs.mkdir()
        (progs / "auth.mtail").write_text(MTAIL_PROGRAM)
        staging = tmp_path / "staging.log"
        print(f"writing {args.lines:,} lines ...", flush=True)
        want = write_log(staging, groups, args.lines, 0.02)
        size = staging.stat().st_size
        print(f"  {size / 1e6:.0f} MB; generated {want[0]:,} attempts, {want[1]:,} failures", flush=True)
        print("regwatch serve (default settings) following the file ...", flush=True)
        ours = run_serve(tmp_path, staging, want)
        print("mtail following the file ...", flush=True)
        theirs = run_mtail(tmp_path, staging, progs, want)
        print(f"serve following 10 quiet files for {args.idle_seconds:g} s ...", flush=True)
        idle = run_idle(tmp_path, groups, args.idle_seconds)
        print()
        print(f"{'follower':<16}{'lines':>12}{'append->exact s':>17}{'lines/s':>14}{'peak RSS MiB':>14}"
              f"{'append alone s':>16}")
        for (name, result), alone in zip((("regwatch serve", ours), ("mtail", theirs)), APPEND_SECONDS, strict=True):
            print(f"{name:<16}{args.lines:>12,}{result['seconds']:>17.2f}{args.lines / result['seconds']:>14,.0f}"
                  f"{result['rss_mib']:>14.1f}{alone:>16.2f}")
        ratio = theirs["seconds"] / ours["seconds"]
        print(f"\nregwatch / mtail lines/s end to end: {ratio:.1f}x (goal >= 2x)")
        print(f"serve peak RSS: {ours['rss_mib']:.0f} MiB (goal < 300)")
        print(f"serve idle, 10 quiet files, {args.idle_seconds:g} s: {idle['cpu_seconds']:.2f} s CPU = "
              f"{100 * idle['share']:.2f} % of a core (goal < 1 %), {idle['threads']} threads")
        if os.environ.get("BENCH_STRICT") and (ratio < 2 or ours["rss_mib"] >= 300 or idle["share"] >= 0.01):
            raise SystemExit("a goal was missed")


if __name__ == "__main__":
    main()
