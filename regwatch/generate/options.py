"""Thresholds shared by the alert rules and the dashboards (which draw them on the panels).

The defaults are the seeds' three thresholds plus what a registry on-call needs beside
them. ``regwatch generate alerts`` overrides any of them from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Recording rules shared by alerts and dashboards (level:metric:operations, as in the mixins).
PULL_LATENCY_QUANTILE = "target_image:regwatch_probe_pull_duration_seconds:histogram_quantile"
AUTH_FAILURE_RATIO = "source:regwatch_auth_failures:ratio_rate5m"
CACHE_HIT_RATIO = "target_object:regwatch_proxy_cache_hits:ratio_rate30m"


@dataclass
class AlertOptions:
    # Seed: storage above 85 % of the volume.
    storage_threshold: float = 0.85
    # Seed: image pull latency above 500 ms (95th percentile of the probe's full pull).
    pull_latency_threshold: float = 0.5
    pull_latency_quantile: float = 0.95
    # Seed: authentication failure rate above 1 % of attempts.
    auth_failure_threshold: float = 0.01
    # Storage predicted full within this many hours (predict_linear over storage_predict_window).
    storage_predict_hours: float = 24.0
    storage_predict_window: str = "6h"
    # TLS certificate expiring: warning within, critical within (days).
    tls_warning_days: float = 14.0
    tls_critical_days: float = 3.0
    # GC: warn when the last successful run is older than this (days).
    gc_max_age_days: float = 8.0
    # Scan-all: running with no progress for this long counts as stuck.
    scan_all_stuck_for: str = "2h"
    # DR drill: the last successful drill may be at most this old (hours); the schedule's RPO.
    drill_max_age_hours: float = 26.0
    # Proxy cache: the hit ratio below this (while it serves traffic) is a collapse.
    cache_hit_ratio_threshold: float = 0.5
    # Robot account tokens expiring within this many days.
    robot_expiry_days: float = 7.0
    # `for:` durations by alert name; an alert not listed uses its own default.
    for_durations: dict[str, str] = field(default_factory=dict)
    # Extra labels on every alert (e.g. team=platform).
    extra_labels: dict[str, str] = field(default_factory=dict)
    # Selector added to every metric in every expression (e.g. job="regwatch").
    selector: str = 'job=~".*regwatch.*"'
    runbook_base: str = "https://github.com/regwatch/regwatch/blob/main/docs/runbook.md"
