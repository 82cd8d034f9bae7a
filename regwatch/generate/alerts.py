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

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regwatch.collectors.probes import BUCKETS, _le
from regwatch.generate.options import (
    AUTH_FAILURE_RATIO,
    CACHE_HIT_RATIO,
    HARBOR_PROXY_HIT_RATIO,
    PULL_LATENCY_QUANTILE,
    AlertOptions,
    Matcher,
    duration_seconds,
    parse_selector,
    render_selector,
)

RULES_FILE = "regwatch.rules.yml"
TESTS_FILE = "regwatch.rules.test.yml"
PROMETHEUSRULE_FILE = "prometheusrule.yaml"

# Labels every input series in the promtool tests carries, as Prometheus adds them on scrape;
# the selector options pin or change them (scrape_labels).
SCRAPE = {"job": "regwatch", "instance": "regwatch:9764"}
HARBOR_SCRAPE = {"job": "harbor-core", "instance": "harbor:9090"}
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
    # Scrape labels that survive the expression: None all of them, else only these (a recording
    # rule's `sum by (job, ...)` keeps only job); `drop` those a `sum without (...)` removes.
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    # The input series are Harbor's own (scraped by another job, matched by harbor_selector).
    harbor: bool = False


# --- the labels the selectors ask for ----------------------------------------------------------------

def _example(pattern: str) -> str | None:
    """A short string the regular expression matches in full, or None if this cannot find one."""
    from re import _parser  # type: ignore[attr-defined]  # the stdlib's own regex parser

    def one_char(items: list) -> str | None:
        negate = bool(items) and items[0][0] is _parser.NEGATE
        def member(ch: str) -> bool:
            for op, av in items[1 if negate else 0:]:
                if op is _parser.LITERAL and ord(ch) == av:
                    return True
                if op is _parser.RANGE and av[0] <= ord(ch) <= av[1]:
                    return True
                if op is _parser.CATEGORY and re.fullmatch(
                        {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_WORD": r"\w",
                         "CATEGORY_NOT_WORD": r"\W", "CATEGORY_SPACE": r"\s", "CATEGORY_NOT_SPACE": r"\S"
                         }.get(str(av), r"(?!)"), ch):
                    return True
            return False
        return next((ch for ch in "ax0-_.:/Z" if member(ch) != negate), None)

    def gen(items) -> str | None:
        out = []
        for op, av in items:
            if op is _parser.LITERAL:
                out.append(chr(av))
            elif op is _parser.NOT_LITERAL:
                out.append("a" if av != ord("a") else "b")
            elif op is _parser.ANY:
                out.append("a")
            elif op is _parser.IN:
                ch = one_char(av)
                if ch is None:
                    return None
                out.append(ch)
            elif op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT, _parser.POSSESSIVE_REPEAT):
                low, _high, sub = av
                part = gen(sub)
                if part is None:
                    return None
                out.append(part * low)
            elif op is _parser.SUBPATTERN:
                part = gen(av[-1])
                if part is None:
                    return None
                out.append(part)
            elif op is _parser.BRANCH:
                part = next((p for p in (gen(alt) for alt in av[1]) if p is not None), None)
                if part is None:
                    return None
                out.append(part)
            elif op is _parser.AT:
                continue
            else:  # back-references, look-arounds: not RE2 anyway
                return None
        return "".join(out)

    try:
        found = gen(_parser.parse(pattern))
    except (re.error, RecursionError):
        return None
    return found if found is not None and re.fullmatch(pattern, found) else None


def _value_for(label: str, matchers: list[Matcher], default: str | None) -> str | None:
    """A value of ``label`` that every matcher on it accepts ("" is an absent label)."""
    candidates = [default] if default is not None else []
    candidates += [m.value for m in matchers if m.op == "="]
    candidates += [_example(m.value) for m in matchers if m.op == "=~"]
    candidates += ["" if default is None else None, "regwatch", "regwatch-0", "x"]
    for value in candidates:
        if value is not None and all(m.matches(value) for m in matchers):
            return value
    wanted = ", ".join(f"{m.label}{m.op}{json.dumps(m.value)}" for m in matchers)
    raise ValueError(f"no value of label {label!r} satisfies {wanted}; the promtool tests need one")


def scrape_labels(selector: str, defaults: dict[str, str]) -> dict[str, str]:
    """The scrape labels of the test series: ``defaults``, changed as far as ``selector`` needs."""
    matchers = parse_selector(selector)
    out = dict(defaults)
    for label in dict.fromkeys(m.label for m in matchers):
        value = _value_for(label, [m for m in matchers if m.label == label], defaults.get(label))
        if value:
            out[label] = value
        else:
            out.pop(label, None)
    return out


def _scrape(o: AlertOptions, harbor: bool = False) -> dict[str, str]:
    return scrape_labels(o.harbor_selector, HARBOR_SCRAPE) if harbor else scrape_labels(o.selector, SCRAPE)


def _series(o: AlertOptions, name: str, labels: dict[str, str], harbor: bool = False) -> str:
    body = ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in {**labels, **_scrape(o, harbor)}.items())
    return f"{name}{{{body}}}"


def _num(value: float) -> str:
    """A threshold as PromQL text: short where that is exact (0.85, 86400), else every digit."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def for_seconds(duration: str) -> float:
    """A `for:` duration in seconds (0s allowed, unlike a range); ValueError if malformed."""
    return duration_seconds(duration, zero=True)


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
_IF = re.compile(r"\{\{\s*if \$labels\.(\w+)\s*\}\}(.*?)\{\{\s*end\s*\}\}", re.S)
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
    template = _IF.sub(lambda m: m.group(2) if labels.get(m.group(1)) else "", template)
    return _TEMPLATE.sub(sub, template)


def _expected(alert: Alert, options: AlertOptions, labels: dict[str, str], value: float) -> tuple[dict, dict]:
    scrape = _scrape(options, alert.harbor)
    # A scrape label the expression aggregates away is gone, unless it is one the case's
    # series carry themselves (the selector pinned e.g. `target`, which the rule keeps).
    kept = {k: v for k, v in scrape.items()
            if k in labels or ((alert.keep is None or k in alert.keep) and k not in alert.drop)}
    all_labels = {**labels, **kept, **alert.labels, "severity": alert.severity, **options.extra_labels,
                  "alertname": alert.name}
    # $labels in a template are the expression's labels, without the rule's own (Prometheus rules/alerting.go).
    series_labels = {**labels, **kept}
    annotations = {
        "summary": render_template(alert.summary, series_labels, value),
        "description": render_template(alert.description, series_labels, value),
        "runbook_url": f"{options.runbook_base}#{alert.name.lower()}",
    }
    return {k: v for k, v in all_labels.items() if k != "alertname"}, annotations


# --- the alerts ----------------------------------------------------------------------------------

def _sel(options: AlertOptions, extra: str = "", harbor: bool = False) -> str:
    selector = render_selector(parse_selector(options.harbor_selector if harbor else options.selector))
    parts = [p for p in (selector, extra) if p]
    return "{" + ",".join(parts) + "}" if parts else ""


def _gauge_alert(options: AlertOptions, *, name: str, severity: str, for_default: str, metric: str,
                 labels: dict[str, str], op: str, threshold: float, bad: float, good: float,
                 summary: str, description: str, expr: str | None = None,
                 extra_series: dict[str, str] | None = None, why_good: str = "just under the threshold") -> Alert:
    """An alert on one gauge crossing a threshold: fires on ``bad``, silent on ``good`` and a blip."""
    for_ = options.for_durations.get(name, for_default)
    wait = _minutes(for_)
    expr = expr or f"{metric}{_sel(options)} {op} {_num(threshold)}"
    series_name = _series(options, metric, labels)
    extra = extra_series or {}
    fire_at = wait + 2
    alert = Alert(name, severity, for_, expr, summary, description,
                  fire=Case({series_name: f"{bad}+0x{fire_at + 2}", **extra}, fire_at),
                  silent=[Case({series_name: f"{good}+0x{fire_at + 2}", **extra}, fire_at, why=why_good)])
    if wait > 1:
        # Bad for less than `for:`, then good again: pending, never firing.
        blip = f"{good}x2 {bad}x{wait - 2} {good}x{wait + 4}"
        alert.silent.append(Case({series_name: blip, **extra}, 2 + wait - 1, why="a blip shorter than for:"))
    alert.fire.expect = [(dict(labels), bad, None)]
    return alert


# The shortest window a range option may have (several scrapes at the usual 15 s - 1 min).
MIN_WINDOW = 300.0


def problems(o: AlertOptions) -> list[tuple[str, str]]:
    """(option, message) for values each fine alone but unusable here or together."""
    out = []
    smallest = min(float(b) for b in _BUCKETS)
    if not smallest <= o.pull_latency_threshold < LARGEST_BUCKET:
        out.append(("pull_latency_threshold",
                    f"{o.pull_latency_threshold:g} s is outside the probe histogram's buckets ({smallest:g} s up to "
                    f"{LARGEST_BUCKET:g} s, not included): the latency quantile cannot tell pulls apart there"))
    if o.seconds("tls_critical_within") >= o.seconds("tls_warning_within"):
        out.append(("tls_critical_within", f"{o.tls_critical_within} is not shorter than --tls-warning-within "
                                           f"{o.tls_warning_within}; the critical window lies inside the warning one"))
    predicted_for = for_seconds(o.for_durations.get("RegistryStoragePredictedFull", "1h"))
    if o.seconds("storage_predict_horizon") < predicted_for + 600:
        out.append(("storage_predict_horizon",
                    f"{o.storage_predict_horizon} is not 10m longer than RegistryStoragePredictedFull's for: "
                    f"({humanize_duration(predicted_for)}); the alert would fire only once the volume is full"))
    for name in ("storage_predict_window", "scan_all_stuck_for"):
        if o.seconds(name) < MIN_WINDOW:
            out.append((name, f"{getattr(o, name)} is shorter than {humanize_duration(MIN_WINDOW)}: a window must "
                              "hold several scrapes for a trend or a count of changes to mean anything"))
    for name, selector, defaults in (("selector", o.selector, SCRAPE), ("harbor_selector", o.harbor_selector,
                                                                         HARBOR_SCRAPE)):
        try:
            scrape_labels(selector, defaults)
        except ValueError as exc:
            out.append((name, str(exc)))
    return out


def alert_names() -> set[str]:
    return {alert.name for alert in build_alerts(AlertOptions())}


def build_alerts(options: AlertOptions) -> list[Alert]:
    o = options
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
        op=">", threshold=o.storage_threshold, bad=_above(o.storage_threshold), good=_below(o.storage_threshold),
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
    alerts.extend(_upstream_ratelimit(o))

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

    gc_max_age = o.seconds("gc_max_age")
    alerts.append(_age_alert(
        o, name="HarborGarbageCollectionNotRun", metric="regwatch_harbor_gc_last_success_timestamp_seconds",
        labels={"target": "harbor"}, max_age=gc_max_age,
        summary="Harbor {{ $labels.target }}: no successful garbage collection for {{ $value | humanizeDuration }}.",
        description="The last successful garbage collection of {{ $labels.target }} ended "
                    "{{ $value | humanizeDuration }} ago (limit "
                    f"{humanize_duration(gc_max_age)}); check the GC schedule."))

    alerts.append(_scan_all_stuck(o))
    alerts.extend(_schedules(o))

    robot_within = o.seconds("robot_expiry_within")
    alerts.append(_gauge_alert(
        o, name="HarborRobotAccountExpiring", severity="warning", for_default="1h",
        metric="regwatch_harbor_robot_expiry_timestamp_seconds", labels={"target": "harbor", "robot": "robot$ci"},
        op="<", threshold=0, bad=0, good=0,
        expr=(f"regwatch_harbor_robot_expiry_timestamp_seconds{_sel(o)} - time() < {_num(robot_within)} "
              f"unless on (job, instance, target, robot) regwatch_harbor_robot_disabled{_sel(o)} == 1"),
        summary="Harbor {{ $labels.target }}: robot {{ $labels.robot }} expires in {{ $value | humanizeDuration }}.",
        description="Robot account {{ $labels.robot }} on {{ $labels.target }} expires in "
                    "{{ $value | humanizeDuration }}; every pipeline using it starts failing then. Refresh its "
                    "secret or extend it."))
    # A constant expiry is inside the window only since `expiry - within`: long enough for `for:`.
    robot_hold = for_seconds(alerts[-1].for_)
    _time_relative(alerts[-1], o, good_offset=robot_within + DAY,
                   bad_offset=min(robot_within / 2, robot_within - robot_hold - STEP), edge_offset=robot_within - 1)

    alerts.append(_gauge_alert(
        o, name="HarborProjectQuotaAlmostFull", severity="warning", for_default="15m",
        metric="regwatch_harbor_project_quota_used_ratio", labels={"target": "harbor", "project": "team-a"},
        op=">", threshold=o.storage_threshold, bad=_above(o.storage_threshold), good=_below(o.storage_threshold),
        summary="Harbor {{ $labels.target }}: project {{ $labels.project }} uses "
                "{{ $value | humanizePercentage }} of its quota.",
        description="Project {{ $labels.project }} on {{ $labels.target }} uses {{ $value | humanizePercentage }} "
                    "of its storage quota; pushes fail at 100 %."))

    alerts.append(_harbor_proxy_hit_ratio(o))
    alerts.extend(_drills(o))
    alerts.append(_cache_hit_ratio(o))
    return alerts


DAY = 86400.0


def _above(threshold: float) -> float:
    """A ratio clearly over a "> threshold" (at most 1)."""
    return round(min(1.0, threshold + 0.05), 6) if round(min(1.0, threshold + 0.05), 6) > threshold else 1.0


def _below(threshold: float) -> float:
    """A ratio just under a "> threshold"."""
    return round(threshold - 0.01, 6) if round(threshold - 0.01, 6) < threshold else threshold / 2


def _age_alert(o: AlertOptions, *, name: str, metric: str, labels: dict[str, str], max_age: float,
               summary: str, description: str, match: str = "", for_default: str = "15m") -> Alert:
    alert = _gauge_alert(
        o, name=name, severity="warning", for_default=for_default, metric=metric, labels=labels, op=">",
        threshold=0, bad=0, good=0, expr=f"time() - {metric}{_sel(o, match)} > {_num(max_age)}", summary=summary,
        description=description)
    # A constant timestamp is too old only since `timestamp + max_age`: long enough for `for:`.
    hold = for_seconds(alert.for_)
    _time_relative(alert, o, good_offset=-(max_age - min(300, max_age / 2)),
                   bad_offset=-(max_age + max(3600, hold + STEP)), edge_offset=-(max_age + 1))
    return alert


def _time_relative(alert: Alert, o: AlertOptions, *, good_offset: float, bad_offset: float,
                   edge_offset: float) -> None:
    """Rewrite a gauge alert's cases for a timestamp metric compared with time().

    The series hold ``eval time + offset`` (promtool's clock starts at 0), so the alert's
    value is the offset (an expiry) or minus it (an age) at the evaluation instant.
    ``edge_offset`` is the offset at which the condition just holds (negative for an age): the
    blip case crosses it 3 minutes in, is evaluated before `for:` has passed, and then turns
    good (a fresh timestamp).
    """
    fire = alert.fire
    name = next(iter(fire.series))
    at = fire.eval_minutes * STEP
    fire.series[name] = f"{at + bad_offset:.0f}+0x{fire.eval_minutes + 2}"
    labels = fire.expect[0][0]
    # The value is `time() - timestamp` for an age, `timestamp - time()` for an expiry.
    fire.expect = [(labels, round(bad_offset) if edge_offset >= 0 else -round(bad_offset), None)]
    alert.silent = [Case({name: f"{at + good_offset:.0f}+0x{fire.eval_minutes + 2}"}, fire.eval_minutes,
                         why="just inside the limit")]
    wait = _minutes(alert.for_)
    if wait > 1:
        start, evaluated = 3, 3 + wait - 1
        after = (evaluated + 1) * STEP + good_offset
        alert.silent.append(Case({name: f"{start * STEP + edge_offset:.0f}x{evaluated} {after:.0f}x3"}, evaluated,
                                 why="a blip shorter than for:"))


def _predicted_full(o: AlertOptions) -> Alert:
    name = "RegistryStoragePredictedFull"
    for_ = o.for_durations.get(name, "1h")
    horizon = o.seconds("storage_predict_horizon")
    window = o.storage_predict_window
    used = f"regwatch_storage_used_ratio{_sel(o)}"
    expr = (f"predict_linear(regwatch_storage_available_bytes{_sel(o)}[{window}], {_num(horizon)}) < 0 "
            f"and {used} > 0.5")
    wait = _minutes(for_)
    at = wait + 30
    labels = {"volume": "registry-data"}
    # Free space falls by `fall` bytes a minute: full in (free / fall) minutes from the evaluation.
    def series(minutes_to_full: float) -> dict[str, str]:
        free_at_eval = 30e9
        fall = free_at_eval / minutes_to_full
        start = free_at_eval + fall * at
        return {_series(o, "regwatch_storage_available_bytes", labels): f"{start:.0f}-{fall:.6g}x{at + 2}",
                _series(o, "regwatch_storage_used_ratio", labels): f"0.7x{at + 2}"}
    # Full within the horizon for all of `for:` before the evaluation (problems() keeps the horizon
    # 10 minutes longer than `for:`).
    to_full = min(horizon / 60 / 2, horizon / 60 - wait - 5)
    # predict_linear's value comes from a regression; these annotations do not print it.
    fire = Case(series(to_full), at, [(labels, 0.0, None)])
    silent = [Case(series(horizon / 60 * 2), at, why="full only after twice the horizon")]
    if wait > 1:
        # Falling towards full all along, but more than half used only for the last wait-1 minutes.
        blip = series(to_full)
        used_key = _series(o, "regwatch_storage_used_ratio", labels)
        start = at - (wait - 1)
        blip[used_key] = f"0.4x{start - 1} 0.7x{at - start + 3}"
        silent.append(Case(blip, at, why="a blip shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "Registry storage {{ $labels.volume }}{{ $labels.target }} will be full within "
                 f"{humanize_duration(horizon)}.",
                 "At the rate of the last " + window + ", registry storage "
                 "{{ $labels.volume }}{{ $labels.target }}{{ $labels.store }} runs out of space within "
                 f"{humanize_duration(horizon)}.", fire, silent)


def _pull_latency(o: AlertOptions) -> Alert:
    name = "RegistryPullLatencyHigh"
    for_ = o.for_durations.get(name, "10m")
    q = _num(o.pull_latency_quantile)
    expr = f'{PULL_LATENCY_QUANTILE}{{quantile="{q}"}} > {_num(o.pull_latency_threshold)}'
    wait = _minutes(for_)
    at = wait + 8
    labels = {"target": "hub", "image": "library/alpine"}
    # Probes every minute: all of them in one bucket above (or at/below) the threshold.
    slow, fast = _bucket_around(o.pull_latency_threshold, o.pull_latency_quantile)

    def series(bucket_le: float, probes_per_min: int = 2) -> dict[str, str]:
        out = {}
        for le in (*_BUCKETS, "+Inf"):
            in_bucket = le == "+Inf" or float(le) >= bucket_le
            out[_series(o, "regwatch_probe_pull_duration_seconds_bucket", {**labels, "le": str(le)})] = (
                f"0+{probes_per_min if in_bucket else 0}x{at + 2}")
        out[_series(o, "regwatch_probe_pull_duration_seconds_count", labels)] = f"0+{probes_per_min}x{at + 2}"
        return out
    expected_value = _quantile_in_bucket(o.pull_latency_quantile, slow)
    fire = Case(series(slow), at, [({**labels, "quantile": q}, expected_value, None)])
    silent = [Case(series(fast), at, why="every pull within the threshold")]
    alert = Alert(name, "warning", for_, expr,
                  "Pulls from {{ $labels.target }} are slow: p" + f"{o.pull_latency_quantile * 100:g}" +
                  " {{ $value | humanizeDuration }}.",
                  "The " + f"{o.pull_latency_quantile * 100:g}" + "th percentile of probe pulls of "
                  "{{ $labels.image }} from {{ $labels.target }} is {{ $value | humanizeDuration }} (threshold "
                  f"{humanize_duration(o.pull_latency_threshold)}). regwatch_probe_phase_duration_seconds shows "
                  "which phase is slow.", fire, silent, keep=("job",))
    if wait >= 6:
        # Fast probes, then slow ones for less than `for:` (long enough that the whole 5m rate
        # window is slow, as in the firing case), evaluated at the end of the slow run.
        fast_minutes, slow_minutes = 5, wait - 1
        total = fast_minutes + slow_minutes + 5
        blip = {}
        for le in (*_BUCKETS, "+Inf"):
            bound = math.inf if le == "+Inf" else float(le)
            key = _series(o, "regwatch_probe_pull_duration_seconds_bucket", {**labels, "le": str(le)})
            if bound >= slow:
                blip[key] = f"0+2x{total}"
            elif bound >= fast:
                blip[key] = f"0+2x{fast_minutes} {2 * fast_minutes}+0x{slow_minutes} {2 * fast_minutes}+2x5"
            else:
                blip[key] = f"0x{total}"
        blip[_series(o, "regwatch_probe_pull_duration_seconds_count", labels)] = f"0+2x{total}"
        alert.silent.append(Case(blip, fast_minutes + slow_minutes, why="a blip shorter than for:"))
    return alert


# The probe histogram's bucket bounds as the exposition writes them (le="1.0").
_BUCKETS = tuple(_le(b) for b in BUCKETS if b != math.inf)
# histogram_quantile cannot report more than the largest finite bound: a threshold must be below it.
LARGEST_BUCKET = max(float(b) for b in _BUCKETS)


def _fmt_le(value: float) -> str:
    return "+Inf" if value == math.inf else next(b for b in _BUCKETS if float(b) == value)


def _bucket_around(threshold: float, quantile: float) -> tuple[float, float]:
    """A bucket whose pulls put the quantile over the threshold, and one at or below it (fast pulls)."""
    bounds = [float(b) for b in _BUCKETS]
    # The quantile interpolates inside the bucket: the first bucket above the threshold may not
    # lift it over (threshold 0.55 s, p50 of pulls in (0.5, 0.6] is 0.55 s); take the next.
    slow = next((b for b in bounds if b > threshold and _quantile_in_bucket(quantile, b) > threshold), math.inf)
    fast = max((b for b in bounds if b <= threshold), default=None)
    if fast is None:
        # Below the smallest bound no bucket is "fast": every pull is reported inside the first one.
        raise ValueError(f"{threshold:g} s is below the probe histogram's smallest bucket ({bounds[0]:g} s)")
    return slow, fast


def _quantile_in_bucket(q: float, upper: float) -> float:
    """histogram_quantile's linear interpolation when every observation lies in (lower, upper].

    In the +Inf bucket it returns the largest finite bound.
    """
    bounds = [float(b) for b in _BUCKETS]
    if upper == math.inf:
        return bounds[-1]
    lower = max([b for b in bounds if b < upper], default=0.0)
    return lower + (upper - lower) * q


def _auth_failures(o: AlertOptions) -> Alert:
    name = "RegistryAuthFailureRateHigh"
    for_ = o.for_durations.get(name, "10m")
    expr = f"{AUTH_FAILURE_RATIO} > {_num(o.auth_failure_threshold)}"
    wait = _minutes(for_)
    at = wait + 8
    src = {"source": "registry"}
    per_min = 1000
    bad_failures = min(per_min, math.ceil(per_min * o.auth_failure_threshold * 2))
    if bad_failures / per_min <= o.auth_failure_threshold:
        bad_failures = per_min
    good_failures = max(0, math.ceil(per_min * o.auth_failure_threshold) - 1)

    def series(failures_per_min: int, challenges_per_min: int = 0) -> dict[str, str]:
        out = {
            _series(o, "regwatch_auth_requests_total", src): f"0+{per_min}x{at + 2}",
            _series(o, "regwatch_auth_failures_total", {**src, "reason": "bad_credentials"}):
                f"0+{failures_per_min}x{at + 2}",
        }
        if challenges_per_min:
            out[_series(o, "regwatch_auth_challenges_total", src)] = f"0+{challenges_per_min}x{at + 2}"
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
        silent.append(Case(blip, 10 + 4, why="a blip shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "Authentication failures on {{ $labels.source }}: {{ $value | humanizePercentage }} of attempts.",
                 "{{ $value | humanizePercentage }} of authentication attempts on {{ $labels.source }} fail "
                 f"(threshold {humanize_percentage(o.auth_failure_threshold)}): a brute-force attempt or a "
                 "client with a stale password. regwatch_auth_failures_total shows the reason.", fire, silent,
                 keep=("job",))


def _tls(o: AlertOptions) -> list[Alert]:
    """One alert name, two severities: warning within tls_warning_within, critical within tls_critical_within.

    The series is one constant timestamp per case, so which severities fire at the evaluation is
    worked out here (cond(m): ``expiry - 60 m < within``; firing once it has held for `for:`).
    """
    name = "RegistryTLSCertificateExpiring"
    for_ = o.for_durations.get(name, "10m")
    hold, wait = for_seconds(for_), _minutes(for_)
    labels = {"target": "hub"}
    key = _series(o, "regwatch_tls_cert_expiry_timestamp_seconds", labels)
    windows = {"warning": o.seconds("tls_warning_within"), "critical": o.seconds("tls_critical_within")}
    alerts = {
        severity: Alert(name, severity, for_,
                        f"regwatch_tls_cert_expiry_timestamp_seconds{_sel(o)} - time() < {_num(within)}",
                        "The TLS certificate of {{ $labels.target }} expires in {{ $value | humanizeDuration }}.",
                        "The earliest certificate in the chain {{ $labels.target }} presents expires in "
                        "{{ $value | humanizeDuration }}; renew it before clients refuse the registry.",
                        fire=Case({}, 0), silent=[])
        for severity, within in windows.items()}

    def case(expiry: float, at: int, why: str = "", after: float | None = None) -> Case:
        expiry = round(expiry)
        expect = []
        for severity, within in windows.items():
            first = next((m for m in range(at + 1) if expiry - STEP * m < within), None)
            if first is not None and (at - first) * STEP >= hold:
                expect.append((labels, expiry - STEP * at, alerts[severity]))
        values = f"{expiry}x{at}" + (f" {round(after)}x3" if after is not None else f" {expiry}x2")
        return Case({key: values}, at, expect, why)

    at = wait + 2
    for severity, within in windows.items():
        alert = alerts[severity]
        alert.fire = case(at * STEP + min(within - min(DAY / 2, within / 2), within - hold - STEP), at)
        outside = within + DAY if severity == "warning" else within + 1
        alert.silent = [case(at * STEP + outside, at,
                             why="just inside the limit" if severity == "warning"
                             else "just outside the critical window")]
        if wait > 1:
            # Inside the window from minute 3, evaluated before `for:` has passed, then renewed.
            evaluated = 3 + wait - 1
            alert.silent.append(case(3 * STEP + within - 1, evaluated, why="a blip shorter than for:",
                                     after=(evaluated + 1) * STEP + within + DAY))
        for c in (alert.fire, *alert.silent):
            fired = {rule.severity for _, _, rule in c.expect}
            if (severity in fired) != (c is alert.fire):
                raise ValueError(f"{name}: the {severity} promtool case {c.why or 'that fires'!r} fires "
                                 f"{sorted(fired) or 'nothing'}; the tests cannot be made for these windows and for:")
    return list(alerts.values())


def _upstream_ratelimit(o: AlertOptions) -> list[Alert]:
    """Docker Hub-style pull limits of an upstream, read with HEAD requests (which do not count)."""
    labels = {"target": "dockerhub", "source": "203.0.113.7"}
    limit = 10000
    longest = max(_minutes(o.for_durations.get(n, "5m")) for n in ("RegistryUpstreamRateLimitLow",
                                                                     "RegistryUpstreamRateLimitExhausted"))
    limit_series = {_series(o, "regwatch_upstream_ratelimit_limit", labels): f"{limit}x{longest + 10}"}
    threshold = o.upstream_ratelimit_threshold
    bad = math.ceil(limit * threshold) - 1
    good = math.ceil(limit * threshold)
    low = _gauge_alert(
        o, name="RegistryUpstreamRateLimitLow", severity="warning", for_default="5m",
        metric="regwatch_upstream_ratelimit_remaining", labels=labels, op="<", threshold=threshold,
        bad=bad, good=good, why_good="at the threshold",
        expr=(f"regwatch_upstream_ratelimit_remaining{_sel(o)} / regwatch_upstream_ratelimit_limit{_sel(o)} "
              f"< {_num(threshold)}"),
        extra_series=limit_series,
        summary="Upstream {{ $labels.target }}: {{ $value | humanizePercentage }} of the pull rate limit left.",
        description="Only {{ $value | humanizePercentage }} of {{ $labels.target }}'s pull limit is left for "
                    "{{ $labels.source }} (threshold " + humanize_percentage(threshold) + "). When it runs out, "
                    "pulls of images the cache does not hold fail with 429 until the window resets "
                    "(regwatch_upstream_ratelimit_window_seconds).")
    low.fire.expect = [(labels, bad / limit, None)]
    exhausted = _gauge_alert(
        o, name="RegistryUpstreamRateLimitExhausted", severity="critical", for_default="2m",
        metric="regwatch_upstream_ratelimit_remaining", labels=labels, op="==", threshold=0, bad=0, good=1,
        why_good="one pull left", extra_series=limit_series,
        summary="Upstream {{ $labels.target }}: the pull rate limit is used up.",
        description="{{ $labels.target }} allows {{ $labels.source }} no more pulls in this window: pulls of "
                    "images the cache does not hold fail with 429 now. regwatch_upstream_ratelimit_window_seconds "
                    "is the window.")
    return [low, exhausted]


def _scan_all_stuck(o: AlertOptions) -> Alert:
    name = "HarborScanAllStuck"
    for_ = o.for_durations.get(name, "15m")
    window = o.scan_all_stuck_for
    expr = (f"regwatch_harbor_scan_all_ongoing{_sel(o)} == 1 "
            f"and on (job, instance, target) changes(regwatch_harbor_scan_all_completed{_sel(o)}[{window}]) == 0")
    wait, span = _minutes(for_), _minutes(window)
    at = span + wait + 5
    labels = {"target": "harbor"}
    ongoing = _series(o, "regwatch_harbor_scan_all_ongoing", labels)
    completed = _series(o, "regwatch_harbor_scan_all_completed", labels)
    fire = Case({ongoing: f"1x{at + 2}", completed: f"100x{at + 2}"}, at, [(labels, 1, None)])
    silent = [Case({ongoing: f"1x{at + 2}", completed: f"100+1x{at + 2}"}, at, why="slow but moving")]
    if wait > 1:
        # Stalled from the start, evaluated before `for:` has passed, then moving again.
        silent.append(Case({ongoing: f"1x{at + 2}", completed: f"100x{wait - 1} 101+1x{at}"}, wait - 1,
                           why="a blip shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "Harbor {{ $labels.target }}: scan-all has made no progress for " + window + ".",
                 "A scan-all on {{ $labels.target }} is running but no scan finished in the last " + window +
                 "; check the Trivy adapter and the job service queue.", fire, silent)


def _schedules(o: AlertOptions) -> list[Alert]:
    """Harbor's scheduled jobs (replication, GC, scan-all, audit-log purge, retention)."""
    grace = o.seconds("schedule_grace")
    metric = "regwatch_harbor_schedule_next_run_timestamp_seconds"
    missed = _age_alert(
        o, name="HarborScheduledJobMissed", metric=metric, for_default="5m",
        labels={"target": "harbor", "schedule": "replication", "policy": "to-dr"}, max_age=grace,
        summary="Harbor {{ $labels.target }}: the scheduled {{ $labels.schedule }} job"
                "{{ if $labels.policy }} {{ $labels.policy }}{{ end }} is {{ $value | humanizeDuration }} late.",
        description="Harbor {{ $labels.target }} should have started the {{ $labels.schedule }} job"
                    "{{ if $labels.policy }} of {{ $labels.policy }}{{ end }} {{ $value | humanizeDuration }} ago "
                    f"(grace {humanize_duration(grace)}) and has not: its schedule may have stopped triggering "
                    "(seen after upgrades) or the job service is stuck. "
                    "regwatch_harbor_schedule_last_run_start_timestamp_seconds is the last start.")
    # A system job (policy "") in the same case: both fire, each with its own text.
    name, values = next(iter(missed.fire.series.items()))
    gc = {"target": "harbor", "schedule": "gc"}
    missed.fire.series[_series(o, metric, gc)] = values
    missed.fire.expect.append((gc, missed.fire.expect[0][1], None))

    failed = _gauge_alert(
        o, name="HarborScheduledJobFailed", severity="warning", for_default="5m",
        metric="regwatch_harbor_schedule_last_run_success", labels={"target": "harbor", "schedule": "scan_all"},
        op="==", threshold=0, bad=0, good=1,
        # GC and replication failures have their own alerts, with their own runbook sections.
        expr=f"regwatch_harbor_schedule_last_run_success{_sel(o, 'schedule!~' + json.dumps('gc|replication'))} == 0",
        summary="Harbor {{ $labels.target }}: the last scheduled {{ $labels.schedule }} job"
                "{{ if $labels.policy }} {{ $labels.policy }}{{ end }} failed.",
        description="The last run of the scheduled {{ $labels.schedule }} job"
                    "{{ if $labels.policy }} of {{ $labels.policy }}{{ end }} on {{ $labels.target }} ended in "
                    "error or was stopped. Harbor's job log for that execution says why.")
    failed.silent.append(Case({_series(o, "regwatch_harbor_schedule_last_run_success",
                                       {"target": "harbor", "schedule": "gc"}): "0x10"}, 8,
                              why="a failed GC is HarborGarbageCollectionFailed's"))
    return [missed, failed]


def _harbor_proxy_hit_ratio(o: AlertOptions) -> Alert:
    """Harbor 2.16's proxy-cache counters, per proxy-cache project (recorded as HARBOR_PROXY_HIT_RATIO)."""
    name = "HarborProxyCacheHitRatioLow"
    for_ = o.for_durations.get(name, "30m")
    threshold, minimum = o.cache_hit_ratio_threshold, o.harbor_proxy_min_requests
    expr = (f"{HARBOR_PROXY_HIT_RATIO} < {_num(threshold)} "
            f"and {_harbor_sum('increase', 'harbor_core_http_registry_proxy_requests_total', o)} >= {minimum}")
    wait = _minutes(for_)
    at = wait + 35
    project = {"project": "dockerhub-proxy"}
    # Enough requests a minute that 30 minutes of them reach the minimum.
    per_min = 100 * max(1, math.ceil((minimum + 1) / 3000))

    def series(hits_per_100: int, requests_per_min: int = per_min, start: int = 0) -> dict[str, str]:
        upstream = requests_per_min * (100 - hits_per_100) // 100
        gap = f"_x{start} " if start else ""
        return {
            _series(o, "harbor_core_http_registry_proxy_requests_total", {**project, "method": "GET"}, harbor=True):
                f"{gap}0+{requests_per_min}x{at + 2}",
            _series(o, "harbor_core_http_registry_proxy_upstream_requests_total", {**project, "method": "GET"},
                    harbor=True): f"{gap}0+{upstream}x{at + 2}",
        }
    bad_hits = max(0, math.floor(100 * threshold) - 20)
    good_hits = min(100, math.ceil(100 * threshold) + 1)
    fire = Case(series(bad_hits), at, [(project, bad_hits / 100, None)])
    silent = [Case(series(good_hits), at, why="just above the threshold")]
    if minimum > 30:
        # Under the minimum in 30 minutes: a few first pulls of new images are all misses.
        silent.append(Case(series(0, requests_per_min=math.ceil(minimum / 30) - 1), at,
                           why="too few requests to judge"))
    if wait > 2:
        # A new proxy project: all misses from its first pull, for less than `for:`.
        start, evaluated = 3, 3 + wait - 1
        busy = max(per_min, math.ceil((minimum + 1) / (wait - 1)))
        silent.append(Case(series(0, requests_per_min=busy, start=start), evaluated,
                           why="a blip shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "Harbor proxy-cache project {{ $labels.project }}: hit ratio {{ $value | humanizePercentage }}.",
                 "Only {{ $value | humanizePercentage }} of the pulls from proxy-cache project "
                 "{{ $labels.project }} ({{ $labels.job }}) in the last 30 minutes were served from Harbor's "
                 f"cache (threshold {humanize_percentage(threshold)}): the rest went to the upstream, with its "
                 "rate limits. Check the project's upstream endpoint health and its cache retention.",
                 fire, silent, harbor=True, drop=HARBOR_AGGREGATED)


def _drills(o: AlertOptions) -> list[Alert]:
    """`regwatch drill`: a full drill proves a restore; each phase also reports on its own."""
    store = {"store": "/backup/store"}
    sel = _sel(o)
    out = []
    out.append(_gauge_alert(
        o, name="RegistryDrillFailed", severity="warning", for_default="0s", metric="regwatch_drill_success",
        labels=store, op="==", threshold=0, bad=0, good=1,
        summary="The last DR drill of {{ $labels.store }} failed.",
        description="The last full `regwatch drill` of store {{ $labels.store }} (backup, restore into the "
                    "destination, verify) failed or selected no image: the backup may not restore. Its "
                    "report.json names the image and phase."))

    phase_failed = _gauge_alert(
        o, name="RegistryDrillPhaseFailed", severity="warning", for_default="0s",
        metric="regwatch_drill_phase_success", labels={**store, "phase": "backup"}, op="==", threshold=0, bad=0,
        good=1,
        expr=(f"regwatch_drill_phase_success{sel} == 0 "
              f"unless on (job, instance, store) regwatch_drill_success{sel} == 0"),
        summary="The last {{ $labels.phase }} of {{ $labels.store }} failed.",
        description="The last `regwatch drill --{{ $labels.phase }}` of store {{ $labels.store }} failed: "
                    "its report.json names the image and the reason.")
    phase_failed.silent.append(Case({
        _series(o, "regwatch_drill_phase_success", {**store, "phase": "restore"}): "0x10",
        _series(o, "regwatch_drill_success", store): "0x10"}, 5,
        why="a failed full drill is RegistryDrillFailed's"))
    out.append(phase_failed)

    drill_max_age = o.seconds("drill_max_age")
    out.append(_age_alert(
        o, name="RegistryDrillTooOld", metric="regwatch_drill_last_success_timestamp_seconds",
        labels=store, max_age=drill_max_age,
        summary="No passing DR drill of {{ $labels.store }} for {{ $value | humanizeDuration }}.",
        description="The last full drill of {{ $labels.store }} that passed (backup, restore, verify in one run) "
                    "ended {{ $value | humanizeDuration }} ago, longer than "
                    f"{humanize_duration(drill_max_age)}: restores are not proven. Backups alone do not count; "
                    "check the drill CronJob."))

    out.append(_never_passed(o, store))

    backup_max_age = o.seconds("drill_backup_max_age")
    phase_ts = "regwatch_drill_phase_last_success_timestamp_seconds"
    backup_old = _age_alert(
        o, name="RegistryDrillBackupTooOld", metric=phase_ts, match='phase="backup"',
        labels={**store, "phase": "backup"}, max_age=backup_max_age,
        summary="No successful backup into {{ $labels.store }} for {{ $value | humanizeDuration }}.",
        description="The last successful backup into {{ $labels.store }} (a drill or `regwatch drill --backup`) "
                    "ended {{ $value | humanizeDuration }} ago, longer than the recovery point objective of "
                    f"{humanize_duration(backup_max_age)}: images pushed since are not in the store.")
    name = next(iter(backup_old.fire.series))
    values = backup_old.fire.series[name]
    backup_old.silent.append(Case({_series(o, phase_ts, {**store, "phase": "restore"}): values},
                                  backup_old.fire.eval_minutes, why="an old restore is not an old backup"))
    out.append(backup_old)

    threshold = o.drill_coverage_threshold
    out.append(_gauge_alert(
        o, name="RegistryDrillCoverageLow", severity="warning", for_default="0s",
        metric="regwatch_drill_coverage_ratio", labels=store, op="<", threshold=threshold,
        bad=round(max(0.0, threshold - 0.05), 6), good=threshold, why_good="at the threshold",
        summary="The DR store {{ $labels.store }} covers {{ $value | humanizePercentage }} of the source's tags.",
        description="Only {{ $value | humanizePercentage }} of the tags the last drill selected on the source are "
                    f"in {{{{ $labels.store }}}} and verified (threshold {humanize_percentage(threshold)}): the "
                    "rest would be lost in a restore. report.json lists every image and the phase it failed in."))
    return out


def _never_passed(o: AlertOptions, store: dict[str, str]) -> Alert:
    """Backups (or other phases) of a store that has never passed a full drill.

    Backing up and never proving a restore is the risk itself, so an hour is enough: long
    enough for the first full drill after setting a store up, short enough to be noticed.
    """
    name = "RegistryDrillNeverPassed"
    for_ = o.for_durations.get(name, "1h")
    sel = _sel(o)
    expr = (f"max without (phase) (regwatch_drill_phase_success{sel}) "
            f"unless on (job, instance, store) regwatch_drill_last_success_timestamp_seconds{sel}")
    wait = _minutes(for_)
    at = wait + 2
    backup = _series(o, "regwatch_drill_phase_success", {**store, "phase": "backup"})
    full = _series(o, "regwatch_drill_last_success_timestamp_seconds", store)
    fire = Case({backup: f"1x{at + 2}"}, at, [(store, 1, None)])
    silent = [Case({backup: f"1x{at + 2}", full: f"0+60x{at + 2}"}, at, why="a full drill passed")]
    if wait > 1:
        silent.append(Case({backup: f"_x3 1x{at + 2}"}, 3 + wait - 1, why="a blip shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "The DR store {{ $labels.store }} is backed up but has never passed a full drill.",
                 "{{ $labels.store }} has had backups for at least " + humanize_duration(for_seconds(for_)) +
                 " but no full drill (backup, restore into a scratch registry, verify) has ever passed on it: "
                 "nobody knows whether it restores. Run `regwatch drill --source ... --dest ... --store` on it.",
                 fire, silent)


def _cache_hit_ratio(o: AlertOptions) -> Alert:
    name = "RegistryProxyCacheHitRatioLow"
    for_ = o.for_durations.get(name, "30m")
    expr = f"{CACHE_HIT_RATIO} < {_num(o.cache_hit_ratio_threshold)}"
    wait = _minutes(for_)
    at = wait + 35
    labels = {"target": "mirror", "object": "blob"}

    def series(hits: int, misses: int) -> dict[str, str]:
        return {_series(o, "regwatch_proxy_cache_hits_total", labels): f"0+{hits}x{at + 2}",
                _series(o, "regwatch_proxy_cache_misses_total", labels): f"0+{misses}x{at + 2}"}
    bad_hits = max(0, math.floor(100 * o.cache_hit_ratio_threshold) - 20)
    good_hits = min(100, math.ceil(100 * o.cache_hit_ratio_threshold) + 1)
    fire = Case(series(bad_hits, 100 - bad_hits), at, [(labels, bad_hits / 100, None)])
    silent = [Case(series(good_hits, 100 - good_hits), at, why="just above the threshold")]
    if wait > 2:
        # A new cache: all misses from its first pull, for less than `for:`.
        start = 3
        blip = {k: f"_x{start} {v}" for k, v in series(0, 100).items()}
        silent.append(Case(blip, start + wait - 1, why="a blip shorter than for:"))
    return Alert(name, "warning", for_, expr,
                 "Proxy cache {{ $labels.target }}: {{ $labels.object }} hit ratio {{ $value | humanizePercentage }}.",
                 "Only {{ $value | humanizePercentage }} of {{ $labels.object }} requests to pull-through cache "
                 "{{ $labels.target }} are served from the cache (threshold "
                 f"{humanize_percentage(o.cache_hit_ratio_threshold)}): the cache was wiped, is too small, or "
                 "clients bypass it. Every miss goes to the upstream, with its rate limits.", fire, silent,
                 keep=("job",))


# --- recording rules ------------------------------------------------------------------------------

# Harbor core runs as several pods: its counters are summed over them (and over methods).
HARBOR_AGGREGATED = ("instance", "pod", "method")


def _harbor_sum(func: str, metric: str, o: AlertOptions) -> str:
    return f"sum without ({', '.join(HARBOR_AGGREGATED)}) ({func}({metric}{_sel(o, harbor=True)}[30m]))"


def recording_rules(o: AlertOptions) -> list[dict[str, Any]]:
    sel = _sel(o)
    quantiles = sorted({0.5, 0.95, 0.99, o.pull_latency_quantile})
    rules: list[dict[str, Any]] = [
        {"record": PULL_LATENCY_QUANTILE,
         "expr": f"histogram_quantile({_num(q)}, sum by (job, target, image, endpoint, le) "
                 f"(rate(regwatch_probe_pull_duration_seconds_bucket{sel}[5m])))",
         "labels": {"quantile": _num(q)}}
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
    requests = _harbor_sum("rate", "harbor_core_http_registry_proxy_requests_total", o)
    upstream = _harbor_sum("rate", "harbor_core_http_registry_proxy_upstream_requests_total", o)
    rules.append({
        "record": HARBOR_PROXY_HIT_RATIO,
        # 1 - upstream/requests over 30 minutes (a cache's hit ratio moves slowly; 30m is the regwatch
        # cache rule's window too). A project without upstream requests yet has a ratio of 1, not none;
        # a project without requests in the window has none, not 0/0 = NaN.
        "expr": f"1 - ({upstream} or {requests} * 0) / ({requests} > 0)"})
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
