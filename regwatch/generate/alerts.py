"""Prometheus alerting and recording rules, their promtool unit tests, and a PrometheusRule.

Every alert is one ``Alert`` below: its expression, severity, ``for:``, annotations and
the promtool cases that prove it (``fire``: the series that must make it fire, with the
labels and annotations expected; ``silent``: series just under the threshold, or a blip
shorter than ``for:``, that must not). ``render_rules``, ``render_tests`` and
``render_prometheusrule`` turn them into the files under ``alerts/``; the thresholds come
from ``AlertOptions`` (``regwatch generate alerts --help``).

Conventions (monitoring mixins): CamelCase alert names, ``severity`` warning|critical,
``summary`` and ``description`` that name the target and the value, a ``runbook_url`` to
the alert's section of docs/runbook.md, and recording rules ``level:metric:operations``
where an alert and a dashboard panel share an expression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regwatch.collectors.probes import BUCKETS, _le
from regwatch.config import parse_duration
from regwatch.generate.options import AUTH_FAILURE_RATIO, CACHE_HIT_RATIO, PULL_LATENCY_QUANTILE, AlertOptions

RULES_FILE = "regwatch.rules.yml"
TESTS_FILE = "regwatch.rules.test.yml"
PROMETHEUSRULE_FILE = "prometheusrule.yaml"

# Labels every input series in the promtool tests carries, as Prometheus adds them on scrape.
SCRAPE = {"job": "regwatch", "instance": "regwatch:9764"}
# Where the promtool tests evaluate (minutes between samples).
STEP = 60


@dataclass
class Case:
    """One promtool case: input series (name{labels} -> values) and when to evaluate."""

    series: dict[str, str]
    eval_minutes: int
    # Expected firing alerts of this name: (labels of the series, the alert's value, which rule
    # - None for the alert under test); empty = the alert must stay silent.
    expect: list[tuple[dict[str, str], float, Alert | None]] = field(default_factory=list)
    why: str = ""


@dataclass
class Alert:
    name: str
    severity: str
    for_: str
    expr: str
    summary: str
    description: str
    fire: Case
    silent: list[Case]
    # Labels of the firing alert beyond the series' own (set by the rule).
    labels: dict[str, str] = field(default_factory=dict)
    # Scrape labels that survive the expression (a recording rule's `sum by` keeps only job).
    scrape: dict[str, str] = field(default_factory=lambda: dict(SCRAPE))


def _series(name: str, labels: dict[str, str]) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in {**labels, **SCRAPE}.items())
    return f"{name}{{{body}}}"


def for_seconds(duration: str) -> float:
    """A `for:` duration in seconds (0s allowed, unlike config durations); ValueError if malformed."""
    return 0.0 if re.fullmatch(r"0+[smhdwy]?", duration) else parse_duration(duration)


def _minutes(duration: str) -> int:
    return max(0, math.ceil(for_seconds(duration) / STEP))


# --- Go template functions, mirrored so the promtool tests can state the exact text ---------
# promtool renders the real templates; if a mirror drifts from Prometheus the test fails.

def _go_g(value: float) -> str:
    """Go's %.4g."""
    text = f"{value:.4g}"
    return re.sub(r"e([+-])(\d)$", r"e\g<1>0\2", text)


def humanize_percentage(value: float) -> str:
    return f"{_go_g(value * 100)}%"


def humanize_duration(value: float) -> str:
    if value == 0:
        return f"{_go_g(value)}s"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= 1:
        whole = int(v)
        days, hours, minutes, seconds = whole // 86400, whole // 3600 % 24, whole // 60 % 60, whole % 60
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_go_g(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if v >= 1:
            break
        prefix, v = p, v * 1000
    return f"{sign}{_go_g(v)}{prefix}s"


_TEMPLATE = re.compile(r"\{\{\s*(\$labels\.(\w+)|\$value(\s*\|\s*(\w+))?)\s*\}\}")
_FILTERS: dict[str, Callable[[float], str]] = {
    "humanizePercentage": humanize_percentage, "humanizeDuration": humanize_duration,
    "": _go_g,
}


def render_template(template: str, labels: dict[str, str], value: float) -> str:
    """The text Prometheus renders for ``template`` (the subset of Go templates used here)."""
    def sub(match: re.Match) -> str:
        if match.group(2):
            return labels.get(match.group(2), "")
        return _FILTERS[match.group(4) or ""](value)
    return _TEMPLATE.sub(sub, template)


def _expected(alert: Alert, options: AlertOptions, labels: dict[str, str], value: float) -> tuple[dict, dict]:
    all_labels = {**labels, **alert.scrape, **alert.labels, "severity": alert.severity, **options.extra_labels,
                  "alertname": alert.name}
    annotations = {
        "summary": render_template(alert.summary, all_labels, value),
        "description": render_template(alert.description, all_labels, value),
        "runbook_url": f"{options.runbook_base}#{alert.name.lower()}",
    }
    return {k: v for k, v in all_labels.items() if k != "alertname"}, annotations


# --- the alerts ----------------------------------------------------------------------------------

def _sel(options: AlertOptions, extra: str = "") -> str:
    parts = [p for p in (options.selector, extra) if p]
    return "{" + ",".join(parts) + "}" if parts else ""


def _gauge_alert(options: AlertOptions, *, name: str, severity: str, for_default: str, metric: str,
                 labels: dict[str, str], op: str, threshold: float, bad: float, good: float,
                 summary: str, description: str, expr: str | None = None,
                 extra_series: dict[str, str] | None = None) -> Alert:
    """An alert on one gauge crossing a threshold: fires on ``bad``, silent on ``good`` and a blip."""
    for_ = options.for_durations.get(name, for_default)
    wait = _minutes(for_)
    expr = expr or f"{metric}{_sel(options)} {op} {threshold:g}"
    series_name = _series(metric, labels)
    extra = extra_series or {}
    fire_at = wait + 2
    alert = Alert(name, severity, for_, expr, summary, description,
                  fire=Case({series_name: f"{bad}+0x{fire_at + 2}", **extra}, fire_at),
                  silent=[Case({series_name: f"{good}+0x{fire_at + 2}", **extra}, fire_at, why="just under the threshold")])
    if wait > 1:
        # Bad for less than `for:`, then good again: pending, never firing.
        blip = f"{good}x2 {bad}x{wait - 2} {good}x{wait + 4}"
        alert.silent.append(Case({series_name: blip, **extra}, 2 + wait - 1, why="a blip shorter than for:"))
    alert.fire.expect = [(dict(labels), bad, None)]
    return alert


def alert_names() -> set[str]:
    return {alert.name for alert in build_alerts(AlertOptions())}


def build_alerts(options: AlertOptions) -> list[Alert]:
    o = options
    day = 86400.0
    alerts: list[Alert] = []

    alerts.append(_gauge_alert(
        o, name="RegwatchTargetDown", severity="critical", for_default="5m", metric="regwatch_target_up",
        labels={"target": "hub", "kind": "distribution"}, op="==", threshold=0, bad=0, good=1,
        summary="Registry {{ $labels.target }} cannot be reached by regwatch.",
        description="regwatch's last collections from {{ $labels.kind }} target {{ $labels.target }} failed "
                    "(see regwatch's log and regwatch_collector_success)."))

    collector_sel = _sel(o)
    alerts.append(_gauge_alert(
        o, name="RegwatchCollectorFailing", severity="warning", for_default="15m",
        metric="regwatch_collector_success", labels={"target": "hub", "collector": "distribution"},
        op="==", threshold=0, bad=0, good=1,
        expr=(f"regwatch_collector_success{collector_sel} == 0 "
              f"unless on (job, instance, target) regwatch_target_up{collector_sel} == 0"),
        summary="regwatch collector {{ $labels.collector }} fails for {{ $labels.target }}.",
        description="Collector {{ $labels.collector }} of {{ $labels.target }} has not succeeded for a while; "
                    "its metrics are stale. regwatch's log names the error."))

    alerts.append(_gauge_alert(
        o, name="RegwatchConfigReloadFailed", severity="warning", for_default="5m",
        metric="regwatch_config_last_reload_successful", labels={}, op="==", threshold=0, bad=0, good=1,
        summary="regwatch {{ $labels.instance }} could not reload its configuration.",
        description="The last SIGHUP reload of {{ $labels.instance }} failed; it keeps running the previous "
                    "configuration. `regwatch check-config` names the bad key."))

    alerts.append(_gauge_alert(
        o, name="RegistryStorageAlmostFull", severity="warning", for_default="5m",
        metric="regwatch_storage_used_ratio", labels={"volume": "registry-data"},
        op=">", threshold=o.storage_threshold, bad=round(min(1.0, o.storage_threshold + 0.05), 4),
        good=round(o.storage_threshold - 0.01, 4),
        summary="Registry storage {{ $labels.volume }}{{ $labels.target }} is {{ $value | humanizePercentage }} full.",
        description="Registry storage {{ $labels.volume }}{{ $labels.target }}{{ $labels.store }} is "
                    "{{ $value | humanizePercentage }} full (threshold "
                    f"{humanize_percentage(o.storage_threshold)}). Run garbage collection or grow the volume "
                    "before pushes start failing."))

    alerts.append(_predicted_full(o))
    alerts.append(_pull_latency(o))

    alerts.append(_gauge_alert(
        o, name="RegistryProbeFailing", severity="critical", for_default="5m", metric="regwatch_probe_success",
        labels={"target": "hub", "image": "library/alpine"}, op="==", threshold=0, bad=0, good=1,
        summary="Pulling {{ $labels.image }} from {{ $labels.target }} fails.",
        description="regwatch's pull probe of {{ $labels.image }} on {{ $labels.target }} has failed for a while: "
                    "nodes pulling it fail too. regwatch_probe_failures_total and regwatch_probe_failed_phase say "
                    "why and where."))

    alerts.append(_auth_failures(o))
    alerts.extend(_tls(o))

    alerts.append(_gauge_alert(
        o, name="HarborComponentUnhealthy", severity="critical", for_default="5m",
        metric="regwatch_harbor_component_healthy", labels={"target": "harbor", "component": "jobservice"},
        op="==", threshold=0, bad=0, good=1,
        summary="Harbor {{ $labels.target }}: component {{ $labels.component }} is unhealthy.",
        description="Harbor's /health reports {{ $labels.component }} of {{ $labels.target }} unhealthy."))

    alerts.append(_gauge_alert(
        o, name="HarborReplicationFailed", severity="warning", for_default="5m",
        metric="regwatch_harbor_replication_last_execution_succeeded", labels={"target": "harbor", "policy": "to-dr"},
        op="==", threshold=0, bad=0, good=1,
        summary="Harbor {{ $labels.target }}: replication {{ $labels.policy }} failed.",
        description="The last execution of replication policy {{ $labels.policy }} on {{ $labels.target }} "
                    "failed or was stopped; images are missing on the replica."))

    alerts.append(_gauge_alert(
        o, name="HarborGarbageCollectionFailed", severity="warning", for_default="5m",
        metric="regwatch_harbor_gc_last_run_succeeded", labels={"target": "harbor"},
        op="==", threshold=0, bad=0, good=1,
        summary="Harbor {{ $labels.target }}: the last garbage collection failed.",
        description="The last garbage collection of {{ $labels.target }} ended in error or was stopped; "
                    "deleted images still use storage."))

    alerts.append(_age_alert(
        o, name="HarborGarbageCollectionNotRun", metric="regwatch_harbor_gc_last_success_timestamp_seconds",
        labels={"target": "harbor"}, max_age=o.gc_max_age_days * day,
        summary="Harbor {{ $labels.target }}: no successful garbage collection for {{ $value | humanizeDuration }}.",
        description="The last successful garbage collection of {{ $labels.target }} ended "
                    "{{ $value | humanizeDuration }} ago (limit "
                    f"{humanize_duration(o.gc_max_age_days * day)}); check the GC schedule."))

    alerts.append(_scan_all_stuck(o))

    alerts.append(_gauge_alert(
        o, name="HarborRobotAccountExpiring", severity="warning", for_default="1h",
        metric="regwatch_harbor_robot_expiry_timestamp_seconds", labels={"target": "harbor", "robot": "robot$ci"},
        op="<", threshold=0, bad=0, good=0,
        expr=(f"regwatch_harbor_robot_expiry_timestamp_seconds{_sel(o)} - time() < {o.robot_expiry_days * day:g} "
              f"unless on (job, instance, target, robot) regwatch_harbor_robot_disabled{_sel(o)} == 1"),
        summary="Harbor {{ $labels.target }}: robot {{ $labels.robot }} expires in {{ $value | humanizeDuration }}.",
        description="Robot account {{ $labels.robot }} on {{ $labels.target }} expires in "
                    "{{ $value | humanizeDuration }}; every pipeline using it starts failing then. Refresh its "
                    "secret or extend it."))
    _time_relative(alerts[-1], good_offset=o.robot_expiry_days * day + day, bad_offset=o.robot_expiry_days * day / 2)

    alerts.append(_gauge_alert(
        o, name="HarborProjectQuotaAlmostFull", severity="warning", for_default="15m",
        metric="regwatch_harbor_project_quota_used_ratio", labels={"target": "harbor", "project": "team-a"},
        op=">", threshold=o.storage_threshold, bad=round(min(1.0, o.storage_threshold + 0.05), 4),
        good=round(o.storage_threshold - 0.01, 4),
        summary="Harbor {{ $labels.target }}: project {{ $labels.project }} uses "
                "{{ $value | humanizePercentage }} of its quota.",
        description="Project {{ $labels.project }} on {{ $labels.target }} uses {{ $value | humanizePercentage }} "
                    "of its storage quota; pushes fail at 100 %."))

    alerts.append(_gauge_alert(
        o, name="RegistryDrillFailed", severity="warning", for_default="0s", metric="regwatch_drill_success",
        labels={"store": "/backup/store"}, op="==", threshold=0, bad=0, good=1,
        summary="The last DR drill of {{ $labels.store }} failed.",
        description="The last `regwatch drill` of store {{ $labels.store }} failed: the backup may not restore. "
                    "Its report.json names the image and phase."))

    alerts.append(_age_alert(
        o, name="RegistryDrillTooOld", metric="regwatch_drill_last_success_timestamp_seconds",
        labels={"store": "/backup/store"}, max_age=o.drill_max_age_hours * 3600,
        summary="No successful DR drill of {{ $labels.store }} for {{ $value | humanizeDuration }}.",
        description="The last successful drill of {{ $labels.store }} ended {{ $value | humanizeDuration }} ago, "
                    f"longer than the RPO of {humanize_duration(o.drill_max_age_hours * 3600)}; check the drill "
                    "CronJob."))

    alerts.append(_cache_hit_ratio(o))
    return alerts


def _age_alert(o: AlertOptions, *, name: str, metric: str, labels: dict[str, str], max_age: float,
               summary: str, description: str) -> Alert:
    alert = _gauge_alert(
        o, name=name, severity="warning", for_default="15m", metric=metric, labels=labels, op=">", threshold=0,
        bad=0, good=0, expr=f"time() - {metric}{_sel(o)} > {max_age:g}", summary=summary, description=description)
    _time_relative(alert, good_offset=-(max_age - 3600), bad_offset=-(max_age + 3600))
    return alert


def _time_relative(alert: Alert, *, good_offset: float, bad_offset: float) -> None:
    """Rewrite a gauge alert's cases for a timestamp metric compared with time().

    The series hold ``eval time + offset`` (promtool's clock starts at 0), so the alert's
    value is the offset's magnitude at the evaluation instant.
    """
    fire = alert.fire
    name = next(iter(fire.series))
    at = fire.eval_minutes * STEP
    fire.series[name] = f"{at + bad_offset:g}+0x{fire.eval_minutes + 2}"
    labels = fire.expect[0][0]
    fire.expect = [(labels, abs(bad_offset), None)]
    alert.silent = [Case({name: f"{at + good_offset:g}+0x{fire.eval_minutes + 2}"}, fire.eval_minutes,
                         why="just inside the limit")]


def _predicted_full(o: AlertOptions) -> Alert:
    name = "RegistryStoragePredictedFull"
    for_ = o.for_durations.get(name, "1h")
    horizon = o.storage_predict_hours * 3600
    used = f"regwatch_storage_used_ratio{_sel(o)}"
    expr = (f"predict_linear(regwatch_storage_available_bytes{_sel(o)}[{o.storage_predict_window}], {horizon:g}) < 0 "
            f"and {used} > 0.5")
    wait = _minutes(for_)
    at = wait + 30
    labels = {"volume": "registry-data"}
    # Free space falls by `fall` bytes a minute: full in (free / fall) minutes from the evaluation.
    def series(minutes_to_full: float) -> dict[str, str]:
        free_at_eval = 30e9
        fall = free_at_eval / minutes_to_full
        start = free_at_eval + fall * at
        return {_series("regwatch_storage_available_bytes", labels): f"{start:.0f}-{fall:.0f}x{at + 2}",
                _series("regwatch_storage_used_ratio", labels): f"0.7x{at + 2}"}
    # predict_linear's value comes from a regression; these annotations do not print it.
    fire = Case(series(horizon / 60 / 2), at, [(labels, 0.0, None)])
    silent = [Case(series(horizon / 60 * 2), at, why="full only after twice the horizon")]
    return Alert(name, "warning", for_, expr,
                 "Registry storage {{ $labels.volume }}{{ $labels.target }} will be full within "
                 f"{humanize_duration(horizon)}.",
                 "At the rate of the last " + o.storage_predict_window + ", registry storage "
                 "{{ $labels.volume }}{{ $labels.target }}{{ $labels.store }} runs out of space within "
                 f"{humanize_duration(horizon)}.", fire, silent)


def _pull_latency(o: AlertOptions) -> Alert:
    name = "RegistryPullLatencyHigh"
    for_ = o.for_durations.get(name, "10m")
    q = f"{o.pull_latency_quantile:g}"
    expr = f'{PULL_LATENCY_QUANTILE}{{quantile="{q}"}} > {o.pull_latency_threshold:g}'
    wait = _minutes(for_)
    at = wait + 8
    labels = {"target": "hub", "image": "library/alpine"}
    # Probes every minute: all of them in the bucket just above (or at/below) the threshold.
    slow, fast = _bucket_around(o.pull_latency_threshold)

    def series(bucket_le: float, probes_per_min: int = 2) -> dict[str, str]:
        out = {}
        for le in (*_BUCKETS, "+Inf"):
            in_bucket = le == "+Inf" or float(le) >= bucket_le
            out[_series("regwatch_probe_pull_duration_seconds_bucket", {**labels, "le": str(le)})] = (
                f"0+{probes_per_min if in_bucket else 0}x{at + 2}")
        out[_series("regwatch_probe_pull_duration_seconds_count", labels)] = f"0+{probes_per_min}x{at + 2}"
        return out
    expected_value = _quantile_in_bucket(o.pull_latency_quantile, slow)
    fire = Case(series(slow), at, [({**labels, "quantile": q}, expected_value, None)])
    silent = [Case(series(fast), at, why="every pull within the threshold")]
    blip_series = series(fast)
    alert = Alert(name, "warning", for_, expr,
                  "Pulls from {{ $labels.target }} are slow: p" + f"{o.pull_latency_quantile * 100:g}" +
                  " {{ $value | humanizeDuration }}.",
                  "The " + f"{o.pull_latency_quantile * 100:g}" + "th percentile of probe pulls of "
                  "{{ $labels.image }} from {{ $labels.target }} is {{ $value | humanizeDuration }} (threshold "
                  f"{humanize_duration(o.pull_latency_threshold)}). regwatch_probe_phase_duration_seconds shows "
                  "which phase is slow.", fire, silent, scrape={"job": SCRAPE["job"]})
    if wait > 3:
        # Slow probes for a few minutes only, inside a run of fast ones.
        bucket_key = next(k for k in blip_series if f'le="{_fmt_le(slow)}"' in k)
        blip_minutes = wait - 3
        blip_series[bucket_key] = f"0+0x5 0+2x{blip_minutes} {2 * blip_minutes}+0x{at}"
        alert.silent.append(Case(blip_series, 5 + blip_minutes + 5 - 1, why="a blip shorter than for:"))
    return alert


# The probe histogram's bucket bounds as the exposition writes them (le="1.0").
_BUCKETS = tuple(_le(b) for b in BUCKETS if b != math.inf)


def _fmt_le(value: float) -> str:
    return next(b for b in _BUCKETS if float(b) == value)


def _bucket_around(threshold: float) -> tuple[float, float]:
    """The bucket just above the threshold (slow pulls) and one at or below it (fast pulls)."""
    bounds = [float(b) for b in _BUCKETS]
    slow = next(b for b in bounds if b > threshold)
    fast = max(b for b in bounds if b <= threshold) if any(b <= threshold for b in bounds) else bounds[0]
    return slow, fast


def _quantile_in_bucket(q: float, upper: float) -> float:
    """histogram_quantile's linear interpolation when every observation lies in (lower, upper]."""
    bounds = [float(b) for b in _BUCKETS]
    lower = max([b for b in bounds if b < upper], default=0.0)
    return lower + (upper - lower) * q


def _auth_failures(o: AlertOptions) -> Alert:
    name = "RegistryAuthFailureRateHigh"
    for_ = o.for_durations.get(name, "10m")
    expr = f"{AUTH_FAILURE_RATIO} > {o.auth_failure_threshold:g}"
    wait = _minutes(for_)
    at = wait + 8
    src = {"source": "registry"}
    per_min = 1000
    bad_failures = math.ceil(per_min * o.auth_failure_threshold * 2)
    good_failures = max(0, math.ceil(per_min * o.auth_failure_threshold) - 1)

    def series(failures_per_min: int, challenges_per_min: int = 0) -> dict[str, str]:
        out = {
            _series("regwatch_auth_requests_total", src): f"0+{per_min}x{at + 2}",
            _series("regwatch_auth_failures_total", {**src, "reason": "bad_credentials"}):
                f"0+{failures_per_min}x{at + 2}",
        }
        if challenges_per_min:
            out[_series("regwatch_auth_challenges_total", src)] = f"0+{challenges_per_min}x{at + 2}"
        return out
    fire = Case(series(bad_failures), at, [(src, bad_failures / per_min, None)])
    silent = [Case(series(good_failures), at, why="just under the threshold"),
              Case(series(good_failures, challenges_per_min=5 * per_min), at,
                   why="anonymous challenges (401 before credentials) are not failures")]
    if wait > 6:
        blip = series(good_failures)
        key = next(k for k in blip if k.startswith("regwatch_auth_failures_total"))
        # One minute with a burst of failures (10 % of that minute's attempts), then normal again:
        # the burst leaves the 5m rate window after 5 minutes, before `for:` runs out.
        blip[key] = f"0+{good_failures}x10 {good_failures * 11 + per_min // 10}+{good_failures}x{at}"
        silent.append(Case(blip, 10 + 4, why="a burst shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "Authentication failures on {{ $labels.source }}: {{ $value | humanizePercentage }} of attempts.",
                 "{{ $value | humanizePercentage }} of authentication attempts on {{ $labels.source }} fail "
                 f"(threshold {humanize_percentage(o.auth_failure_threshold)}): a brute-force attempt or a "
                 "client with a stale password. regwatch_auth_failures_total shows the reason.", fire, silent,
                 scrape={"job": SCRAPE["job"]})


def _tls(o: AlertOptions) -> list[Alert]:
    """One alert name, two severities: warning within tls_warning_days, critical within tls_critical_days."""
    day = 86400.0
    out = []
    for severity, days in (("warning", o.tls_warning_days), ("critical", o.tls_critical_days)):
        alert = _gauge_alert(
            o, name="RegistryTLSCertificateExpiring", severity=severity, for_default="10m",
            metric="regwatch_tls_cert_expiry_timestamp_seconds", labels={"target": "hub"}, op="<", threshold=0,
            bad=0, good=0,
            expr=f"regwatch_tls_cert_expiry_timestamp_seconds{_sel(o)} - time() < {days * day:g}",
            summary="The TLS certificate of {{ $labels.target }} expires in {{ $value | humanizeDuration }}.",
            description="The earliest certificate in the chain {{ $labels.target }} presents expires in "
                        "{{ $value | humanizeDuration }}; renew it before clients refuse the registry.")
        _time_relative(alert, good_offset=days * day + day, bad_offset=days * day - day / 2)
        out.append(alert)
    warning, critical = out
    # Inside the critical window the warning fires too; just outside it only the warning does.
    labels, value, _ = critical.fire.expect[0]
    critical.fire.expect = [(labels, value, warning), (labels, value, None)]
    critical.silent[0].expect = [(labels, o.tls_critical_days * day + day, warning)]
    critical.silent[0].why = "outside the critical window (only the warning fires)"
    return out


def _scan_all_stuck(o: AlertOptions) -> Alert:
    name = "HarborScanAllStuck"
    for_ = o.for_durations.get(name, "15m")
    window = o.scan_all_stuck_for
    expr = (f"regwatch_harbor_scan_all_ongoing{_sel(o)} == 1 "
            f"and on (job, instance, target) changes(regwatch_harbor_scan_all_completed{_sel(o)}[{window}]) == 0")
    wait, span = _minutes(for_), _minutes(window)
    at = span + wait + 5
    labels = {"target": "harbor"}
    ongoing = _series("regwatch_harbor_scan_all_ongoing", labels)
    completed = _series("regwatch_harbor_scan_all_completed", labels)
    fire = Case({ongoing: f"1x{at + 2}", completed: f"100x{at + 2}"}, at, [(labels, 1, None)])
    silent = [Case({ongoing: f"1x{at + 2}", completed: f"100+1x{at + 2}"}, at, why="slow but moving")]
    return Alert(name, "warning", for_, expr,
                 "Harbor {{ $labels.target }}: scan-all has made no progress for " + window + ".",
                 "A scan-all on {{ $labels.target }} is running but no scan finished in the last " + window +
                 "; check the Trivy adapter and the job service queue.", fire, silent)


def _cache_hit_ratio(o: AlertOptions) -> Alert:
    name = "RegistryProxyCacheHitRatioLow"
    for_ = o.for_durations.get(name, "30m")
    expr = f"{CACHE_HIT_RATIO} < {o.cache_hit_ratio_threshold:g}"
    wait = _minutes(for_)
    at = wait + 35
    labels = {"target": "mirror", "object": "blob"}

    def series(hits: int, misses: int) -> dict[str, str]:
        return {_series("regwatch_proxy_cache_hits_total", labels): f"0+{hits}x{at + 2}",
                _series("regwatch_proxy_cache_misses_total", labels): f"0+{misses}x{at + 2}"}
    bad_hits = max(0, math.floor(100 * o.cache_hit_ratio_threshold) - 20)
    good_hits = min(100, math.ceil(100 * o.cache_hit_ratio_threshold) + 1)
    fire = Case(series(bad_hits, 100 - bad_hits), at, [(labels, bad_hits / 100, None)])
    silent = [Case(series(good_hits, 100 - good_hits), at, why="just above the threshold")]
    return Alert(name, "warning", for_, expr,
                 "Proxy cache {{ $labels.target }}: {{ $labels.object }} hit ratio {{ $value | humanizePercentage }}.",
                 "Only {{ $value | humanizePercentage }} of {{ $labels.object }} requests to pull-through cache "
                 "{{ $labels.target }} are served from the cache (threshold "
                 f"{humanize_percentage(o.cache_hit_ratio_threshold)}): the cache was wiped, is too small, or "
                 "clients bypass it. Every miss goes to the upstream, with its rate limits.", fire, silent,
                 scrape={"job": SCRAPE["job"]})


# --- recording rules ------------------------------------------------------------------------------

def recording_rules(o: AlertOptions) -> list[dict[str, Any]]:
    sel = _sel(o)
    quantiles = sorted({0.5, 0.95, 0.99, o.pull_latency_quantile})
    rules: list[dict[str, Any]] = [
        {"record": PULL_LATENCY_QUANTILE,
         "expr": f"histogram_quantile({q:g}, sum by (job, target, image, endpoint, le) "
                 f"(rate(regwatch_probe_pull_duration_seconds_bucket{sel}[5m])))",
         "labels": {"quantile": f"{q:g}"}}
        for q in quantiles
    ]
    rules.append({
        "record": AUTH_FAILURE_RATIO,
        # No failure series yet (none since start) is a ratio of 0, not an absent one.
        "expr": f"(sum by (job, source) (rate(regwatch_auth_failures_total{sel}[5m])) "
                f"or sum by (job, source) (rate(regwatch_auth_requests_total{sel}[5m])) * 0) "
                f"/ sum by (job, source) (rate(regwatch_auth_requests_total{sel}[5m]))"})
    hits = f"sum by (job, target, object) (rate(regwatch_proxy_cache_hits_total{sel}[30m]))"
    misses = f"sum by (job, target, object) (rate(regwatch_proxy_cache_misses_total{sel}[30m]))"
    rules.append({"record": CACHE_HIT_RATIO, "expr": f"{hits} / ({hits} + {misses})"})
    return rules


# --- outputs ----------------------------------------------------------------------------------------

def _rule(alert: Alert, o: AlertOptions) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
    if for_seconds(alert.for_) > 0:
        rule["for"] = alert.for_
    rule["labels"] = {**alert.labels, "severity": alert.severity, **o.extra_labels}
    rule["annotations"] = {
        "summary": alert.summary,
        "description": alert.description,
        "runbook_url": f"{o.runbook_base}#{alert.name.lower()}",
    }
    return rule


def render_rules(options: AlertOptions | None = None) -> dict[str, Any]:
    """The Prometheus rule file (as a dict): recording rules, then alerts."""
    o = options or AlertOptions()
    return {"groups": [
        {"name": "regwatch.rules", "rules": recording_rules(o)},
        {"name": "regwatch.alerts", "rules": [_rule(a, o) for a in build_alerts(o)]},
    ]}


def _promtool_case(alert: Alert, case: Case, o: AlertOptions) -> dict[str, Any]:
    exp = []
    for labels, value, rule in case.expect:
        exp_labels, annotations = _expected(rule or alert, o, labels, value)
        exp.append({"exp_labels": exp_labels, "exp_annotations": annotations})
    test = {
        "interval": "1m",
        "input_series": [{"series": k, "values": v} for k, v in case.series.items()],
        "alert_rule_test": [{"eval_time": f"{case.eval_minutes}m", "alertname": alert.name, "exp_alerts": exp}],
    }
    if case.why:
        test["name"] = f"{alert.name} ({alert.severity}) stays silent: {case.why}"
    else:
        test["name"] = f"{alert.name} ({alert.severity}) fires"
    return test


def render_tests(options: AlertOptions | None = None) -> dict[str, Any]:
    """promtool unit tests: for every alert, a case where it fires and cases where it does not."""
    o = options or AlertOptions()
    tests = []
    for alert in build_alerts(o):
        tests.append(_promtool_case(alert, alert.fire, o))
        tests.extend(_promtool_case(alert, case, o) for case in alert.silent)
    return {"rule_files": [RULES_FILE], "evaluation_interval": "1m", "tests": tests}


def render_prometheusrule(options: AlertOptions | None = None, *, name: str = "regwatch",
                          labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The same rules as a Prometheus Operator ``PrometheusRule``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "regwatch", **(labels or {})}},
        "spec": render_rules(options),
    }


def dump(data: dict[str, Any]) -> str:
    return "# Generated by `regwatch generate alerts`; do not edit by hand.\n" + yaml.safe_dump(
        data, sort_keys=False, width=120, allow_unicode=True)


def write_all(out_dir: Path, options: AlertOptions | None = None,
              prometheusrule_labels: dict[str, str] | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        RULES_FILE: render_rules(options),
        TESTS_FILE: render_tests(options),
        PROMETHEUSRULE_FILE: render_prometheusrule(options, labels=prometheusrule_labels),
    }
    written = []
    for filename, data in files.items():
        path = out_dir / filename
        path.write_text(dump(data))
        written.append(path)
    return written
