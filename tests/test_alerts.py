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
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from regwatch.cli import cli
from regwatch.generate import alerts
from regwatch.generate.options import AUTH_FAILURE_RATIO, AlertOptions, option_fields
from tests.fakes.prometheus_operator_crds import SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "alerts"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, rules: dict, tests: dict) -> Path:
    (tmp_path / alerts.RULES_FILE).write_text(alerts.dump(rules))
    (tmp_path / alerts.TESTS_FILE).write_text(alerts.dump(tests))
    return tmp_path


@pytest.mark.slow  # promtool over every rule and its ~90 test groups
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


@pytest.mark.slow  # promtool over every rule and its ~90 test groups
@pytest.mark.parametrize("options", [
    AlertOptions(storage_threshold=0.9, pull_latency_threshold=1.0, auth_failure_threshold=0.05,
                 cache_hit_ratio_threshold=0.8, tls_warning_within="30d", tls_critical_within="7d",
                 drill_max_age="170h", pull_latency_quantile=0.99, upstream_ratelimit_threshold=0.25,
                 drill_coverage_threshold=0.9, schedule_grace="10m", harbor_proxy_min_requests=10),
    # The case: a scrape job named otherwise made every generated test fail.
    AlertOptions(selector='job="registry-exporter"', harbor_selector='job=~"harbor-core|harbor"'),
    AlertOptions(selector='namespace="monitoring",job=~"regwatch-[0-9]+",instance!~".*:9999"',
                 extra_labels={"team": "platform", "target": "overridden"},
                 for_durations={"RegistryStorageAlmostFull": "0s", "RegistryAuthFailureRateHigh": "30m",
                                "RegistryPullLatencyHigh": "20m", "RegwatchTargetDown": "1m"}),
], ids=["thresholds", "job-registry-exporter", "pinned-labels-fors"])
def test_non_default_options_produce_rules_that_pass_their_own_tests(tmp_path, options):
    write(tmp_path, alerts.render_rules(options), alerts.render_tests(options))
    check = promtool("check", "rules", alerts.RULES_FILE, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_test_series_carry_the_labels_the_selector_asks_for():
    assert alerts.scrape_labels('job="registry-exporter"', alerts.SCRAPE) == {
        "job": "registry-exporter", "instance": "regwatch:9764"}
    assert alerts.scrape_labels('job=~"prod-(a|b)-[0-9]+",namespace="mon",env=""', alerts.SCRAPE) == {
        "job": "prod-a-0", "instance": "regwatch:9764", "namespace": "mon"}
    assert alerts.scrape_labels('job!="regwatch"', alerts.SCRAPE)["job"] == "regwatch-0"
    assert alerts.scrape_labels("", alerts.SCRAPE) == alerts.SCRAPE
    with pytest.raises(ValueError) as err:
        alerts.scrape_labels('job="a",job="b"', alerts.SCRAPE)
    assert str(err.value) == ("no value of label 'job' satisfies job=\"a\", job=\"b\"; "
                              "the promtool tests need one")


def only(tests: dict, alertname: str) -> dict:
    """The promtool tests of one alert (a mutation is judged by them alone, in a fraction of the time)."""
    return {**tests, "tests": [t for t in tests["tests"] if t["alert_rule_test"][0]["alertname"] == alertname]}


def test_a_threshold_just_under_the_default_fails_the_just_under_case(tmp_path):
    """Rules that fire at 0.8 must fail the test that storage at 0.84 stays silent."""
    rules = alerts.render_rules(AlertOptions(storage_threshold=0.8))
    write(tmp_path, rules, only(alerts.render_tests(), "RegistryStorageAlmostFull"))
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode != 0
    assert "RegistryStorageAlmostFull (warning) stays silent: just under the threshold" in run.stdout + run.stderr


def mutated(tmp_path: Path, alertname: str, change) -> str:
    """Run the alert's own promtool tests against rules where ``change(rule)`` edited that alert;
    the output, which must say the tests failed."""
    rules = alerts.render_rules()
    targets = [r for r in rules["groups"][1]["rules"] if r["alert"] == alertname]
    assert targets, alertname
    for rule in targets:
        change(rule)
    write(tmp_path, rules, only(alerts.render_tests(), alertname))
    run = promtool("test", "rules", alerts.TESTS_FILE, cwd=tmp_path)
    assert run.returncode != 0, f"{alertname}: the mutated rule passed its tests"
    return run.stdout + run.stderr


WITH_BLIP = sorted({t["alert_rule_test"][0]["alertname"] for t in alerts.render_tests()["tests"]
                    if t["name"].endswith("a blip shorter than for:")})


@pytest.mark.parametrize("alertname", WITH_BLIP)
def test_a_rule_without_for_fails_the_blip_case(tmp_path, alertname):
    out = mutated(tmp_path, alertname, lambda rule: rule.pop("for"))
    assert f"{alertname} (warning) stays silent: a blip shorter than for:" in out or (
        f"{alertname} (critical) stays silent: a blip shorter than for:" in out)


def test_every_alert_whose_for_is_over_a_step_has_a_blip_case():
    fors = {r["alert"]: alerts.for_seconds(r.get("for", "0s")) for r in alerts.render_rules()["groups"][1]["rules"]}
    assert {name for name, seconds in fors.items() if seconds > 60} == set(WITH_BLIP)


def _replace(old: str, new: str):
    def change(rule: dict) -> None:
        assert old in rule["expr"], (old, rule["expr"])
        rule["expr"] = rule["expr"].replace(old, new)
    return change


# Each silent case guards against one way of getting the rule wrong: make the rule wrong that
# way and that case must fail.
@pytest.mark.parametrize("alertname, old, new, case", [
    ("RegistryDrillBackupTooOld", ',phase="backup"', "", "an old restore is not an old backup"),
    ("RegistryDrillPhaseFailed", ' unless on (job, instance, store) regwatch_drill_success{job=~".*regwatch.*"} == 0',
     "", "a failed full drill is RegistryDrillFailed's"),
    ("RegistryDrillNeverPassed",
     ' unless on (job, instance, store) regwatch_drill_last_success_timestamp_seconds{job=~".*regwatch.*"}', "",
     "a full drill passed"),
    ("RegistryDrillCoverageLow", "< 1", "<= 1", "at the threshold"),
    ("RegistryUpstreamRateLimitLow", "< 0.1", "<= 0.1", "at the threshold"),
    ("HarborScheduledJobFailed", ',schedule!~"gc|replication"', "", "a failed GC is HarborGarbageCollectionFailed's"),
    ("HarborProxyCacheHitRatioLow",
     " and sum without (instance, pod, method) (increase(harbor_core_http_registry_proxy_requests_total[30m])) >= 100",
     "", "too few requests to judge"),
    ("HarborScheduledJobMissed", "> 3600", "> 2000", "just inside the limit"),
])
def test_a_rule_wrong_in_the_way_a_silent_case_guards_against_fails_it(tmp_path, alertname, old, new, case):
    assert f"{alertname} (warning) stays silent: {case}" in mutated(tmp_path, alertname, _replace(old, new))


def test_counting_anonymous_challenges_as_failures_fails_the_challenge_case(tmp_path):
    """A ratio that counts the 401 challenges every client gets first would page all day."""
    rules = alerts.render_rules()
    for rule in rules["groups"][0]["rules"]:
        if rule["record"] == AUTH_FAILURE_RATIO:
            rule["expr"] = rule["expr"].replace(
                "rate(regwatch_auth_failures_total{", "rate({__name__=~\"regwatch_auth_failures_total|"
                "regwatch_auth_challenges_total\",", 1)
    write(tmp_path, rules, only(alerts.render_tests(), "RegistryAuthFailureRateHigh"))
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


# --- the command line ------------------------------------------------------------------------------

def cli_stderr(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["generate", *args], prog_name="regwatch")
    return result.exit_code, result.stderr


DURATION_OPTIONS = [f.name.replace("_", "-") for f in option_fields("duration")]


def test_the_duration_options_are_every_window_age_and_for():
    assert DURATION_OPTIONS == [
        "storage-predict-horizon", "storage-predict-window", "tls-warning-within", "tls-critical-within",
        "gc-max-age", "scan-all-stuck-for", "schedule-grace", "drill-max-age", "drill-backup-max-age",
        "robot-expiry-within"]


@pytest.mark.parametrize("command", ["alerts", "dashboards"])
@pytest.mark.parametrize("option", DURATION_OPTIONS)
def test_a_bare_number_for_a_duration_option_exits_2_naming_the_option(tmp_path, command, option):
    code, stderr = cli_stderr(command, "--out", str(tmp_path), f"--{option}", "6")
    assert code == 2
    assert stderr == (f"Usage: regwatch generate {command} [OPTIONS]\n"
                      f"Try 'regwatch generate {command} --help' for help.\n\n"
                      f"Error: Invalid value for '--{option}': '6' has no unit; a Prometheus duration needs one, "
                      "e.g. 6h, 6m or 6d\n")
    assert not any(tmp_path.iterdir()), "nothing is written when an option is bad"


@pytest.mark.parametrize("args, message", [
    (["--storage-predict-window", "1.5h"], "Invalid value for '--storage-predict-window': '1.5h' is not a Prometheus "
     "duration: whole numbers with units, largest first (y, w, d, h, m, s, ms), e.g. 6h, 30m, 7d or 1h30m"),
    (["--scan-all-stuck-for", "0s"], "Invalid value for '--scan-all-stuck-for': '0s' is zero; give a duration "
     "greater than 0 (e.g. 6h, 30m, 7d or 1h30m)"),
    (["--scan-all-stuck-for", "2m"], "Invalid value for '--scan-all-stuck-for': 2m is shorter than 5m 0s: a window "
     "must hold several scrapes for a trend or a count of changes to mean anything"),
    (["--for", "RegistryStorageAlmostFull=6"], "Invalid value for --for: RegistryStorageAlmostFull=6: '6' has no "
     "unit; a Prometheus duration needs one, e.g. 6h, 6m or 6d"),
    (["--gc-max-age-days", "8"], "Invalid value for '--gc-max-age-days': --gc-max-age-days is now --gc-max-age, a "
     "Prometheus duration: --gc-max-age 8d"),
    (["--storage-threshold", "85"], "Invalid value for '--storage-threshold': 85 is not a ratio in (0, 1); 85 % is "
     "0.85"),
    (["--drill-coverage-threshold", "0"], "Invalid value for '--drill-coverage-threshold': 0 is not a ratio in "
     "(0, 1]; 85 % is 0.85"),
    (["--pull-latency-threshold", "90"], "Invalid value for '--pull-latency-threshold': 90 s is outside the probe "
     "histogram's buckets (0.05 s up to 60 s, not included): the latency quantile cannot tell pulls apart there"),
    (["--tls-critical-within", "30d"], "Invalid value for '--tls-critical-within': 30d is not shorter than "
     "--tls-warning-within 14d; the critical window lies inside the warning one"),
    (["--selector", "job=regwatch"], "Invalid value for '--selector': cannot read a label matcher at "
     "'job=regwatch'; write label=\"value\", label=~\"regex\", label!=\"value\" or label!~\"regex\", "
     "comma-separated, e.g. job=\"regwatch\""),
    (["--selector", 'job="a",job="b"'], "Invalid value for '--selector': no value of label 'job' satisfies "
     "job=\"a\", job=\"b\"; the promtool tests need one"),
    (["--label", "team="], "--label 'team=': the label needs a value"),
    (["--label", "2x=y"], "--label '2x=y': '2x' is not a label name (letters, digits and _, not starting with a "
     "digit or __)"),
])
def test_bad_options_exit_2_with_the_whole_message(tmp_path, args, message):
    code, stderr = cli_stderr("alerts", "--out", str(tmp_path), *args)
    assert code == 2, stderr
    assert stderr.splitlines()[-1] == f"Error: {message}"
    assert not any(tmp_path.iterdir())


# --- any valid options give rules that load and pass their own tests ---------------------------------

def _duration(min_seconds: int, max_seconds: int):
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))

    def text(seconds: int) -> str:
        out = ""
        for unit, size in units:
            if seconds >= size:
                out += f"{seconds // size}{unit}"
                seconds %= size
        return out
    return st.integers(min_seconds, max_seconds).map(text)


_name = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
_selector = st.one_of(
    st.just(""),
    _name.map(lambda n: f'job="{n}"'),
    _name.map(lambda n: f'job=~".*{n}.*"'),
    _name.map(lambda n: f'job=~"{n}|other-[0-9]+"'),
    st.tuples(_name, _name).map(lambda p: f'namespace="{p[0]}",job=~"{p[1]}(-[a-z]+)?"'),
    _name.map(lambda n: f'job!="{n}",cluster!~"dev.*"'),
    _name.map(lambda n: f"instance=~'.*:9[0-9]+',job=`{n}`"),
)
_ALERTS = sorted(alerts.alert_names())
_options = st.fixed_dictionaries({
    "storage-threshold": st.floats(0.01, 0.99),
    "pull-latency-threshold": st.floats(0.05, 59.0),
    "pull-latency-quantile": st.floats(0.01, 1.0),
    "auth-failure-threshold": st.floats(0.001, 0.95),
    "storage-predict-horizon": _duration(4200, 30 * 86400),
    "storage-predict-window": _duration(300, 12 * 3600),
    "tls-critical-within": _duration(3600, 10 * 86400),
    "gc-max-age": _duration(60, 30 * 86400),
    "scan-all-stuck-for": _duration(300, 3 * 3600),
    "schedule-grace": _duration(60, 7 * 86400),
    "drill-max-age": _duration(60, 30 * 86400),
    "drill-backup-max-age": _duration(60, 30 * 86400),
    "drill-coverage-threshold": st.floats(0.01, 1.0),
    "cache-hit-ratio-threshold": st.floats(0.01, 1.0),
    "harbor-proxy-min-requests": st.integers(0, 5000),
    "upstream-ratelimit-threshold": st.floats(0.0005, 1.0),
    "robot-expiry-within": _duration(3600, 60 * 86400),
    "selector": _selector,
    "harbor-selector": _selector,
}).flatmap(lambda o: st.tuples(st.just(o), _duration(3600, 20 * 86400)))
_fors = st.dictionaries(st.sampled_from(_ALERTS), st.sampled_from(["0s", "1m", "90s", "3m", "7m", "20m"]),
                        max_size=6)
_labels = st.dictionaries(st.sampled_from(["team", "env", "target", "tier"]), _name, max_size=2)


# Each example runs promtool over ~90 test groups (~5 s): few examples, and no shrinking (it
# would re-run promtool hundreds of times); a failure prints the whole command line instead.
@pytest.mark.slow  # promtool over every rule and its ~90 test groups
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(options=_options, fors=_fors, labels=_labels)
# Found by this test: a robot expiring within 1h, for: 1h (the firing case was only 30 min inside).
@example(options=({"storage-threshold": 0.5, "pull-latency-threshold": 1.0, "pull-latency-quantile": 1.0,
                   "auth-failure-threshold": 0.5, "storage-predict-horizon": "1h10m", "storage-predict-window": "5m",
                   "tls-critical-within": "1h", "gc-max-age": "1m", "scan-all-stuck-for": "5m",
                   "schedule-grace": "1m", "drill-max-age": "1m", "drill-backup-max-age": "1m",
                   "drill-coverage-threshold": 1.0, "cache-hit-ratio-threshold": 1.0, "harbor-proxy-min-requests": 0,
                   "upstream-ratelimit-threshold": 1.0, "robot-expiry-within": "1h", "selector": "",
                   "harbor-selector": ""}, "1h"), fors={}, labels={})
def test_random_valid_options_give_rules_promtool_loads_and_whose_tests_pass(options, fors, labels):
    values, warning_gap = options
    args = [f"--{k}={v!r}" if isinstance(v, float) else f"--{k}={v}" for k, v in values.items()]
    # The warning window is the critical one plus a gap (it must be the longer).
    critical = alerts.duration_seconds(values["tls-critical-within"])
    args.append(f"--tls-warning-within={int(critical + alerts.duration_seconds(warning_gap))}s")
    args += [f"--for={name}={duration}" for name, duration in fors.items()]
    args += [f"--label={key}={value}" for key, value in labels.items()]
    with tempfile.TemporaryDirectory() as out:
        result = CliRunner().invoke(cli, ["generate", "alerts", "--out", out, *args], prog_name="regwatch")
        assert result.exit_code == 0, (args, result.output)
        check = promtool("check", "rules", alerts.RULES_FILE, cwd=Path(out))
        assert check.returncode == 0, (args, check.stdout + check.stderr)
        run = promtool("test", "rules", alerts.TESTS_FILE, cwd=Path(out))
        assert run.returncode == 0, (args, run.stdout[-4000:] + run.stderr[-2000:])
