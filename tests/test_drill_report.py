"""Drill metrics: pushed to a real prometheus-pushgateway, checked by promtool, served by `regwatch serve`."""

from __future__ import annotations

import json
import subprocess
import time

import requests

from regwatch.client import RegistryClient
from regwatch.localregistry import free_port, wait_for_port
from tests.drill_helpers import populate, run_drill


def _metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_pushgateway_textfile_and_serve(make_registry, tmp_path, write_config, serve):
    source = make_registry()
    with RegistryClient(source.url) as src:
        expected = populate(src)
    store, reports = tmp_path / "store", tmp_path / "reports"
    port = free_port()
    gw = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}",
                           # Debian's build defaults to a shared /var/lib/prometheus file: keep this one private
                           f"--persistence.file={tmp_path / 'pushgateway.data'}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, 15, gw)
        config = write_config({"drill": {"textfile_dir": str(tmp_path / "tf"), "report_dir": str(reports)}})
        proc = run_drill("--backup", "--verify", "--source", source.url, "--store", store, "--report-dir", reports,
                         "--config", config, "--pushgateway", f"http://127.0.0.1:{port}")
        assert proc.returncode == 0, proc.stderr
        pushed = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        gw.terminate()
        gw.wait(10)
    report = json.loads((reports / "report.json").read_text())
    label = f'store="{store.resolve()}"'
    success = _metric_lines(pushed, "regwatch_drill_success")
    assert len(success) == 1 and label in success[0] and success[0].endswith(" 1")
    images_ok = [line for line in _metric_lines(pushed, "regwatch_drill_images") if 'result="ok"' in line]
    assert images_ok and images_ok[0].endswith(f" {len(expected)}")
    phases = {line.split('phase="')[1].split('"')[0] for line in _metric_lines(pushed, "regwatch_drill_duration_seconds")}
    assert phases == {"backup", "verify"}

    textfile = tmp_path / "tf" / "regwatch_drill.prom"  # drill.textfile_dir from the config
    lint = subprocess.run(["promtool", "check", "metrics"], input=textfile.read_text(), capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # the bytes the report counts are the blob files the backup wrote (an independent count on disk)
    on_disk = sum(p.stat().st_size for p in (store / "blobs" / "sha256").iterdir())
    assert report["bytes"]["transferred"] == on_disk - sum(
        len((store / "blobs" / "sha256" / d["digest"].split(":")[1]).read_bytes()) for d in _manifests(store))

    # serve exposes the last drill from drill.report_dir
    proc = serve(config)
    proc.wait_ready()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _metric_lines(proc.metrics(), "regwatch_drill_success"):
        time.sleep(0.2)
    served = proc.metrics()
    assert _metric_lines(served, "regwatch_drill_success") == [f"regwatch_drill_success{{{label}}} 1.0"]
    [last] = _metric_lines(served, "regwatch_drill_last_success_timestamp_seconds")
    assert float(last.split()[-1]) == report["last_success_timestamp"]

    # a failed drill keeps the previous success timestamp and says 0
    (store / "blobs" / "sha256" / expected["app:1.0"].split(":")[1]).write_bytes(b"{}")
    proc2 = run_drill("--verify", "--store", store, "--report-dir", reports)
    assert proc2.returncode == 1
    failed = json.loads((reports / "report.json").read_text())
    assert failed["success"] is False and failed["last_success_timestamp"] == report["last_success_timestamp"]
    assert failed["failed_images"] == ["app:1.0"]
    assert "app:1.0" in (reports / "report.html").read_text()


def _manifests(store) -> list[dict]:
    """Every manifest (tagged or an index child) in the store, found by walking index.json."""
    out, todo, seen = [], list(json.loads((store / "index.json").read_text())["manifests"]), set()
    while todo:
        desc = todo.pop()
        if desc["digest"] in seen:
            continue
        seen.add(desc["digest"])
        out.append(desc)
        body = json.loads((store / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes())
        todo.extend(body.get("manifests") or [])
    return out
