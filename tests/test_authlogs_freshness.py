"""Freshness: ``regwatch serve`` with default settings shows what was just written, and a burst exactly.

The log lines are docker-registry 2.8.2's own (the parser tests' captures). The test knows
what it wrote: after each small batch the exported counters must equal that within 2 s (a
poll with a deadline: behaviour, not speed); after a 1,000,000-line append every scrape must
stay at or below the truth, and the scrape at which all lines are read must be exact.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.logsamples import TEXT_ANON, TEXT_BAD, TEXT_GOOD

pytestmark = pytest.mark.slow

ACCESS_200 = ('127.0.0.1 - - [23/Nov/2026:02:50:01 +0000] "GET /v2/lib/nope/manifests/v1 HTTP/1.1" 200 525 "" '
              '"docker/27"')
# 100 lines: 40 good requests (app + access line), 5 anonymous (2 lines), 3 wrong passwords (3 lines), 1 access line
UNIT = ([TEXT_GOOD, ACCESS_200] * 40 + TEXT_ANON * 5 + TEXT_BAD * 3 + [ACCESS_200])
UNIT_BYTES = ("\n".join(UNIT) + "\n").encode()
UNIT_TRUTH = (43, 3, 5, 100)  # attempts, failures, challenges, lines


def counters(serve) -> tuple[float, float, float, float]:
    values = dict.fromkeys(("regwatch_auth_requests_total", "regwatch_auth_failures_total",
                            "regwatch_auth_challenges_total", "regwatch_auth_log_lines_total"), 0.0)
    for family in text_string_to_metric_families(serve.metrics()):
        for sample in family.samples:
            if sample.name in values and sample.labels.get("source") == "registry":
                values[sample.name] += sample.value
    return tuple(values.values())  # type: ignore[return-value]


def test_counters_fresh_within_2s_and_exact_after_a_million_lines(tmp_path, write_config, serve):
    log_path = tmp_path / "registry.log"
    log_path.write_bytes(b"")
    config = write_config({"auth_logs": [{"name": "registry", "path": str(log_path),
                                          "positions_file": str(tmp_path / "positions.json")}]})
    proc = serve(config)
    proc.wait_ready()
    truth = [0, 0, 0, 0]

    def write(units: int) -> None:
        with open(log_path, "ab") as handle:
            handle.write(UNIT_BYTES * units)
        for i, n in enumerate(UNIT_TRUTH):
            truth[i] += n * units

    for units in (1, 3, 2):
        write(units)
        deadline = time.monotonic() + 2.0
        seen = counters(proc)
        while seen != tuple(truth) and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = counters(proc)
        assert seen == tuple(truth), "not fresh within 2 s of the write"

    write(10_000)  # 1,000,000 lines in one append
    assert truth[3] == 1_000_600
    deadline = time.monotonic() + 120
    last = (0.0, 0.0, 0.0, 0.0)
    while True:
        seen = counters(proc)
        assert all(now >= before for now, before in zip(seen, last, strict=True)), \
            f"a counter went back: {last} -> {seen}"
        assert all(now <= limit for now, limit in zip(seen, truth, strict=True)), f"above the truth: {seen} > {truth}"
        last = seen
        if seen[3] == truth[3] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen == tuple(truth)  # the scrape that first shows every line read is exact
