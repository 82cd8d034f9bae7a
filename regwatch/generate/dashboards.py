"""Grafana dashboards as code (grafanalib 0.7.1).

``render_all(form)`` builds every dashboard in one of two forms:

- ``import``: Grafana's "export for sharing externally" form. It has ``__inputs`` (DS_PROMETHEUS)
  and ``__requires``, and every datasource reference is ``${DS_PROMETHEUS}``. Grafana's Import
  screen substitutes that reference; nothing else does.
- ``provisioning``: for file provisioning and the Grafana Helm chart's dashboard sidecar. These
  leave ``${DS_PROMETHEUS}`` literal, so this form selects its datasource through a
  ``datasource`` template variable.

Thresholds drawn on the panels come from ``AlertOptions``, so a panel's red line is where
the alert fires. Panels that share an expression with an alert query the same recording rule.

grafanalib 0.7.1 (its last release) gets several things wrong. ``_Fixed.panel_json`` below
is the one place that corrects them:

- ``GaugePanel`` never writes ``options.reduceOptions`` (issue #575).
- ``Threshold`` writes the string "null" for the base step.
- Every panel defaults to ``maxDataPoints`` 100.
- Panels and targets need ``{type, uid}`` datasource objects.

``_dashboard_json`` corrects the dashboard-level traps: the default ``schemaVersion`` is
12, and grafanalib writes no ``__requires``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attr
from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from regwatch.generate.options import (
    AUTH_FAILURE_RATIO,
    CACHE_HIT_RATIO,
    HARBOR_PROXY_HIT_RATIO,
    PULL_LATENCY_QUANTILE,
    AlertOptions,
)

# What Grafana 10/11 writes; kube-prometheus-stack's mixin dashboards are at 39.
SCHEMA_VERSION = 39
GRAFANA_VERSION = "10.0.0"
FORMS = ("import", "provisioning")
PANEL_NAMES = {"timeseries": "Time series", "stat": "Stat", "gauge": "Gauge", "table": "Table",
               "bargauge": "Bar gauge", "row": "Row"}

J = 'job=~"$job"'
JT = 'job=~"$job",target=~"$target"'
RATE = "$__rate_interval"

# Panels that have data only where a particular source exists: (uid, title) -> why.
NEEDS: dict[tuple[str, str], str] = {}


def needs(uid: str, title: str) -> str | None:
    """Why the panel ``title`` of dashboard ``uid`` can be empty on a plain registry, or None."""
    if not NEEDS:  # filled while the dashboards are built
        render_all()
    return NEEDS.get((uid, title))


# --- the one place that extends grafanalib -------------------------------------------------------

def steps(*pairs: tuple[str, float | None]) -> list[dict[str, Any]]:
    """Threshold steps as Grafana writes them: the base step's value is JSON null."""
    return [{"color": color, "value": value} for color, value in pairs]


def above(limit: float) -> list[dict[str, Any]]:
    return steps(("green", None), ("red", limit))


def below(limit: float) -> list[dict[str, Any]]:
    return steps(("red", None), ("green", limit))


@attr.s
class _Fixed:
    """Mixed into every panel class used here."""

    unit = attr.ib(default="none")
    steps = attr.ib(factory=lambda: steps(("green", None)))
    # Draw the thresholds as lines on time series (the alert's value).
    lines = attr.ib(default=False)
    stack = attr.ib(default=False)
    ds = attr.ib(default=None)

    def panel_json(self, overrides: dict[str, Any]) -> dict[str, Any]:
        res = super().panel_json(overrides)  # type: ignore[misc]
        if res["type"] == "row":
            return {k: res[k] for k in ("collapsed", "gridPos", "id", "panels", "title", "type")}
        res.pop("maxDataPoints", None)
        res["datasource"] = self.ds
        res["targets"] = [_target_json(t, self.ds) for t in self.targets]
        res["fieldConfig"].setdefault("overrides", [])
        # grafanalib writes null for options left unset (color, decimals); Grafana leaves them out.
        defaults = res["fieldConfig"]["defaults"] = {
            k: v for k, v in res["fieldConfig"]["defaults"].items() if v is not None}
        defaults["unit"] = self.unit
        defaults["thresholds"] = {"mode": "absolute", "steps": self.steps}
        if res["type"] == "timeseries":
            custom = defaults["custom"]
            custom["thresholdsStyle"] = {"mode": "line" if self.lines else "off"}
            if self.stack:
                custom["stacking"] = {"mode": "normal", "group": "A"}
                custom["fillOpacity"] = 60
        if res["type"] == "gauge":
            for key in ("calcs", "values", "limit", "override", "title", "links"):
                defaults.pop(key, None)
            res["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                              "showThresholdLabels": False, "showThresholdMarkers": True,
                              "orientation": "auto"}
            res["fieldConfig"].pop("showThresholdLabels", None)
            res["fieldConfig"].pop("showThresholdMarkers", None)
        for key in ("height", "span", "minSpan", "error", "editable", "hideTimeOverride", "transparent",
                    "repeatDirection"):
            res.pop(key, None)
        return {k: v for k, v in res.items() if v is not None and v != []}


def _target_json(target: g.Target, ds: dict[str, str]) -> dict[str, Any]:
    data = target.to_json_data()
    data["datasource"] = ds
    for key in ("query", "target", "metric", "step", "intervalFactor"):
        data.pop(key, None)
    return data


@attr.s
class Row(_Fixed, g.RowPanel):
    pass


@attr.s
class TimeSeries(_Fixed, g.TimeSeries):
    pass


@attr.s
class Stat(_Fixed, g.Stat):
    pass


@attr.s
class Gauge(_Fixed, g.GaugePanel):
    pass


# --- building blocks --------------------------------------------------------------------------------

def _targets(queries: Iterable[tuple[str, str]], instant: bool = False) -> list[g.Target]:
    return [g.Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i), instant=instant)
            for i, (expr, legend) in enumerate(queries)]


class Layout:
    """Places panels left to right in a 24-column grid, wrapping; ``row`` starts a titled row."""

    def __init__(self, ds: dict[str, str], uid: str):
        self.ds, self.uid = ds, uid
        self.panels: list[Any] = []
        self.x = self.y = 0
        self.height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(Row(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=self.y)))
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.x, self.y, self.height = 0, self.y + self.height, 0

    def add(self, cls: type, title: str, queries: list[tuple[str, str]], *, w: int = 8, h: int = 8,
            need: str | None = None, description: str | None = None, **kwargs: Any) -> None:
        if self.x + w > 24:
            self._newline()
        instant = cls is not TimeSeries
        panel = cls(title=title, description=description, targets=_targets(queries, instant=instant), ds=self.ds,
                    gridPos=g.GridPos(h=h, w=w, x=self.x, y=self.y), **kwargs)
        self.panels.append(panel)
        self.x += w
        self.height = max(self.height, h)
        if need:
            NEEDS[(self.uid, title)] = need


def stat(layout: Layout, title: str, queries: list[tuple[str, str]], *, unit: str = "none",
         thresholds: list[dict] | None = None, w: int = 6, h: int = 5, **kwargs: Any) -> None:
    layout.add(Stat, title, queries, w=w, h=h, unit=unit, steps=thresholds or steps(("green", None)),
               reduceCalc="lastNotNull", graphMode="none", colorMode="background" if thresholds else "value",
               **kwargs)


def series(layout: Layout, title: str, queries: list[tuple[str, str]], *, unit: str = "none",
           thresholds: list[dict] | None = None, w: int = 12, h: int = 8, **kwargs: Any) -> None:
    layout.add(TimeSeries, title, queries, w=w, h=h, unit=unit, steps=thresholds or steps(("green", None)),
               lines=thresholds is not None, **kwargs)


# --- the dashboards -----------------------------------------------------------------------------------

HARBOR = "only with a Harbor target"
DRILL = "only after a DR drill (drill.report_dir, Pushgateway or textfile)"
CACHE = "only with a Distribution registry in proxy mode (debug_url) or another pull-through cache"
CACHE_BYTES = ("only with Distribution 3's native proxy counters (registry_proxy_*_bytes_total on its debug "
               "/metrics); Distribution 2.8's expvar counts no bytes")
UPSTREAM = "only with a target of kind upstream (HEAD probes of a Docker Hub-style upstream's rate limit)"
HARBOR_PROXY = ("only when Prometheus scrapes Harbor 2.16+ core (harbor_core_http_registry_proxy_*, comp=core) and "
                "loads the recording rules")
TLS = "only for targets probed over HTTPS"


def overview(lay: Layout, o: AlertOptions) -> None:
    lay.row("Targets")
    stat(lay, "Targets up", [(f"regwatch_target_up{{{JT}}}", "{{target}}")], thresholds=below(1), w=12,
         mappings=[{"type": "value", "options": {"0": {"text": "down"}, "1": {"text": "up"}}}])
    stat(lay, "Collectors failing", [(f"count(regwatch_collector_success{{{JT}}} == 0) or vector(0)", "failing")],
         thresholds=above(1), w=12)
    lay.row("Storage")
    lay.add(Gauge, "Storage used", [(f"regwatch_storage_used_ratio{{{J}}}", "{{volume}}{{target}} {{store}}")],
            w=8, unit="percentunit", steps=above(o.storage_threshold), min=0, max=1)
    horizon = o.storage_predict_horizon
    series(lay, f"Storage used and {horizon} forecast", [
        (f"regwatch_storage_used_ratio{{{J}}}", "{{volume}}{{target}} {{store}}"),
        (f"1 - predict_linear(regwatch_storage_available_bytes{{{J}}}[{o.storage_predict_window}], "
         f"{o.seconds('storage_predict_horizon'):g}) / regwatch_storage_capacity_bytes{{{J}}}",
         "{{volume}}{{target}} {{store}} in " + horizon),
    ], unit="percentunit", thresholds=above(o.storage_threshold), w=16)
    lay.row("Pulls and logins")
    series(lay, "Pull latency (probes)", [
        (f'{PULL_LATENCY_QUANTILE}{{{JT},quantile="{q}"}}', "{{target}} {{image}} p" + label)
        for q, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
    ], unit="s", thresholds=above(o.pull_latency_threshold))
    series(lay, "Authentication failure ratio", [(f"{AUTH_FAILURE_RATIO}{{{J}}}", "{{source}}")],
           unit="percentunit", thresholds=above(o.auth_failure_threshold))
    lay.row("Cache and drills")
    series(lay, "Proxy cache hit ratio", [(f"{CACHE_HIT_RATIO}{{{JT}}}", "{{target}} {{object}}")],
           unit="percentunit", thresholds=below(o.cache_hit_ratio_threshold), need=CACHE)
    stat(lay, "Since the last passing drill",
         [(f"time() - regwatch_drill_last_success_timestamp_seconds{{{J}}}", "{{store}}")], unit="s",
         thresholds=above(o.seconds("drill_max_age")), w=6, need=DRILL)
    stat(lay, "Upstream pull limit left",
         [(f"regwatch_upstream_ratelimit_remaining{{{JT}}} / regwatch_upstream_ratelimit_limit{{{JT}}}",
           "{{target}} {{source}}")], unit="percentunit", thresholds=below(o.upstream_ratelimit_threshold), w=6,
         need=UPSTREAM)


def target(lay: Layout, o: AlertOptions) -> None:
    lay.row("Registry")
    stat(lay, "Up", [(f"regwatch_target_up{{{JT}}}", "{{target}}")], thresholds=below(1))
    stat(lay, "Repositories", [(f"regwatch_registry_repositories{{{JT}}}", "{{target}}")])
    stat(lay, "Tags", [(f"regwatch_registry_tags{{{JT}}}", "{{target}}")])
    stat(lay, "Registry health checks", [(f"regwatch_registry_healthy{{{JT}}}", "{{target}}")],
         thresholds=below(1))
    lay.row("Collection")
    series(lay, "Collector duration", [(f"regwatch_collector_duration_seconds{{{JT}}}", "{{target}} {{collector}}")],
           unit="s")
    series(lay, "Age of the cached values",
           [(f"time() - regwatch_collector_last_success_timestamp_seconds{{{JT}}}", "{{target}} {{collector}}")],
           unit="s")
    lay.row("Storage")
    series(lay, "Storage used", [(f"regwatch_storage_used_bytes{{{J}}}", "{{volume}}{{target}} {{store}} used"),
                                 (f"regwatch_storage_capacity_bytes{{{J}}}", "{{volume}}{{target}} {{store}} size")],
           unit="bytes")
    series(lay, "Storage free", [(f"regwatch_storage_available_bytes{{{J}}}", "{{volume}}{{target}} {{store}}")],
           unit="bytes")
    lay.row("Pull-through cache")
    series(lay, "Cache requests", [
        (f"sum by (target, object) (rate(regwatch_proxy_cache_hits_total{{{JT}}}[{RATE}]))",
         "{{target}} {{object}} hit"),
        (f"sum by (target, object) (rate(regwatch_proxy_cache_misses_total{{{JT}}}[{RATE}]))",
         "{{target}} {{object}} miss"),
    ], unit="reqps", need=CACHE)
    series(lay, "Cache hit ratio", [(f"{CACHE_HIT_RATIO}{{{JT}}}", "{{target}} {{object}}")], unit="percentunit",
           thresholds=below(o.cache_hit_ratio_threshold), need=CACHE)
    # What the cache sent to clients minus what it fetched from the upstream: the upstream traffic it saved.
    served = f"sum by (target, object) (rate(regwatch_proxy_cache_served_bytes_total{{{JT}}}[{RATE}]))"
    fetched = f"sum by (target, object) (rate(regwatch_proxy_cache_upstream_bytes_total{{{JT}}}[{RATE}]))"
    series(lay, "Bandwidth saved by the cache", [
        (f"{served} - {fetched}", "{{target}} {{object}} saved"),
        (served, "{{target}} {{object}} served"),
        (fetched, "{{target}} {{object}} from upstream"),
    ], unit="Bps", w=16, need=CACHE_BYTES)
    stat(lay, "Cache counters read from", [(f"count by (target, counters) (regwatch_proxy_cache_info{{{JT}}})",
                                            "{{target}}: {{counters}}")], w=8, textMode="name", need=CACHE)
    lay.row("Upstream rate limit")
    series(lay, "Upstream pull limit left", [
        (f"regwatch_upstream_ratelimit_remaining{{{JT}}} / regwatch_upstream_ratelimit_limit{{{JT}}}",
         "{{target}} {{source}}")], unit="percentunit", thresholds=below(o.upstream_ratelimit_threshold), w=8,
           need=UPSTREAM)
    series(lay, "Upstream pulls left and limit", [
        (f"regwatch_upstream_ratelimit_remaining{{{JT}}}", "{{target}} {{source}} left"),
        (f"regwatch_upstream_ratelimit_limit{{{JT}}}", "{{target}} {{source}} limit")], w=8, need=UPSTREAM)
    stat(lay, "Upstream limit window", [(f"regwatch_upstream_ratelimit_window_seconds{{{JT}}}",
                                         "{{target}} {{source}}")], unit="s", w=8, need=UPSTREAM)


def harbor(lay: Layout, o: AlertOptions) -> None:
    lay.row("Health")
    stat(lay, "Components", [(f"regwatch_harbor_component_healthy{{{JT}}}", "{{target}} {{component}}")],
         thresholds=below(1), w=24, need=HARBOR)
    lay.row("Projects and quotas")
    stat(lay, "Projects", [(f"sum by (target) (regwatch_harbor_projects{{{JT}}})", "{{target}}")], need=HARBOR)
    stat(lay, "Repositories", [(f"regwatch_harbor_statistics_repositories{{{JT}}}", "{{target}}")],
         need=HARBOR + " and a sysadmin account (/statistics)")
    stat(lay, "Robot accounts", [(f"regwatch_harbor_robots{{{JT}}}", "{{target}}")], need=HARBOR)
    stat(lay, "Proxy-cache projects", [(f"count by (target) (regwatch_harbor_proxy_cache_project{{{JT}}})",
                                        "{{target}}")], need=HARBOR + " that has proxy-cache projects")
    lay.add(Gauge, "Quota used (top 10 projects)",
            [(f"topk(10, regwatch_harbor_project_quota_used_ratio{{{JT}}})", "{{target}} {{project}}")],
            w=12, unit="percentunit", steps=above(o.storage_threshold), min=0, max=1, need=HARBOR)
    series(lay, "Quota used bytes (top 10 projects)",
           [(f"topk(10, regwatch_harbor_project_quota_used_bytes{{{JT}}})", "{{target}} {{project}}")],
           unit="bytes", need=HARBOR)
    lay.row("Replication and GC")
    stat(lay, "Last replication per policy",
         [(f"regwatch_harbor_replication_last_execution_succeeded{{{JT}}}", "{{target}} {{policy}}")],
         thresholds=below(1), w=12, need=HARBOR + " with replication policies")
    series(lay, "Replication tasks (latest execution)",
           [(f"regwatch_harbor_replication_tasks{{{JT}}}", "{{target}} {{policy}} {{status}}")],
           need=HARBOR + " with replication policies")
    stat(lay, "Last GC succeeded", [(f"regwatch_harbor_gc_last_run_succeeded{{{JT}}}", "{{target}}")],
         thresholds=below(1), need=HARBOR + " that has run GC")
    stat(lay, "Since the last successful GC",
         [(f"time() - regwatch_harbor_gc_last_success_timestamp_seconds{{{JT}}}", "{{target}}")], unit="s",
         thresholds=above(o.seconds("gc_max_age")), need=HARBOR + " that has run GC")
    stat(lay, "Last GC freed", [(f"regwatch_harbor_gc_last_freed_bytes{{{JT}}}", "{{target}}")], unit="bytes",
         need=HARBOR + " that has run GC")
    stat(lay, "Last GC purged", [(f"regwatch_harbor_gc_last_purged_blobs{{{JT}}}", "{{target}} blobs"),
                                 (f"regwatch_harbor_gc_last_purged_manifests{{{JT}}}", "{{target}} manifests")],
         need=HARBOR + " that has run GC")
    stat(lay, "Robot accounts expiring", [
        (f"regwatch_harbor_robot_expiry_timestamp_seconds{{{JT}}} - time()", "{{target}} {{robot}}")],
         unit="s", thresholds=below(o.seconds("robot_expiry_within")), w=12, need=HARBOR + " with expiring robots")
    lay.row("Schedules, retention and preheat")
    scheduled = HARBOR + " with scheduled jobs (replication cron, GC, scan-all, audit-log purge, retention)"
    grace = o.seconds("schedule_grace")
    # Negative: overdue. HarborScheduledJobMissed fires past minus the grace.
    series(lay, "Time until the next scheduled run", [
        (f"regwatch_harbor_schedule_next_run_timestamp_seconds{{{JT}}} - time()",
         "{{target}} {{schedule}} {{policy}}")], unit="s", thresholds=steps(("red", None), ("green", -grace)),
           need=scheduled)
    stat(lay, "Last scheduled run succeeded", [
        (f"regwatch_harbor_schedule_last_run_success{{{JT}}}", "{{target}} {{schedule}} {{policy}}")],
         thresholds=below(1), w=12, need=scheduled)
    series(lay, "Last scheduled run took", [
        (f"regwatch_harbor_schedule_last_run_end_timestamp_seconds{{{JT}}} - "
         f"regwatch_harbor_schedule_last_run_start_timestamp_seconds{{{JT}}}", "{{target}} {{schedule}} {{policy}}")],
           unit="s", need=scheduled)
    stat(lay, "Last retention run succeeded", [
        (f"regwatch_harbor_retention_last_execution_success{{{JT}}}", "{{target}} {{policy}}")],
         thresholds=below(1), need=HARBOR + " with tag retention policies that have run")
    stat(lay, "Last preheat succeeded", [
        (f"regwatch_harbor_preheat_last_execution_success{{{JT}}}", "{{target}} {{policy}}")],
         thresholds=below(1), need=HARBOR + " with preheat policies that have run")
    lay.row("Proxy cache (Harbor 2.16+)")
    # Harbor's own series come from the job scraping Harbor core, not regwatch's: no $job filter.
    series(lay, "Proxy-cache hit ratio per project", [(HARBOR_PROXY_HIT_RATIO, "{{job}} {{project}}")],
           unit="percentunit", thresholds=below(o.cache_hit_ratio_threshold), need=HARBOR_PROXY)
    series(lay, "Proxied requests per project", [
        (f"sum without (instance, pod, method) (rate(harbor_core_http_registry_proxy_requests_total[{RATE}]))",
         "{{job}} {{project}} requests"),
        (f"sum without (instance, pod, method) "
         f"(rate(harbor_core_http_registry_proxy_upstream_requests_total[{RATE}]))",
         "{{job}} {{project}} to upstream")], unit="reqps", need=HARBOR_PROXY)
    lay.row("Scanning and job service")
    series(lay, "Scan-all tasks", [(f"regwatch_harbor_scan_all_tasks{{{JT}}}", "{{target}} {{status}}")],
           need=HARBOR + " after a scan-all")
    series(lay, "Vulnerabilities by severity",
           [(f"regwatch_harbor_vulnerabilities{{{JT}}}", "{{target}} {{severity}}")],
           need=HARBOR + " 2.10+ (/security/summary)")
    series(lay, "Job queue length", [(f"regwatch_harbor_jobservice_queue_length{{{JT}}}", "{{target}} {{job_type}}")],
           need=HARBOR + " 2.8+")
    series(lay, "Job queue latency", [
        (f"regwatch_harbor_jobservice_queue_latency_seconds{{{JT}}}", "{{target}} {{job_type}}")], unit="s",
           need=HARBOR + " 2.8+")


def probes(lay: Layout, o: AlertOptions) -> None:
    lay.row("Pulls")
    stat(lay, "Probe success", [(f"regwatch_probe_success{{{JT}}}", "{{target}} {{image}}")],
         thresholds=below(1), w=12)
    stat(lay, "Pulled by probes", [
        (f"sum by (target) (rate(regwatch_probe_pulled_bytes_total{{{JT}}}[{RATE}]))", "{{target}}")],
         unit="Bps", w=12)
    series(lay, "Pull latency p50 / p95 / p99", [
        (f'{PULL_LATENCY_QUANTILE}{{{JT},quantile="{q}"}}', "{{target}} {{image}} p" + label)
        for q, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
    ], unit="s", thresholds=above(o.pull_latency_threshold))
    # blob_first_byte is the start of blob: left out so the stack adds up to the pull's total.
    series(lay, "Where the time goes (last probe, phases stacked)", [
        (f'regwatch_probe_phase_duration_seconds{{{JT},phase!="blob_first_byte"}}', "{{target}} {{image}} {{phase}}")
    ], unit="s", stack=True, thresholds=above(o.pull_latency_threshold))
    series(lay, "Probe failures by reason", [
        (f"sum by (target, image, reason) (increase(regwatch_probe_failures_total{{{JT}}}[{RATE}]))",
         "{{target}} {{image}} {{reason}}")])
    stat(lay, "TLS certificate expires in", [
        (f"regwatch_tls_cert_expiry_timestamp_seconds{{{JT}}} - time()", "{{target}} {{endpoint}}")], unit="s",
         thresholds=steps(("red", None), ("orange", o.seconds("tls_critical_within")),
                         ("green", o.seconds("tls_warning_within"))),
         w=12, need=TLS)


def auth(lay: Layout, o: AlertOptions) -> None:
    lay.row("Authentication")
    series(lay, "Failure ratio", [(f"{AUTH_FAILURE_RATIO}{{{J}}}", "{{source}}")], unit="percentunit",
           thresholds=above(o.auth_failure_threshold))
    series(lay, "Failures by reason", [
        (f"sum by (source, reason) (rate(regwatch_auth_failures_total{{{J}}}[{RATE}]))", "{{source}} {{reason}}")],
           unit="reqps")
    series(lay, "Attempts and anonymous challenges", [
        (f"sum by (source) (rate(regwatch_auth_requests_total{{{J}}}[{RATE}]))", "{{source}} attempts"),
        (f"sum by (source) (rate(regwatch_auth_challenges_total{{{J}}}[{RATE}]))", "{{source}} challenges"),
    ], unit="reqps")
    lay.row("Log sources")
    series(lay, "Log lines read", [(f"sum by (source) (rate(regwatch_auth_log_lines_total{{{J}}}[{RATE}]))",
                                    "{{source}}")], unit="short", w=8)
    series(lay, "Bytes not read yet", [(f"regwatch_auth_log_lag_bytes{{{J}}}", "{{source}}")], unit="bytes", w=8)
    series(lay, "Read errors", [
        (f"sum by (source, reason) (increase(regwatch_auth_log_read_errors_total{{{J}}}[{RATE}]))",
         "{{source}} {{reason}}")], w=8, need="only after a log source had a read error (missing file, rotation lost)")


def drill(lay: Layout, o: AlertOptions) -> None:
    lay.row("Last full drill (backup, restore, verify in one run)")
    stat(lay, "Last drill passed", [(f"regwatch_drill_success{{{J}}}", "{{store}}")], thresholds=below(1),
         need=DRILL)
    stat(lay, "Since the last passing drill",
         [(f"time() - regwatch_drill_last_success_timestamp_seconds{{{J}}}", "{{store}}")], unit="s",
         thresholds=above(o.seconds("drill_max_age")), need=DRILL)
    stat(lay, "Data age at the last backup (RPO)", [(f"regwatch_drill_rpo_seconds{{{J}}}", "{{store}}")], unit="s",
         thresholds=above(o.seconds("drill_backup_max_age")), need=DRILL)
    stat(lay, "Last drill ran", [(f"regwatch_drill_last_run_timestamp_seconds{{{J}}} * 1000", "{{store}}")],
         unit="dateTimeFromNow", need=DRILL)
    lay.row("Phases (also when run alone) and coverage")
    stat(lay, "Last run of each phase passed", [(f"regwatch_drill_phase_success{{{J}}}", "{{store}} {{phase}}")],
         thresholds=below(1), w=8, need=DRILL)
    stat(lay, "Since the last successful backup", [
        (f'time() - regwatch_drill_phase_last_success_timestamp_seconds{{{J},phase="backup"}}', "{{store}}")],
         unit="s", thresholds=above(o.seconds("drill_backup_max_age")), w=8, need=DRILL)
    lay.add(Gauge, "Tags covered (in the store and verified)",
            [(f"regwatch_drill_coverage_ratio{{{J}}}", "{{store}}")], w=8, h=5, unit="percentunit",
            steps=below(o.drill_coverage_threshold), min=0, max=1, need=DRILL)
    series(lay, "Since each phase last passed", [
        (f"time() - regwatch_drill_phase_last_success_timestamp_seconds{{{J}}}", "{{store}} {{phase}}")], unit="s",
           w=24, need=DRILL)
    series(lay, "Duration by phase", [(f"regwatch_drill_duration_seconds{{{J}}}", "{{store}} {{phase}}")], unit="s",
           w=8, need=DRILL)
    series(lay, "Images by result", [(f"regwatch_drill_images{{{J}}}", "{{store}} {{result}}")], w=8, need=DRILL)
    series(lay, "Bytes by result", [(f"regwatch_drill_bytes{{{J}}}", "{{store}} {{result}}")], unit="bytes", w=8,
           need=DRILL)


DASHBOARDS = [
    ("regwatch-overview", "regwatch / Overview", overview, True),
    ("regwatch-target", "regwatch / Target", target, True),
    ("regwatch-harbor", "regwatch / Harbor", harbor, True),
    ("regwatch-probes", "regwatch / Probes", probes, True),
    ("regwatch-auth", "regwatch / Auth", auth, False),
    ("regwatch-drill", "regwatch / DR drills", drill, False),
]


# --- dashboards and forms --------------------------------------------------------------------------------

def _templating(ds: dict[str, str], form: str, with_target: bool) -> g.Templating:
    variables = []
    if form == "provisioning":
        variables.append(g.Template(name="datasource", label="Data source", query="prometheus", type="datasource",
                                    default="Prometheus", includeAll=False, multi=False))
    variables.append(g.Template(name="job", label="Job", query="label_values(regwatch_build_info, job)",
                                dataSource=ds, includeAll=True, multi=True, allValue=".+", default="$__all"))
    if with_target:
        variables.append(g.Template(name="target", label="Target",
                                    query='label_values(regwatch_target_up{job=~"$job"}, target)',
                                    dataSource=ds, includeAll=True, multi=True, allValue=".+", default="$__all"))
    return g.Templating(list=variables)


def _dashboard_json(uid: str, title: str, build: Any, with_target: bool, form: str,
                    options: AlertOptions) -> dict[str, Any]:
    ds_uid = "${DS_PROMETHEUS}" if form == "import" else "${datasource}"
    ds = {"type": "prometheus", "uid": ds_uid}
    lay = Layout(ds, uid)
    build(lay, options)
    dashboard = g.Dashboard(
        title=title, uid=uid, tags=["regwatch", "registry"], panels=lay.panels, timezone="browser",
        templating=_templating(ds, form, with_target), refresh="1m", graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        time=g.Time("now-6h", "now"), editable=False,
        description="Generated by `regwatch generate dashboards` (https://github.com/regwatch/regwatch).",
    ).auto_panel_ids()
    data = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    data["schemaVersion"] = SCHEMA_VERSION
    for key in ("rows", "style", "hideControls", "sharedCrosshair", "gnetId", "id"):
        data.pop(key, None)
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            # What Grafana saves for a multi-value "All" selection; re-read labels on a time change.
            variable.update(definition=variable["query"], refresh=2,
                            current={"selected": True, "text": ["All"], "value": ["$__all"]})
    if form == "import":
        data["__inputs"] = [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "",
                             "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}]
        data["__requires"] = [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": t, "name": PANEL_NAMES[t], "version": ""}
              for t in sorted({p["type"] for p in _walk(data["panels"])} - {"row"})),
        ]
    else:
        data.pop("__inputs", None)
    return data


def _walk(panels: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk(panel.get("panels", []))


def render_all(form: str = "import", options: AlertOptions | None = None) -> dict[str, dict[str, Any]]:
    """File name (``<uid>.json``) -> dashboard JSON, in the ``import`` or ``provisioning`` form."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    options = options or AlertOptions()
    return {f"{uid}.json": _dashboard_json(uid, title, build, with_target, form, options)
            for uid, title, build, with_target in DASHBOARDS}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every query of every panel."""
    return [(dashboard["uid"], panel["title"], target["expr"])
            for panel in _walk(dashboard["panels"]) for target in panel.get("targets", [])]


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_all(out_dir: Path, options: AlertOptions | None = None) -> list[Path]:
    """Write ``<uid>.json`` (import form) and ``provisioning/<uid>.json``; remove stale generated files."""
    written = []
    for form, directory in (("import", out_dir), ("provisioning", out_dir / "provisioning")):
        directory.mkdir(parents=True, exist_ok=True)
        dashboards = render_all(form, options)
        for stale in directory.glob("regwatch-*.json"):
            if stale.name not in dashboards:
                stale.unlink()
        for name, data in dashboards.items():
            path = directory / name
            path.write_text(dump(data))
            written.append(path)
    return written
