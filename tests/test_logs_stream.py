"""The streaming follower: lines are counted as they are written, through rotations, saved on stop.

A FileStream thread follows a real file the way serve does (inotify, and the poll fallback);
the test writes docker-registry 2.8.2 lines (the parser tests' captures) and compares the live
counters with what it wrote.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from regwatch.logs.stream import FileStream
from tests.logsamples import TEXT_BAD, TEXT_GOOD


def write(path, good: int, bad: int) -> None:
    with open(path, "ab") as handle:
        handle.write(("\n".join([TEXT_GOOD] * good + TEXT_BAD * bad) + "\n").encode())


def settle(stream: FileStream, want: tuple[int, int], timeout: float = 5.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        tally = stream.snapshot()[0]
        seen = (tally.requests, sum(tally.failures.values()))
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "poll"])
def test_stream_counts_as_written_through_rotation_and_restart(tmp_path, inotify):
    log_path = tmp_path / "registry.log"
    log_path.write_bytes(b"")
    positions = tmp_path / "positions.json"

    def stream() -> FileStream:
        return FileStream("reg", str(log_path), fmt="distribution", positions_file=str(positions),
                          use_inotify=inotify)

    first = stream()
    first.start()
    assert first.inotify is inotify
    write(log_path, 5, 1)
    assert settle(first, (6, 1)) == (6, 1)
    os.rename(log_path, tmp_path / "registry.log.1")  # rename rotation; the writer goes on in the old file
    write(tmp_path / "registry.log.1", 2, 0)
    write(log_path, 3, 2)  # ... and the new file appears
    assert settle(first, (6 + 2 + 5, 3)) == (13, 3)
    first.stop()
    saved = json.loads(positions.read_text())
    assert saved["counters"]["requests"] == 13  # stop saved what was counted
    write(log_path, 1, 1)  # written while stopped
    second = stream()
    second.start()
    assert settle(second, (15, 4)) == (15, 4)  # resumed: nothing lost, nothing twice
    time.sleep(0.3)
    assert settle(second, (15, 4), timeout=0) == (15, 4)
    second.stop()


def test_idle_stream_sleeps(tmp_path):
    log_path = tmp_path / "registry.log"
    log_path.write_bytes(b"")
    stream = FileStream("reg", str(log_path), fmt="distribution")
    stream.start()
    passes = stream.passes
    time.sleep(1.0)
    # inotify: no event, so no read pass in a second (the safety rescan is every 5 s)
    assert stream.passes == passes
    write(log_path, 1, 0)
    assert settle(stream, (1, 0)) == (1, 0)
    stream.stop()
