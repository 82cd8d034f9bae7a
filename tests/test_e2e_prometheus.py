"""End to end: a real Prometheus loads the generated rules and scrapes a real ``regwatch serve``.

serve watches a real docker-registry (htpasswd auth, its log followed for auth failures, a
pull probe every second) whose storage is a 16 MiB tmpfs the test mounts. The test fills
that volume past 85 % and waits for ``RegistryStorageAlmostFull`` to fire in Prometheus's
``/api/v1/alerts``; its value must equal the used share the test measures itself with
statvfs. Then every panel query of every generated dashboard runs against that Prometheus:
an error fails the test, and a query without data must be one the dashboards generator
lists in ``NEEDS`` with the reason (Harbor, a drill, a proxy-mode registry ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from regwatch.client import RegistryClient
from regwatch.generate import alerts
from regwatch.generate.options import AlertOptions
from regwatch.images import build_image, push_image
from regwatch.localregistry import LocalRegistry
from tests.conftest import ServeProcess, regwatch_cmd
from tests.helpers import substitute
from tests.promserver import PrometheusServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting the tmpfs the test fills needs root")

VOLUME_BYTES = 16 * 1024 * 1024
# Short `for:` so the test does not wait minutes; everything else is the committed default.
FAST = {"RegistryStorageAlmostFull": "2s", "RegwatchTargetDown": "2s"}


def used_ratio(path: Path) -> float:
    """What df's Use% computes: used / (used + available to unprivileged users)."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return used / (used + st.f_bavail * st.f_frsize)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    data = tmp / "registry" / "data"
    data.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES}", "tmpfs", str(data)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the volume the test fills ({mounted.stderr.strip()}); "
                    "run as root with CAP_SYS_ADMIN")
    registry = LocalRegistry(tmp / "registry", users={"alice": "alice-secret"}).start()
    procs: list = [registry]
    try:
        client = RegistryClient(registry.url, username="alice", password="alice-secret")
        push_image(client, "library/alpine", "3.20", build_image([{"etc/os-release": b"ID=alpine\n"}]))
        (tmp / "password").write_text("alice-secret\n")
        rules_dir = tmp / "rules"
        rules_dir.mkdir()
        (rules_dir / alerts.RULES_FILE).write_text(alerts.dump(alerts.render_rules(AlertOptions(for_durations=FAST))))
        scratch = LocalRegistry(tmp / "scratch", debug=False).start()
        procs.append(scratch)
        # A pull-through cache in front of the scratch registry, for the cache panels.
        mirror = LocalRegistry(tmp / "mirror", proxy={"remoteurl": scratch.url}).start()
        procs.append(mirror)
        config = tmp / "regwatch.yml"
        config.write_text(yaml.safe_dump({
            "targets": [{"name": "hub", "kind": "distribution", "url": registry.url, "debug_url": registry.debug_url,
                         "username": "alice", "password_file": str(tmp / "password"), "interval": "1s",
                         "probes": [{"image": "library/alpine:3.20", "interval": "1s"}]},
                        {"name": "scratch", "kind": "distribution", "url": scratch.url, "interval": "1s"},
                        {"name": "mirror", "kind": "distribution", "url": mirror.url, "debug_url": mirror.debug_url,
                         "interval": "1s"}],
            "storage": [{"name": "registry-data", "path": str(data), "interval": "1s"}],
            "auth_logs": [{"name": "registry", "path": str(registry.log_path), "format": "distribution",
                           "positions_file": str(tmp / "positions.json")}],
            "drill": {"report_dir": str(tmp / "store")},
        }))
        # A real drill (backup, restore into the scratch registry, verify) so the DR panels have data.
        drill = subprocess.run(regwatch_cmd("drill", "--config", str(config), "--source", "hub", "--dest", "scratch",
                                            "--store", str(tmp / "store")), capture_output=True, text=True, timeout=120)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        serve = ServeProcess(config, log_path=tmp / "serve.log")
        procs.append(serve)
        serve.wait_ready()
        prom = PrometheusServer(tmp / "prom", [serve.url.removeprefix("http://")],
                                rule_files=[str(rules_dir / alerts.RULES_FILE)]).start()
        procs.append(prom)
        # Authentication traffic: 20 good logins, 3 refused, plus the anonymous challenges before each. Sent once
        # Prometheus has the auth counters: they are live, and rate() ignores what a series starts with.
        prom.wait_for('regwatch_auth_requests_total{source="registry"}', timeout=30)
        for i in range(23):
            password = "wrong" if i % 8 == 7 else "alice-secret"
            requests.get(registry.url + "/v2/", auth=("alice", password), timeout=5)
            requests.get(registry.url + "/v2/", timeout=5)
        # Pull through the cache twice: misses first, then hits, while Prometheus scrapes.
        mirror_client = RegistryClient(mirror.url)
        for _ in range(2):
            manifest = json.loads(mirror_client.get_manifest("library/alpine", "3.20").body)
            for blob in [manifest["config"], *manifest["layers"]]:
                mirror_client.get_blob("library/alpine", blob["digest"]).close()
            time.sleep(2)
        yield {"registry": registry, "data": data, "serve": serve, "prom": prom, "tmp": tmp}
    finally:
        for proc in reversed(procs):
            proc.stop()
        subprocess.run(["umount", "-l", str(data)], check=False)


def firing(prom: PrometheusServer, name: str) -> list[dict]:
    body = requests.get(prom.url + "/api/v1/alerts", timeout=5).json()
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_storage_alert_fires_when_the_watched_volume_passes_85_percent(stack):
    prom, data = stack["prom"], stack["data"]
    prom.wait_for('regwatch_storage_used_ratio{volume="registry-data"}')
    assert used_ratio(data) < 0.85
    time.sleep(4)  # longer than the rule's for:, so silence below is not just "pending"
    assert firing(prom, "RegistryStorageAlmostFull") == []

    with open(data / "filler", "wb") as fh:
        fh.write(os.urandom(int(VOLUME_BYTES * 0.9)))
    expected = used_ratio(data)
    assert expected > 0.85

    deadline = time.monotonic() + 45
    alerts_now: list[dict] = []
    while time.monotonic() < deadline and not alerts_now:
        alerts_now = firing(prom, "RegistryStorageAlmostFull")
        time.sleep(0.5)
    assert alerts_now, f"RegistryStorageAlmostFull never fired:\n{stack['serve'].log()[-2000:]}"
    alert = alerts_now[0]
    assert alert["labels"]["volume"] == "registry-data" and alert["labels"]["severity"] == "warning"
    assert float(alert["value"]) == pytest.approx(expected, abs=0.01)
    assert alert["annotations"]["summary"] == (
        f"Registry storage registry-data is {alerts.humanize_percentage(float(alert['value']))} full.")
    assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#registrystoragealmostfull")
    # The registry itself stays up: the target-down alert must not fire alongside.
    assert firing(prom, "RegwatchTargetDown") == []


def test_every_dashboard_panel_query_runs_and_has_data_unless_listed(stack):
    dashboards = pytest.importorskip("regwatch.generate.dashboards")
    prom = stack["prom"]
    queries = [q for dash in dashboards.render_all(form="provisioning").values()
               for q in dashboards.panel_queries(dash)]
    assert queries
    # Rates and the probe histogram need a few scrapes; wait for the slowest shared expression.
    prom.wait_for('target_image:regwatch_probe_pull_duration_seconds:histogram_quantile{quantile="0.95"} >= 0',
                  timeout=45)
    prom.wait_for("source:regwatch_auth_failures:ratio_rate5m > 0", timeout=45)
    empty, errors = [], []
    for uid, title, expr in queries:
        resp = requests.get(prom.url + "/api/v1/query", params={"query": substitute(expr)}, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            errors.append(f"{uid} / {title}: {expr}: {body.get('error')}")
        elif not body["data"]["result"]:
            # The stack ran a drill and pulled through a cache, so those panels are no excuse here.
            reason = dashboards.needs(uid, title)
            if reason is None or reason in (dashboards.DRILL, dashboards.CACHE):
                empty.append(f"{uid} / {title}: {expr}")
    assert not errors, "panel queries that Prometheus refuses:\n" + "\n".join(errors)
    assert not empty, "panel queries without data (and not listed in NEEDS):\n" + "\n".join(empty)
