"""``regwatch demo`` (the README's main command): it tells the truth, its suggestions work, it cleans up.

The demo is run for real (Debian's docker-registry three times: the watched registry, a public
upstream and a pull-through cache of it). What it prints is checked against a scrape of its
/metrics made by this test, and against the demo's own count of the traffic it made.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from regwatch.config import load_config
from regwatch.demo import STARTER_CONFIG, highlights, write_starter_config
from tests.conftest import REPO_ROOT, regwatch_cmd
from tests.helpers import samples


def metric_sum(scraped: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lab), v in scraped.items() if n == name and set(labels.items()) <= set(lab))


def start_demo(*args: str) -> tuple[subprocess.Popen, str]:
    """The demo as a user runs it; returns once it has printed everything (or fails after 60 s)."""
    proc = subprocess.Popen(regwatch_cmd("demo", "--listen", "127.0.0.1:0", *args), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ""
    deadline = time.monotonic() + 60
    while "Press Ctrl-C" not in out and time.monotonic() < deadline and proc.poll() is None:
        out += proc.stdout.readline()
    if "Press Ctrl-C" not in out:
        proc.kill()
        raise AssertionError(f"the demo did not finish its printout:\n{out}{proc.stdout.read()}")
    return proc, out


@pytest.mark.servers
def test_demo_tells_what_metrics_say_its_commands_work_and_it_cleans_up(tmp_path):
    starter = tmp_path / "my-regwatch.yml"
    started = time.monotonic()
    # --no-traffic: the traffic that keeps rates moving would move the counters past the printed figures
    # between the printout and this test's scrape. regwatch's own collections (every 15 s) log in too.
    proc, out = start_demo("--starter-config", str(starter), "--no-traffic")
    elapsed = time.monotonic() - started
    workdir = Path(re.search(r"registry in (\S+) \.\.\.", out).group(1))
    registries = [p for p in psutil.process_iter(["cmdline"])
                  if any(arg.startswith(f"{workdir}/") for arg in p.info["cmdline"] or [])]
    try:
        url = re.search(r"^regwatch is serving:   (http://\S+/metrics)$", out, re.M).group(1)
        scraped = samples(requests.get(url, timeout=5).text)

        # Every line printed under "What /metrics says" is a sample /metrics serves, with the same value.
        section = out.split("What /metrics says", 1)[1].split("\nTry these", 1)[0]
        printed_lines = [line.strip() for line in section.splitlines() if line.startswith("    regwatch_")]
        printed = samples("\n".join(printed_lines) + "\n")
        assert len(printed) == len(printed_lines) >= 20, out
        # The figures are those of the first collections, all made within moments of each other. Only if
        # a collector has run again before this scrape (a loaded machine, 15 s later) may they differ, and
        # then counters only upwards.
        stamps = [v for (name, _), v in scraped.items() if name == "regwatch_collector_last_success_timestamp_seconds"]
        collected_again = max(stamps) - min(stamps) > 5
        for key, value in printed.items():
            if collected_again and key[0].endswith("_total"):
                assert scraped.get(key) >= value, (key, value, scraped.get(key))
            elif not collected_again or key[0] != "regwatch_probe_phase_duration_seconds":
                assert scraped.get(key) == value, (key, value, scraped.get(key), collected_again)
        names = {name for name, _ in printed}
        # The signals that moved, by topic; nothing printed is a zero except the up/success gauges.
        assert {"regwatch_auth_failures_total", "regwatch_probe_phase_duration_seconds",
                "regwatch_storage_used_ratio", "regwatch_proxy_cache_hits_total"} <= names, out
        assert [k for k, v in printed.items() if v == 0] == [], out
        phases = {dict(labels)["phase"] for name, labels in printed if name == "regwatch_probe_phase_duration_seconds"}
        assert {"manifest", "config", "blob"} <= phases

        # What the demo says it did equals what regwatch counted.
        pushed = int(re.search(r"^  (\d+) images pushed in (\d+) repositories$", out, re.M).group(1))
        repositories = int(re.search(r"images pushed in (\d+) repositories$", out, re.M).group(1))
        failed = int(re.search(r"^  (\d+) failed logins by ci-bot \(wrong password\)$", out, re.M).group(1))
        assert (pushed, repositories, failed) == (9, 5, 3)
        assert scraped[("regwatch_registry_tags", (("target", "demo"),))] == pushed
        assert scraped[("regwatch_registry_repositories", (("target", "demo"),))] == repositories
        assert scraped[("regwatch_auth_failures_total", (("reason", "bad_credentials"),
                                                         ("source", "demo-registry")))] == failed
        assert metric_sum(scraped, "regwatch_auth_failures_total") == failed
        cache = re.search(r"pulled twice through the cache: (\d+) manifest requests \((\d+) from upstream\), "
                          r"(\d+) blob requests \((\d+) from upstream\)$", out, re.M)
        m_req, m_miss, b_req, b_miss = (int(g) for g in cache.groups())
        for obj, requests_, misses in (("manifest", m_req, m_miss), ("blob", b_req, b_miss)):
            labels = (("object", obj), ("target", "demo-cache"))
            assert scraped[("regwatch_proxy_cache_requests_total", labels)] == requests_
            assert scraped[("regwatch_proxy_cache_misses_total", labels)] == misses
            assert scraped[("regwatch_proxy_cache_hits_total", labels)] == requests_ - misses

        # The three commands it suggests work against the demo registry, as printed.
        commands = re.findall(r"^  (\S+(?: -m regwatch)? (?:probe|drill|generate) .*)$", out, re.M)
        assert [re.search(r" (probe|drill|generate) ", c).group(1) for c in commands] == ["probe", "drill", "generate"]
        results = [subprocess.run(["bash", "-c", c], capture_output=True, text=True, timeout=120, cwd=tmp_path)
                   for c in commands]
        for command, result in zip(commands, results, strict=True):
            assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert results[0].stdout.rstrip().endswith("OK")
        assert re.search(r"^backup \+ verify passed: 7 images, 7 ok; report: ", results[1].stdout, re.M), \
            results[1].stdout
        drill_store = workdir / "drill-store"
        assert (drill_store / "report.json").is_file() and (drill_store / "report.html").is_file()
        assert (workdir / "alerts" / "regwatch.rules.yml").is_file()

        # The starter config is where it says, and loads once written.
        assert f"\nA starter config for your own registry: {starter}\n" \
               f"  edit it, then: {sys.executable} -m regwatch check-config {starter}\n" in out
        assert load_config(str(starter)).targets[0].url == "https://registry.example.com"
        assert elapsed < 60, out
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert f"Removed {workdir}." in rest
    assert not workdir.exists()
    # The registries the demo started are gone too.
    assert len(registries) == 3, registries
    assert not [p for p in registries if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_an_existing_starter_config_is_kept(tmp_path):
    mine = tmp_path / "regwatch.yml"
    mine.write_text("targets: []  # my own\n")
    assert write_starter_config(mine) is False
    assert mine.read_text() == "targets: []  # my own\n"
    fresh = tmp_path / "new.yml"
    assert write_starter_config(fresh) is True
    assert fresh.read_text() == STARTER_CONFIG.format(path=str(fresh))
    assert [t.name for t in load_config(str(fresh)).targets] == ["my-registry"]


def test_highlights_copy_lines_as_served_and_leave_out_what_did_not_move():
    exposition = (
        "# HELP regwatch_target_up 1 if ...\n# TYPE regwatch_target_up gauge\n"
        'regwatch_target_up{kind="distribution",target="down"} 0.0\n'
        'regwatch_auth_failures_total{reason="bad_credentials",source="s"} 3.0\n'
        'regwatch_auth_failures_total{reason="invalid_token",source="s"} 0.0\n'
        'regwatch_storage_used_ratio{volume="v"} 0.25456711941\n'
        'regwatch_registry_tags{target="down"} 0.0\n'
    )
    assert highlights(exposition) == [
        ("The registry and its cache", ['regwatch_target_up{kind="distribution",target="down"} 0.0']),
        ("Logins, from the registry's log (failures by reason)",
         ['regwatch_auth_failures_total{reason="bad_credentials",source="s"} 3.0']),
        ("Storage of the registry's volume", ['regwatch_storage_used_ratio{volume="v"} 0.25456711941']),
    ]


@pytest.mark.servers
def test_after_the_printout_the_demo_keeps_making_traffic_so_rates_move(tmp_path):
    proc, out = start_demo("--no-starter-config")
    try:
        url = re.search(r"^regwatch is serving:   (http://\S+/metrics)$", out, re.M).group(1)

        def moved() -> tuple[float, float]:
            scraped = samples(requests.get(url, timeout=5).text)
            return (metric_sum(scraped, "regwatch_auth_requests_total"),
                    metric_sum(scraped, "regwatch_proxy_cache_requests_total"))

        first = moved()
        deadline = time.monotonic() + 60
        now = first
        while time.monotonic() < deadline:
            now = moved()
            if now[0] > first[0] and now[1] > first[1]:
                break
            time.sleep(1)
        # Pulls through the registry (logins counted from its log) and through the cache, every 5 s.
        assert now[0] > first[0] and now[1] > first[1], (first, now)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert "Removed " in rest
