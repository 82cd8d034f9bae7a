"""``regwatch demo`` (the README's main command) shows real metrics fast and leaves nothing behind."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import REPO_ROOT, regwatch_cmd


def run_demo(*args: str, interrupt_after: float | None = None) -> tuple[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(regwatch_cmd("demo", "--listen", "127.0.0.1:0", *args), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if interrupt_after is not None:
        out = ""
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in out and time.monotonic() < deadline:
            out += proc.stdout.readline()
        elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        return out + rest, elapsed
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    return out, time.monotonic() - started


def test_demo_shows_real_metrics_within_30s_and_cleans_up():
    out, elapsed = run_demo(interrupt_after=0)
    assert elapsed < 30, out
    workdir = Path(re.search(r"registry in (\S+) \.\.\.", out).group(1))
    pushed = int(re.search(r"Pushed (\d+) images", out).group(1))
    assert re.search(r'regwatch_target_up\{kind="distribution",target="demo"\} 1\b', out), out
    assert re.search(rf'regwatch_registry_tags\{{target="demo"\}} {pushed}\b', out), out
    assert "regwatch is serving:   http://127.0.0.1:" in out
    assert f"Removed {workdir}" in out
    assert not workdir.exists()
    # The registry the demo started is gone too.
    assert str(workdir) not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
