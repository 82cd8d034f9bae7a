"""The generated Grafana dashboards: drift, the two forms, the grafanalib fixes, and the queries.

That every query returns data from a real Prometheus scraping a real serve is
tests/test_e2e_prometheus.py; here promtool checks that each query parses, and each metric
a query names must be one regwatch exports (or a recording rule the alerts generator writes).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from regwatch.generate import alerts, dashboards
from regwatch.generate.options import (
    AUTH_FAILURE_RATIO,
    CACHE_HIT_RATIO,
    HARBOR_PROXY_HIT_RATIO,
    PULL_LATENCY_QUANTILE,
    AlertOptions,
)
from tests.helpers import substitute

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "dashboards"
UIDS = ["regwatch-auth", "regwatch-drill", "regwatch-harbor", "regwatch-overview", "regwatch-probes",
        "regwatch-target"]


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def panels(dashboard):
    return [p for p in dashboards._walk(dashboard["panels"]) if p["type"] != "row"]


def panel(dashboard, title):
    return next(p for p in panels(dashboard) if p["title"] == title)


def test_committed_dashboards_equal_the_generator_output(tmp_path):
    written = dashboards.write_all(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json"))
    committed = sorted(p.relative_to(COMMITTED) for p in COMMITTED.rglob("*.json"))
    assert sorted(p.relative_to(tmp_path) for p in written) == generated
    assert generated == committed, "regenerate (`regwatch generate dashboards`) and commit dashboards/"
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (COMMITTED / rel).read_bytes(), f"dashboards/{rel} is stale"


def test_write_all_is_deterministic_and_removes_stale_generated_files(tmp_path):
    (tmp_path / "provisioning").mkdir()
    stale = [tmp_path / "regwatch-old.json", tmp_path / "provisioning" / "regwatch-old.json"]
    keep = tmp_path / "my-own.json"
    for path in [*stale, keep]:
        path.write_text("{}\n")
    first = {p: p.read_bytes() for p in dashboards.write_all(tmp_path)}
    assert not any(p.exists() for p in stale) and keep.read_text() == "{}\n"
    assert {p: p.read_bytes() for p in dashboards.write_all(tmp_path)} == first
    for path, text in first.items():
        data = json.loads(text)
        assert text.decode() == json.dumps(data, indent=2, sort_keys=True) + "\n", path
        form = "provisioning" if path.parent.name == "provisioning" else "import"
        assert data == dashboards.render_all(form)[path.name]


def test_uids_are_stable_and_each_file_is_named_after_its_uid():
    for form in dashboards.FORMS:
        rendered = dashboards.render_all(form)
        assert sorted(d["uid"] for d in rendered.values()) == UIDS
        for name, data in rendered.items():
            assert name == f"{data['uid']}.json"
            assert data["schemaVersion"] >= 36  # datasource refs as {type, uid} objects


def test_import_form_is_the_export_for_sharing_externally_shape():
    for data in dashboards.render_all("import").values():
        assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
        assert data["__inputs"][0]["pluginId"] == "prometheus"
        requires = {(r["type"], r["id"]) for r in data["__requires"]}
        used = {("panel", p["type"]) for p in panels(data)}
        assert used <= requires, f"{data['uid']}: __requires lacks {used - requires}"
        assert {("grafana", "grafana"), ("datasource", "prometheus")} <= requires
        refs = [n["datasource"] for n in walk(data) if isinstance(n.get("datasource"), dict)]
        assert refs and all(r == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"} for r in refs)
        assert "${datasource}" not in dashboards.dump(data)


def test_provisioning_form_selects_its_datasource_through_a_variable():
    for data in dashboards.render_all("provisioning").values():
        text = dashboards.dump(data)
        assert "DS_PROMETHEUS" not in text and "__inputs" not in data and "__requires" not in data
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        refs = [n["datasource"] for n in walk(data) if isinstance(n.get("datasource"), dict)]
        assert refs and all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs)
        for p in panels(data):
            assert p["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_template_variables_job_and_target():
    for data in dashboards.render_all("provisioning").values():
        variables = {v["name"]: v for v in data["templating"]["list"]}
        for name in ("job", "target"):
            if name in variables:
                assert variables[name]["multi"] and variables[name]["includeAll"]
                assert variables[name]["current"]["value"] == ["$__all"]
        assert variables["job"]["query"] == "label_values(regwatch_build_info, job)"
        exprs = " ".join(expr for _, _, expr in dashboards.panel_queries(data))
        assert "$job" in exprs
        if "$target" in exprs:
            assert variables["target"]["query"] == 'label_values(regwatch_target_up{job=~"$job"}, target)'
            assert variables["target"]["includeAll"] and variables["target"]["allValue"] == ".+"


def test_grafanalib_traps_are_fixed_in_every_panel():
    for data in dashboards.render_all("import").values():
        for p in panels(data):
            where = f"{data['uid']} / {p['title']}"
            assert "maxDataPoints" not in p, where
            defaults = p["fieldConfig"]["defaults"]
            assert defaults["unit"], where
            assert None not in defaults.values() and p["fieldConfig"]["overrides"] == [], where
            steps = defaults["thresholds"]["steps"]
            assert steps[0]["value"] is None, f"{where}: base step must be JSON null, not {steps[0]['value']!r}"
            assert all(isinstance(s["value"], float | int) for s in steps[1:]), where
            assert p["gridPos"]["w"] > 0 and p["targets"], where
            if p["type"] in ("gauge", "stat"):
                assert "reduceOptions" in p.get("options", {}), f"{where}: grafanalib issue #575"
                reduce = p["options"]["reduceOptions"]
                assert reduce["calcs"] and reduce["values"] is False, where


def test_thresholds_are_drawn_at_the_alert_values_and_follow_the_options():
    def red(data, title):
        steps = panel(data, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return next(s["value"] for s in steps if s["color"] == "red" and s["value"] is not None)

    def green(data, title):
        steps = panel(data, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return next(s["value"] for s in steps if s["color"] == "green" and s["value"] is not None)

    changed = AlertOptions(storage_threshold=0.9, pull_latency_threshold=0.8, auth_failure_threshold=0.05,
                           cache_hit_ratio_threshold=0.3, drill_max_age="50h", tls_warning_within="30d",
                           tls_critical_within="5d", gc_max_age="2d", robot_expiry_within="20d",
                           upstream_ratelimit_threshold=0.2, drill_backup_max_age="8h", drill_coverage_threshold=0.95,
                           schedule_grace="15m", storage_predict_horizon="2d")
    day = 86400
    for options, horizon in ((AlertOptions(), "24h"), (changed, "2d")):
        overview = dashboards.render_all("import", options)["regwatch-overview.json"]
        assert red(overview, "Storage used") == options.storage_threshold
        assert red(overview, "Pull latency (probes)") == options.pull_latency_threshold
        assert red(overview, "Authentication failure ratio") == options.auth_failure_threshold
        assert green(overview, "Proxy cache hit ratio") == options.cache_hit_ratio_threshold
        assert red(overview, f"Storage used and {horizon} forecast") == options.storage_threshold
        assert red(overview, "Since the last passing drill") == {"26h": 26, "50h": 50}[options.drill_max_age] * 3600
        assert green(overview, "Upstream pull limit left") == options.upstream_ratelimit_threshold
        rendered = dashboards.render_all("import", options)
        probes, harbor = rendered["regwatch-probes.json"], rendered["regwatch-harbor.json"]
        target, drill = rendered["regwatch-target.json"], rendered["regwatch-drill.json"]
        assert red(probes, "Pull latency p50 / p95 / p99") == options.pull_latency_threshold
        tls = panel(probes, "TLS certificate expires in")["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in tls[1:]] == {"3d": [3 * day, 14 * day], "5d": [5 * day, 30 * day]}[
            options.tls_critical_within]
        assert red(harbor, "Since the last successful GC") == {"8d": 8, "2d": 2}[options.gc_max_age] * day
        assert green(harbor, "Robot accounts expiring") == {"7d": 7, "20d": 20}[options.robot_expiry_within] * day
        # Overdue (negative) by more than the grace is red.
        assert green(harbor, "Time until the next scheduled run") == -{"1h": 3600, "15m": 900}[options.schedule_grace]
        assert green(harbor, "Proxy-cache hit ratio per project") == options.cache_hit_ratio_threshold
        assert green(target, "Upstream pull limit left") == options.upstream_ratelimit_threshold
        backup_hours = {"26h": 26, "8h": 8}[options.drill_backup_max_age]
        assert red(drill, "Since the last successful backup") == backup_hours * 3600
        assert red(drill, "Data age at the last backup (RPO)") == red(drill, "Since the last successful backup")
        assert green(drill, "Tags covered (in the store and verified)") == options.drill_coverage_threshold
        assert red(rendered["regwatch-auth.json"], "Failure ratio") == options.auth_failure_threshold
        assert panel(overview, "Storage used")["fieldConfig"]["defaults"]["unit"] == "percentunit"
        assert panel(overview, "Pull latency (probes)")["fieldConfig"]["defaults"]["unit"] == "s"
        assert panel(overview, "Pull latency (probes)")["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] == {
            "mode": "line"}


def test_probe_phases_are_stacked_without_double_counting_the_first_byte():
    probes = dashboards.render_all("import")["regwatch-probes.json"]
    phases = next(p for p in panels(probes) if p["title"].startswith("Where the time goes"))
    assert phases["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert 'phase!="blob_first_byte"' in phases["targets"][0]["expr"]


def test_every_query_parses_with_promtool(tmp_path):
    rules = []
    for data in dashboards.render_all("provisioning").values():
        for _uid, _title, expr in dashboards.panel_queries(data):
            rules.append({"record": f"check:{len(rules)}", "expr": substitute(expr)})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    run = subprocess.run(["promtool", "check", "rules", "queries.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(rules)} rules found" in run.stdout


# Signals other branches add in parallel (issue 17; the names are fixed in their briefs).
# A name here may be missing from the code; once a collector exports it, this test says to drop it.
AWAITED: set[str] = set()  # names a panel or rule uses before a collector exports them (none now)


def _exported(name: str, code: str) -> bool:
    base = re.sub(r"_(total|bucket|count|sum)$", "", name)
    return bool(re.search(rf"\b{base}(_total)?\b", code))


def _rule_and_panel_metrics() -> dict[str, str]:
    """Every regwatch metric a panel or a rule queries -> where."""
    records = {r["record"] for r in alerts.render_rules()["groups"][0]["rules"]}
    names = {}
    exprs = [(f"{uid} / {title}", expr) for data in dashboards.render_all("provisioning").values()
             for uid, title, expr in dashboards.panel_queries(data)]
    exprs += [(f"rule {r.get('alert') or r.get('record')}", r["expr"])
              for group in alerts.render_rules()["groups"] for r in group["rules"]]
    for where, expr in exprs:
        for name in re.findall(r"\b([a-z_]+:regwatch_[a-z0-9_:]+|regwatch_[a-z0-9_]+)", expr):
            if name not in records:
                names.setdefault(name, where)
    return names


def test_every_metric_a_panel_or_rule_queries_is_one_regwatch_exports():
    # The collectors' code and docstrings (their example exposition) name every metric they export;
    # the generators themselves do not count.
    code = "\n".join(p.read_text() for p in (ROOT / "regwatch").rglob("*.py") if "generate" not in p.parts)
    records = {r["record"] for r in alerts.render_rules()["groups"][0]["rules"]}
    assert {PULL_LATENCY_QUANTILE, AUTH_FAILURE_RATIO, CACHE_HIT_RATIO, HARBOR_PROXY_HIT_RATIO} <= records
    names = _rule_and_panel_metrics()
    missing = {name: where for name, where in names.items() if not _exported(name, code)}
    assert set(missing) <= AWAITED, "not exported by any collector: " + ", ".join(
        f"{name} ({where})" for name, where in sorted(missing.items()) if name not in AWAITED)
    landed = (AWAITED & set(names)) - set(missing)
    assert not landed, f"exported now, drop them from AWAITED: {sorted(landed)}"
    assert set(names) >= AWAITED, f"AWAITED names no panel or rule uses: {sorted(AWAITED - set(names))}"
    assert {"regwatch_target_up", "regwatch_storage_used_ratio"} <= set(names)


def test_queries_use_only_the_dashboard_variables():
    allowed = {"$job", "$target", "$__rate_interval"}
    for data in dashboards.render_all("import").values():
        for uid, title, expr in dashboards.panel_queries(data):
            assert set(re.findall(r"\$\w+", expr)) <= allowed, f"{uid} / {title}: {expr}"


def test_panel_queries_reach_into_collapsed_rows():
    dashboard = {"uid": "u", "panels": [
        {"type": "timeseries", "title": "top", "targets": [{"expr": "up"}]},
        {"type": "row", "title": "r", "collapsed": True,
         "panels": [{"type": "stat", "title": "inner", "targets": [{"expr": "a"}, {"expr": "b"}]}]}]}
    assert dashboards.panel_queries(dashboard) == [("u", "top", "up"), ("u", "inner", "a"), ("u", "inner", "b")]


def test_needs_names_real_panels_and_is_filled_without_rendering_first():
    dashboards.NEEDS.clear()
    assert dashboards.needs("regwatch-harbor", "Components") == dashboards.HARBOR
    rendered = dashboards.render_all("import")
    titles = {(d["uid"], p["title"]) for d in rendered.values() for p in panels(d)}
    assert set(dashboards.NEEDS) <= titles
    # What a plain distribution registry with probes, storage and auth logs serves is not excused.
    for uid, title in [("regwatch-overview", "Targets up"), ("regwatch-overview", "Storage used"),
                       ("regwatch-overview", "Pull latency (probes)"), ("regwatch-auth", "Failure ratio")]:
        assert dashboards.needs(uid, title) is None, (uid, title)


@pytest.mark.parametrize("form", ["bogus"])
def test_unknown_form_is_refused(form):
    with pytest.raises(ValueError, match="form must be one of"):
        dashboards.render_all(form)


def test_each_dashboard_covers_what_the_issue_asks_for():
    rendered = dashboards.render_all("import")

    def exprs(uid):
        return " ".join(expr for _, _, expr in dashboards.panel_queries(rendered[f"{uid}.json"]))

    overview = exprs("regwatch-overview")
    for part in ("regwatch_target_up", "regwatch_storage_used_ratio", "predict_linear(", AUTH_FAILURE_RATIO,
                 CACHE_HIT_RATIO, "regwatch_drill_last_success_timestamp_seconds",
                 *(f'{PULL_LATENCY_QUANTILE}{{job=~"$job",target=~"$target",quantile="{q}"}}'
                   for q in ("0.5", "0.95", "0.99"))):
        assert part in overview, part
    harbor = exprs("regwatch-harbor")
    for part in ("component_healthy", "project_quota_used", "replication_last_execution_succeeded",
                 "gc_last_success", "scan_all_tasks", "jobservice_queue_length", "robot_expiry"):
        assert f"regwatch_harbor_{part}" in harbor, part
    assert "regwatch_probe_phase_duration_seconds" in exprs("regwatch-probes")
    assert "regwatch_tls_cert_expiry_timestamp_seconds" in exprs("regwatch-probes")
    assert "sum by (source, reason) (rate(regwatch_auth_failures_total" in exprs("regwatch-auth")
    for part in ("regwatch_drill_success", "regwatch_drill_duration_seconds", "regwatch_drill_bytes",
                 "regwatch_drill_phase_success", 'regwatch_drill_phase_last_success_timestamp_seconds{job=~"$job",'
                 'phase="backup"}', "regwatch_drill_coverage_ratio", "regwatch_drill_rpo_seconds"):
        assert part in exprs("regwatch-drill"), part
    for part in ("schedule_next_run_timestamp_seconds", "schedule_last_run_success", "gc_last_freed_bytes",
                 "gc_last_purged_blobs", "gc_last_purged_manifests", "retention_last_execution_success",
                 "preheat_last_execution_success"):
        assert f"regwatch_harbor_{part}" in harbor, part
    assert HARBOR_PROXY_HIT_RATIO in harbor
    target = exprs("regwatch-target")
    for part in ("regwatch_proxy_cache_served_bytes_total", "regwatch_proxy_cache_upstream_bytes_total",
                 "regwatch_proxy_cache_info", "regwatch_upstream_ratelimit_remaining",
                 "regwatch_upstream_ratelimit_limit", "regwatch_upstream_ratelimit_window_seconds"):
        assert part in target, part
    # A gauge must not end in _total (issue 14): the old scan-all name is nowhere.
    assert "regwatch_harbor_scan_all_total" not in " ".join(exprs(uid.removesuffix(".json")) for uid in rendered)


def test_bandwidth_saved_is_served_minus_fetched_from_upstream():
    target = dashboards.render_all("import")["regwatch-target.json"]
    saved = panel(target, "Bandwidth saved by the cache")["targets"][0]["expr"]
    assert saved == ('sum by (target, object) (rate(regwatch_proxy_cache_served_bytes_total{job=~"$job",'
                     'target=~"$target"}[$__rate_interval])) - sum by (target, object) '
                     '(rate(regwatch_proxy_cache_upstream_bytes_total{job=~"$job",target=~"$target"}'
                     '[$__rate_interval]))')


def test_harbor_own_series_are_not_filtered_by_the_regwatch_job():
    """Harbor's counters come from the job that scrapes Harbor core: a $job filter would empty the panels."""
    harbor = dashboards.render_all("import")["regwatch-harbor.json"]
    for title in ("Proxy-cache hit ratio per project", "Proxied requests per project"):
        for target in panel(harbor, title)["targets"]:
            assert "$job" not in target["expr"] and "$target" not in target["expr"], (title, target["expr"])
