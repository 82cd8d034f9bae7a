"""Bad input: a corrupt positions file, an unreadable log, binary garbage, 1 MB lines.

Each case must give a clear log line, a failure metric, and counters that stay right. The
logs are built from real docker-registry 2.8.2 lines (the parser tests' samples), so the
expected counts are the test's own: how many good and bad requests it wrote.
"""

from __future__ import annotations

import json
import logging
import os
import tracemalloc

from regwatch.collectors.authlogs import AuthLogCollector
from regwatch.config import AuthLogConfig
from tests.logsamples import TEXT_BAD, TEXT_GOOD


def sample(collector: AuthLogCollector, name: str, **labels: str) -> float:
    total = 0.0
    for family in collector.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def counts(collector: AuthLogCollector) -> tuple[int, int]:
    collector.collect()
    totals = collector.totals
    return totals.requests, sum(totals.failures.values())


def append(path, good: int, bad: int, extra: bytes = b"") -> None:
    with open(path, "ab") as handle:
        handle.write(("\n".join([TEXT_GOOD] * good + TEXT_BAD * bad) + "\n").encode() if good or bad else b"")
        handle.write(extra)


def make(tmp_path, path=None, **kwargs) -> AuthLogCollector:
    kwargs.setdefault("start_at", "beginning")
    config = AuthLogConfig(name="reg", path=str(path or tmp_path / "registry.log"), format="distribution",
                           positions_file=str(tmp_path / "positions.json"), **kwargs)
    return AuthLogCollector(config, background=False)  # each collect() reads what is new


def test_corrupt_positions_file_resumes_from_the_backup(tmp_path, caplog):
    log_path = tmp_path / "registry.log"
    append(log_path, 5, 1)
    assert counts(make(tmp_path)) == (6, 1)
    append(log_path, 4, 2)
    assert counts(make(tmp_path)) == (12, 3)  # a restart resumes: saved totals plus the new lines
    (tmp_path / "positions.json").write_text('{"version": 1, "files": [{"dev": "oops"')  # torn / corrupt
    append(log_path, 1, 1)
    with caplog.at_level(logging.ERROR):
        collector = make(tmp_path)
        assert counts(collector) == (14, 4)  # the backup is an older but consistent snapshot
    assert "positions.json is corrupt" in caplog.text and "resuming from the backup" in caplog.text
    assert sample(collector, "regwatch_auth_log_read_errors_total", reason="corrupt_positions") == 1


def test_positions_and_backup_both_corrupt_start_over_at_the_end(tmp_path, caplog):
    log_path = tmp_path / "registry.log"
    append(log_path, 3, 1)
    counts(make(tmp_path))
    counts(make(tmp_path))
    for name in ("positions.json", "positions.json.bak"):
        (tmp_path / name).write_bytes(b"\x00\xff not json")
    with caplog.at_level(logging.ERROR):
        collector = make(tmp_path, start_at="end")
        assert counts(collector) == (0, 0)  # the first run loads the state; nothing old is counted again
    assert "starting over at the end of the logs" in caplog.text
    assert (tmp_path / "positions.json.corrupt").exists()  # kept for a person to look at
    append(log_path, 2, 2)
    assert counts(collector) == (4, 2)
    assert sample(collector, "regwatch_auth_log_read_errors_total", reason="corrupt_positions") == 2


def test_unreadable_log_is_reported_and_the_others_still_counted(tmp_path, caplog):
    logs = tmp_path / "logs"
    logs.mkdir()
    append(logs / "a.log", 3, 1)
    (logs / "b.log").mkdir()  # matches the glob but cannot be read as a file
    collector = make(tmp_path, path=logs / "*.log")
    with caplog.at_level(logging.WARNING):
        assert counts(collector) == (4, 1)
    assert "cannot open log file" in caplog.text and "b.log" in caplog.text
    assert sample(collector, "regwatch_auth_log_read_errors_total", reason="unreadable") >= 1
    os.rmdir(logs / "b.log")
    append(logs / "b.log", 2, 0)  # once readable it is picked up from its start
    assert counts(collector) == (6, 1)


def test_binary_garbage_and_huge_lines(tmp_path, caplog):
    log_path = tmp_path / "registry.log"
    garbage_lines = [bytes(range(256)) * 3, b"\xff\xfe\x00\x00garbage\x00", os.urandom(4096).replace(b"\n", b"")]
    nul_lines = sum(1 for line in b"\n".join(garbage_lines).split(b"\n") if b"\x00" in line)
    append(log_path, 2, 1, b"\n".join(garbage_lines) + b"\n")
    append(log_path, 1, 0, b"x" * 1_000_000 + b"\n")  # a 1 MB line: read and ignored
    append(log_path, 1, 1, b"y" * 3_000_000 + b"\n")  # longer than max_line_bytes: skipped unbuffered
    append(log_path, 2, 1)
    collector = make(tmp_path)
    with caplog.at_level(logging.WARNING):
        # each good request is one attempt; each bad one an attempt and a failure
        assert counts(collector) == ((2 + 1) + 1 + (1 + 1) + (2 + 1), 1 + 0 + 1 + 1)
    assert "skipped a line longer than" in caplog.text
    assert sample(collector, "regwatch_auth_log_read_errors_total", reason="line_too_long") == 1
    assert sample(collector, "regwatch_auth_log_read_errors_total", reason="binary") == nul_lines
    saved = json.loads((tmp_path / "positions.json").read_text())
    assert saved["files"][0]["offset"] == log_path.stat().st_size


def test_a_1gib_line_without_newline_takes_no_memory(tmp_path):
    log_path = tmp_path / "registry.log"
    append(log_path, 1, 1)
    with open(log_path, "r+b") as handle:  # a sparse 1 GiB run of bytes without a newline (no disk used)
        handle.truncate(log_path.stat().st_size + (1 << 30))
    collector = make(tmp_path)
    tracemalloc.start()
    try:
        assert counts(collector) == (2, 1)  # the lines before it; the long one is being skipped
        append(log_path, 1, 0, b"")  # the next line's newline ends it (that line is part of the long one)
        assert counts(collector) == (2, 1)
        append(log_path, 2, 1)
        assert counts(collector) == (5, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading a 1 GiB line took {peak / 1e6:.0f} MB"
    assert sample(collector, "regwatch_auth_log_read_errors_total", reason="line_too_long") == 1
