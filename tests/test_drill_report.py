"""Drill metrics: pushed to a real prometheus-pushgateway, checked by promtool, served by `regwatch serve`."""

from __future__ import annotations

import json
import subprocess
import time

import requests

from regwatch.client import RegistryClient
from regwatch.localregistry import free_port, wait_for_port
from tests.drill_helpers import metric, populate, report_of, run_drill


def _metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_pushgateway_textfile_and_serve(make_registry, tmp_path, write_config, serve):
    source, dest = make_registry(), make_registry()
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
        proc = run_drill("--source", source.url, "--dest", dest.url, "--store", store, "--report-dir", reports,
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
    durations = _metric_lines(pushed, "regwatch_drill_duration_seconds")
    phases = {line.split('phase="')[1].split('"')[0] for line in durations}
    assert phases == {"backup", "restore", "verify"}

    textfile = tmp_path / "tf" / "regwatch_drill.prom"  # drill.textfile_dir from the config
    lint = subprocess.run(["promtool", "check", "metrics"], input=textfile.read_text(), capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # the bytes the backup downloaded are the blob files it wrote (an independent count on disk)
    on_disk = sum(p.stat().st_size for p in (store / "blobs" / "sha256").iterdir())
    assert report["phases"]["backup"]["moved_bytes"] == on_disk
    assert report["summary"]["bytes"]["transferred"] == report["phases"]["backup"]["moved_bytes"] + \
        report["phases"]["restore"]["moved_bytes"]

    # serve exposes the last drill from drill.report_dir
    proc = serve(config)
    proc.wait_ready()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _metric_lines(proc.metrics(), "regwatch_drill_success"):
        time.sleep(0.2)
    served = proc.metrics()
    assert _metric_lines(served, "regwatch_drill_success") == [f"regwatch_drill_success{{{label}}} 1.0"]
    [last] = _metric_lines(served, "regwatch_drill_last_success_timestamp_seconds")
    assert float(last.split()[-1]) == report["drill"]["last_success_timestamp"]

    # a failed verify alone is a phase failure: the full-drill series stay as the last full drill left them
    (store / "blobs" / "sha256" / expected["app:1.0"].split(":")[1]).write_bytes(b"{}")
    proc2 = run_drill("--verify", "--store", store, "--report-dir", reports, "--textfile-dir", tmp_path / "tf")
    assert proc2.returncode == 1
    failed = json.loads((reports / "report.json").read_text())
    assert failed["success"] is False and failed["drill"] == report["drill"]
    assert failed["failed_images"] == ["app:1.0"]
    assert "app:1.0" in (reports / "report.html").read_text()
    prom, sid = textfile.read_text(), str(store.resolve())
    assert metric(prom, "regwatch_drill_success", store=sid) == 1
    assert metric(prom, "regwatch_drill_phase_success", store=sid, phase="verify") == 0
    assert metric(prom, "regwatch_drill_phase_success", store=sid, phase="backup") == 1


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
def test_empty_selection_fails_and_a_lone_backup_never_moves_the_drill_timestamp(make_registry, tmp_path):
    source, dest = make_registry(), make_registry()
    with RegistryClient(source.url) as src:
        populate(src)
    store, tf = tmp_path / "store", tmp_path / "tf"
    sid = str(store.resolve())
    assert run_drill("--source", source.url, "--dest", dest.url, "--store", store, "--textfile-dir", tf).returncode == 0
    first = report_of(store)
    # a typo in --repo: nothing selected, the drill fails and says what the source offered
    proc = run_drill("--source", source.url, "--dest", dest.url, "--store", store, "--repo", "ap*x",
                     "--textfile-dir", tf)
    assert proc.returncode == 1
    message = (f"FAILED backup *: no image selected: --repo 'ap*x' matched none of the 2 repositories "
               f"{source.url} offers through the registry's _catalog (app, multi); check the pattern, or the "
               "account's permissions if it sees none")
    assert message in proc.stderr.splitlines()
    prom = (tf / "regwatch_drill.prom").read_text()
    assert metric(prom, "regwatch_drill_success", store=sid) == 0
    last = first["drill"]["last_success_timestamp"]
    assert metric(prom, "regwatch_drill_last_success_timestamp_seconds", store=sid) == last
    # the same with a --tag filter that matches nothing
    proc = run_drill("--backup", "--source", source.url, "--store", store, "--repo", "app", "--tag", "2[.].*")
    assert proc.returncode == 1
    with RegistryClient(source.url) as src:
        offered = ", ".join(sorted(src.tags("app")))
    assert (f"FAILED backup *: no image selected: --tag '2[.].*' matched none of the tags of app (app: {offered})"
            in proc.stderr.splitlines())
    # a lone backup that passes records its phase, and leaves the full-drill series where the failed drill left them
    proc = run_drill("--backup", "--source", source.url, "--store", store, "--textfile-dir", tf)
    assert proc.returncode == 0, proc.stderr
    prom = (tf / "regwatch_drill.prom").read_text()
    assert metric(prom, "regwatch_drill_success", store=sid) == 0
    assert metric(prom, "regwatch_drill_last_success_timestamp_seconds", store=sid) == last
    backup_ts = report_of(store)["phase_state"]["backup"]["last_success_timestamp"]
    assert backup_ts > last
    assert metric(prom, "regwatch_drill_phase_last_success_timestamp_seconds", store=sid, phase="backup") == backup_ts
    assert metric(prom, "regwatch_drill_phase_success", store=sid, phase="backup") == 1
    # a dry-run restore writes no metrics and no report
    before = (tf / "regwatch_drill.prom").read_text(), (store / "report.json").read_text()
    proc = run_drill("--restore", "--dry-run", "--dest", make_registry().url, "--store", store, "--textfile-dir", tf)
    assert proc.returncode == 0, proc.stderr
    assert ((tf / "regwatch_drill.prom").read_text(), (store / "report.json").read_text()) == before


def test_coverage_and_rpo_count_an_older_copy_when_a_backup_fails(make_registry, tmp_path):
    from regwatch.images import build_image, push_image

    source, dest = make_registry(), make_registry()
    store, tf = tmp_path / "store", tmp_path / "tf"
    with RegistryClient(source.url) as src:
        push_image(src, "app", "1", build_image([{"a": b"first"}]))
        push_image(src, "other", "1", build_image([{"o": b"other"}]))
    assert run_drill("--source", source.url, "--dest", dest.url, "--store", store).returncode == 0
    first = {r["image"]: r for r in report_of(store)["images"]}
    # app:1 moves to an image whose layer the registry has lost: its backup fails, the older copy stays
    newer = build_image([{"a": b"second"}])
    with RegistryClient(source.url) as src:
        push_image(src, "app", "1", newer)
    lost = newer.layers[0].digest[7:]
    (source.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / lost[:2] / lost / "data").unlink()
    proc = run_drill("--source", source.url, "--dest", make_registry().url, "--store", store, "--textfile-dir", tf)
    assert proc.returncode == 1
    report = report_of(store)
    status = {r["image"]: r["status"] for r in report["images"]}
    assert status == {"app:1": {"backup": "failed", "restore": "pushed", "verify": "verified"},
                      "other:1": {"backup": "unchanged", "restore": "pushed", "verify": "verified"}}
    assert report["coverage"] == {"selected": 2, "covered": 2, "ratio": 1.0}
    assert report["summary"]["ok"] == 1 and report["summary"]["failed"] == 1
    # the RPO is the age of app:1's older copy: since the first run's backup saw the source serve it
    assert report["rpo_image"] == "app:1"
    assert report["rpo_seconds"] == report["ended"] - first["app:1"]["confirmed"]
    prom, sid = (tf / "regwatch_drill.prom").read_text(), str(store.resolve())
    assert metric(prom, "regwatch_drill_rpo_seconds", store=sid) == report["rpo_seconds"]
    assert metric(prom, "regwatch_drill_coverage_ratio", store=sid) == 1.0
    assert metric(prom, "regwatch_drill_success", store=sid) == 0
