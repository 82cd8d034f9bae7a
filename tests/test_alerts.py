"""The generated alert rules: promtool checks them and runs their unit tests.

promtool (Debian's prometheus package) evaluates the rules the way Prometheus does, so the
expected labels and annotations in alerts/regwatch.rules.test.yml are checked against the
real template engine. The mutation tests prove the silent cases bite: rules that are
wrong in the way each case guards against must fail them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from regwatch.generate import alerts
from regwatch.generate.options import AUTH_FAILURE_RATIO, AlertOptions
from tests.fakes.prometheus_operator_crds import SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "alerts"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, rules: dict, tests: dict) -> Path:
    (tmp_path / alerts.RULES_FILE).write_text(alerts.dump(rules))
    (tmp_path / alerts.TESTS_FILE).write_text(alerts.dump(tests))
    return tmp_path


def test_committed_rules_pass_promtool_check_and_their_unit_tests():
    check = promtool("check", "rules", alerts.RULES_FILE, cwd=COMMITTED)
    assert check.returncode == 0, check.stdout + check.stderr
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=COMMITTED)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr


def test_committed_files_equal_the_generator_output(tmp_path):
    subprocess.run([sys.executable, "-m", "regwatch", "generate", "alerts", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in (alerts.RULES_FILE, alerts.TESTS_FILE, alerts.PROMETHEUSRULE_FILE):
        assert (COMMITTED / name).read_text() == (tmp_path / name).read_text(), (
            f"alerts/{name} differs from `regwatch generate alerts`: run `make generate` and commit")


def test_every_alert_has_a_firing_case_and_a_silent_case_and_follows_the_mixin_conventions():
    rules = yaml.safe_load((COMMITTED / alerts.RULES_FILE).read_text())
    tests = yaml.safe_load((COMMITTED / alerts.TESTS_FILE).read_text())["tests"]
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.lower()) for h in re.findall(r"^## (.+)$", runbook, re.M)}
    alert_rules = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    fired, silent = set(), set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
            for exp in case["exp_alerts"]:
                assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
    for rule in alert_rules:
        name = rule["alert"]
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]*|TLS)+", name), name
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert name in fired and name in silent, f"{name} lacks a firing or a silent promtool case"
        url = rule["annotations"]["runbook_url"]
        assert url.split("#")[1] in anchors, f"docs/runbook.md has no section for {name}"
    # The seeds' three thresholds are in the default rules.
    exprs = {r["alert"]: r["expr"] for r in alert_rules}
    assert exprs["RegistryStorageAlmostFull"].endswith("> 0.85")
    assert exprs["RegistryPullLatencyHigh"].endswith("> 0.5")
    assert exprs["RegistryAuthFailureRateHigh"].endswith("> 0.01")


def test_recording_rules_feed_the_alerts_that_share_their_expression():
    rules = alerts.render_rules()
    records = {r["record"] for r in rules["groups"][0]["rules"]}
    alert_exprs = " ".join(r["expr"] for r in rules["groups"][1]["rules"])
    for record in records:
        assert record in alert_exprs, f"recording rule {record} is used by no alert"


@pytest.mark.parametrize("options", [
    AlertOptions(storage_threshold=0.9, pull_latency_threshold=1.0, auth_failure_threshold=0.05,
                 cache_hit_ratio_threshold=0.8, tls_warning_days=30, tls_critical_days=7,
                 drill_max_age_hours=170, pull_latency_quantile=0.99),
    AlertOptions(for_durations={"RegistryStorageAlmostFull": "0s", "RegistryAuthFailureRateHigh": "30m",
                                "RegistryPullLatencyHigh": "20m", "RegwatchTargetDown": "1m"},
                 extra_labels={"team": "platform"}, selector='job="regwatch"'),
], ids=["thresholds", "for-labels-selector"])
def test_non_default_options_produce_rules_that_pass_their_own_tests(tmp_path, options):
    write(tmp_path, alerts.render_rules(options), alerts.render_tests(options))
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_threshold_just_under_the_default_fails_the_just_under_case(tmp_path):
    """Rules that fire at 0.8 must fail the test that storage at 0.84 stays silent."""
    rules = alerts.render_rules(AlertOptions(storage_threshold=0.8))
    write(tmp_path, rules, alerts.render_tests())
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode != 0
    assert "RegistryStorageAlmostFull (warning) stays silent: just under the threshold" in run.stdout + run.stderr


def test_a_rule_without_for_fails_the_blip_case(tmp_path):
    rules = alerts.render_rules()
    for rule in rules["groups"][1]["rules"]:
        if rule["alert"] == "RegistryStorageAlmostFull":
            del rule["for"]
    write(tmp_path, rules, alerts.render_tests())
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode != 0
    assert "RegistryStorageAlmostFull (warning) stays silent: a blip shorter than for:" in run.stdout + run.stderr


def test_counting_anonymous_challenges_as_failures_fails_the_challenge_case(tmp_path):
    """A ratio that counts the 401 challenges every client gets first would page all day."""
    rules = alerts.render_rules()
    for rule in rules["groups"][0]["rules"]:
        if rule["record"] == AUTH_FAILURE_RATIO:
            rule["expr"] = rule["expr"].replace(
                "rate(regwatch_auth_failures_total{", "rate({__name__=~\"regwatch_auth_failures_total|"
                "regwatch_auth_challenges_total\",", 1)
    write(tmp_path, rules, alerts.render_tests())
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode != 0
    assert "anonymous challenges" in run.stdout + run.stderr + run.stderr


def test_prometheusrule_is_a_valid_resource_with_exactly_the_rule_file_groups():
    resource = yaml.safe_load((COMMITTED / alerts.PROMETHEUSRULE_FILE).read_text())
    jsonschema.validate(resource, SCHEMAS["PrometheusRule"])
    assert resource["spec"] == yaml.safe_load((COMMITTED / alerts.RULES_FILE).read_text())


def test_cli_options_reach_the_rules_and_bad_ones_exit_2_naming_the_option(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "regwatch", "generate", "alerts", "--out", str(tmp_path),
                         "--storage-threshold", "0.9", "--for", "RegistryStorageAlmostFull=15m",
                         "--label", "team=platform", "--rule-label", "release=kube-prometheus-stack"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    rule = next(r for r in yaml.safe_load((tmp_path / alerts.RULES_FILE).read_text())["groups"][1]["rules"]
                if r["alert"] == "RegistryStorageAlmostFull")
    assert rule["expr"].endswith("> 0.9") and rule["for"] == "15m" and rule["labels"]["team"] == "platform"
    resource = yaml.safe_load((tmp_path / alerts.PROMETHEUSRULE_FILE).read_text())
    assert resource["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for args, needle in ((["--storage-threshold", "85"], "--storage-threshold"),
                         (["--for", "StorageFull=5m"], "no alert named 'StorageFull'"),
                         (["--for", "RegistryStorageAlmostFull=soon"], "RegistryStorageAlmostFull=soon"),
                         (["--label", "team"], "expected KEY=VALUE")):
        bad = subprocess.run([sys.executable, "-m", "regwatch", "generate", "alerts", "--out", str(tmp_path / "x"),
                              *args], capture_output=True, text=True)
        assert bad.returncode == 2, (args, bad.stderr)
        assert needle in bad.stderr
