"""The generated rules in a real Prometheus (Debian's), fed by exposition servers this test starts.

Two tiny HTTP servers stand in for what Prometheus scrapes: two Harbor core pods exposing
Harbor 2.16's proxy-cache counters (goharbor/harbor PR 23578:
``harbor_core_http_registry_proxy_requests_total{project,method}`` and
``harbor_core_http_registry_proxy_upstream_requests_total{project,method}``), and regwatch's
upstream rate-limit, Harbor schedule and drill gauges. The series are written here, so every
expected figure is computed by the test from the numbers it serves, not read back from the rules.
"""

from __future__ import annotations

import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from regwatch.generate import alerts
from regwatch.generate.options import HARBOR_PROXY_HIT_RATIO, AlertOptions
from tests.promserver import PrometheusServer

FAST = {"RegistryUpstreamRateLimitLow": "2s", "RegistryUpstreamRateLimitExhausted": "2s",
        "HarborScheduledJobMissed": "2s", "RegistryDrillTooOld": "2s", "RegistryDrillBackupTooOld": "2s"}


class Exposition:
    """Serves whatever text is in ``self.text`` at /metrics (Prometheus text format 0.0.4)."""

    def __init__(self) -> None:
        self.text = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def harbor_counters(rows: list[tuple[str, str, str, int]]) -> str:
    """(metric suffix, project, method, value) -> exposition lines."""
    out = []
    for kind in ("requests", "upstream_requests"):
        name = f"harbor_core_http_registry_proxy_{kind}_total"
        out.append(f"# TYPE {name} counter")
        out += [f'{name}{{project="{p}",method="{m}"}} {v}' for k, p, m, v in rows if k == kind]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rules-prom")
    pods = [Exposition(), Exposition()]
    regwatch = Exposition()
    rules = tmp / alerts.RULES_FILE
    rules.write_text(alerts.dump(alerts.render_rules(AlertOptions(for_durations=FAST))))
    # Every counter starts at 0 at the first scrape, so over the 30m window the ratio is the
    # share of the increments: the rules' rate() extrapolates numerator and denominator alike.
    pods[0].text = harbor_counters([("requests", "alpine-proxy", "GET", 0), ("upstream_requests", "alpine-proxy",
                                                                             "GET", 0),
                                    ("requests", "alpine-proxy", "HEAD", 0), ("upstream_requests", "alpine-proxy",
                                                                              "HEAD", 0)])
    pods[1].text = harbor_counters([("requests", "alpine-proxy", "GET", 0), ("upstream_requests", "alpine-proxy",
                                                                             "GET", 0),
                                    ("requests", "quay-proxy", "GET", 0), ("requests", "quay-proxy", "HEAD", 0),
                                    ("requests", "idle-proxy", "GET", 7)])
    prom = PrometheusServer(tmp / "prom", [p.address for p in [*pods, regwatch]], rule_files=[str(rules)]).start()
    try:
        yield {"pods": pods, "regwatch": regwatch, "prom": prom}
    finally:
        prom.stop()
        for server in [*pods, regwatch]:
            server.stop()


def wait_until(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def alert_details(prom: PrometheusServer, name: str) -> list[dict]:
    import requests

    body = requests.get(prom.url + "/api/v1/alerts", timeout=5).json()
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_harbor_proxy_hit_ratio_equals_the_hand_computed_ratio(stack):
    pods, prom = stack["pods"], stack["prom"]
    # Two scrapes of every project (a rate of 0 each) before any pull:
    prom.wait_for("count(sum without (instance, pod, method) "
                  "(rate(harbor_core_http_registry_proxy_requests_total[30m])) == 0) == 3")
    # no request yet, so no ratio: absent, never 0/0 = NaN (the rule's expression, and what it recorded).
    rule = next(r for r in alerts.render_rules()["groups"][0]["rules"] if r["record"] == HARBOR_PROXY_HIT_RATIO)
    assert prom.query(rule["expr"]) == []
    time.sleep(2)  # two rule evaluations
    assert prom.query(HARBOR_PROXY_HIT_RATIO) == []
    # alpine-proxy: 30 GET and 10 HEAD on one core pod, 6 and 4 of them fetched from the upstream;
    # the other pod serves it too but gets none of these pulls (its rate is exactly 0, so the sum
    # over pods is exact: rates of different pods are extrapolated from different scrape times).
    # quay-proxy: 15 GET + 5 HEAD, none from the upstream (and no upstream series at all).
    # idle-proxy: no pull in the window.
    pods[0].text = harbor_counters([("requests", "alpine-proxy", "GET", 30), ("upstream_requests", "alpine-proxy",
                                                                              "GET", 6),
                                    ("requests", "alpine-proxy", "HEAD", 10), ("upstream_requests", "alpine-proxy",
                                                                               "HEAD", 4)])
    pods[1].text = harbor_counters([("requests", "alpine-proxy", "GET", 0), ("upstream_requests", "alpine-proxy",
                                                                             "GET", 0),
                                    ("requests", "quay-proxy", "GET", 15), ("requests", "quay-proxy", "HEAD", 5),
                                    ("requests", "idle-proxy", "GET", 7)])
    expected = {"alpine-proxy": 1 - (6 + 4) / (30 + 10), "quay-proxy": 1 - 0 / (15 + 5)}

    def ratios() -> dict[str, float] | None:
        got = {r["metric"]["project"]: float(r["value"][1]) for r in prom.query(HARBOR_PROXY_HIT_RATIO)}
        return got if set(got) == set(expected) and all(
            math.isclose(got[p], v, abs_tol=1e-9) for p, v in expected.items()) else None

    got = wait_until(ratios, f"{HARBOR_PROXY_HIT_RATIO} to reach {expected}")
    assert got == pytest.approx(expected, abs=1e-9)
    # One series per project and job: the pods (instance) and methods are summed.
    series = prom.query(HARBOR_PROXY_HIT_RATIO)
    assert sorted((r["metric"] for r in series), key=lambda m: m["project"]) == [
        {"__name__": HARBOR_PROXY_HIT_RATIO, "job": "regwatch", "project": "alpine-proxy"},
        {"__name__": HARBOR_PROXY_HIT_RATIO, "job": "regwatch", "project": "quay-proxy"}]


def test_upstream_rate_limit_schedule_and_drill_alerts_fire_in_prometheus(stack):
    regwatch, prom = stack["regwatch"], stack["prom"]
    now = time.time()
    late_by = 7200.0
    regwatch.text = "\n".join([
        "# TYPE regwatch_upstream_ratelimit_limit gauge",
        'regwatch_upstream_ratelimit_limit{target="dockerhub",source="203.0.113.7"} 200',
        'regwatch_upstream_ratelimit_limit{target="ghcr",source="203.0.113.7"} 200',
        "# TYPE regwatch_upstream_ratelimit_remaining gauge",
        # 9 of 200 left (4.5 %) on one upstream, 150 on the other.
        'regwatch_upstream_ratelimit_remaining{target="dockerhub",source="203.0.113.7"} 9',
        'regwatch_upstream_ratelimit_remaining{target="ghcr",source="203.0.113.7"} 150',
        "# TYPE regwatch_harbor_schedule_next_run_timestamp_seconds gauge",
        # GC should have started two hours ago; the replication policy is due in an hour.
        f'regwatch_harbor_schedule_next_run_timestamp_seconds{{target="harbor",schedule="gc",policy=""}} '
        f"{now - late_by:.3f}",
        f'regwatch_harbor_schedule_next_run_timestamp_seconds{{target="harbor",schedule="replication",'
        f'policy="to-dr"}} {now + 3600:.3f}',
        # A nightly backup-only job keeps the backup fresh; the last full drill is three days old.
        "# TYPE regwatch_drill_phase_last_success_timestamp_seconds gauge",
        f'regwatch_drill_phase_last_success_timestamp_seconds{{store="/backup",phase="backup"}} {now - 3600:.3f}',
        "# TYPE regwatch_drill_last_success_timestamp_seconds gauge",
        f'regwatch_drill_last_success_timestamp_seconds{{store="/backup"}} {now - 3 * 86400:.3f}',
    ]) + "\n"

    low = wait_until(lambda: alert_details(prom, "RegistryUpstreamRateLimitLow"), "RegistryUpstreamRateLimitLow")
    assert [a["labels"] for a in low] == [{
        "alertname": "RegistryUpstreamRateLimitLow", "job": "regwatch", "instance": regwatch.address,
        "severity": "warning", "target": "dockerhub", "source": "203.0.113.7"}]
    assert float(low[0]["value"]) == pytest.approx(9 / 200)
    assert low[0]["annotations"]["summary"] == "Upstream dockerhub: 4.5% of the pull rate limit left."
    assert low[0]["annotations"]["runbook_url"].endswith("docs/runbook.md#registryupstreamratelimitlow")

    missed = wait_until(lambda: alert_details(prom, "HarborScheduledJobMissed"), "HarborScheduledJobMissed")
    assert [(a["labels"]["schedule"], a["labels"].get("policy")) for a in missed] == [("gc", None)]
    assert float(missed[0]["value"]) == pytest.approx(late_by, abs=30)
    assert missed[0]["annotations"]["summary"] == (
        f"Harbor harbor: the scheduled gc job is {alerts.humanize_duration(float(missed[0]['value']))} late.")

    too_old = wait_until(lambda: alert_details(prom, "RegistryDrillTooOld"), "RegistryDrillTooOld")
    assert [a["labels"]["store"] for a in too_old] == ["/backup"]
    # The fresh backup does not hide the old drill, and is not itself too old.
    time.sleep(3)  # longer than the rules' for:
    assert alert_details(prom, "RegistryDrillBackupTooOld") == []
    assert alert_details(prom, "RegistryUpstreamRateLimitExhausted") == []

    # Used up: the critical alert fires too.
    regwatch.text = regwatch.text.replace('target="dockerhub",source="203.0.113.7"} 9',
                                          'target="dockerhub",source="203.0.113.7"} 0')
    exhausted = wait_until(lambda: alert_details(prom, "RegistryUpstreamRateLimitExhausted"),
                           "RegistryUpstreamRateLimitExhausted")
    assert exhausted[0]["labels"]["severity"] == "critical" and exhausted[0]["labels"]["target"] == "dockerhub"
