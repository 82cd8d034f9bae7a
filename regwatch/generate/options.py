"""Thresholds shared by the alert rules and the dashboards (which draw them on the panels).

The defaults are the seeds' three thresholds plus what a registry on-call needs beside
them. ``regwatch generate alerts`` turns every field below into a command-line option
(``storage_threshold`` -> ``--storage-threshold``), its ``help`` the option's help.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Recording rules shared by alerts and dashboards (level:metric:operations, as in the mixins).
PULL_LATENCY_QUANTILE = "target_image:regwatch_probe_pull_duration_seconds:histogram_quantile"
AUTH_FAILURE_RATIO = "source:regwatch_auth_failures:ratio_rate5m"
CACHE_HIT_RATIO = "target_object:regwatch_proxy_cache_hits:ratio_rate30m"


def _opt(default, help: str, ratio: bool = False):  # noqa: A002 - click's word
    return field(default=default, metadata={"help": help, "ratio": ratio})


@dataclass
class AlertOptions:
    storage_threshold: float = _opt(0.85, "Storage used ratio that fires RegistryStorageAlmostFull (seed: 85 %).",
                                    ratio=True)
    pull_latency_threshold: float = _opt(0.5, "Pull latency in seconds that fires RegistryPullLatencyHigh "
                                              "(seed: 500 ms).")
    pull_latency_quantile: float = _opt(0.95, "Quantile of the probe pull histogram the latency alert uses.",
                                        ratio=True)
    auth_failure_threshold: float = _opt(0.01, "Failed share of authentication attempts that fires "
                                               "RegistryAuthFailureRateHigh (seed: 1 %).", ratio=True)
    storage_predict_hours: float = _opt(24.0, "RegistryStoragePredictedFull: full within this many hours.")
    storage_predict_window: str = _opt("6h", "RegistryStoragePredictedFull: the trend window predict_linear uses.")
    tls_warning_days: float = _opt(14.0, "RegistryTLSCertificateExpiring warning: days before notAfter.")
    tls_critical_days: float = _opt(3.0, "RegistryTLSCertificateExpiring critical: days before notAfter.")
    gc_max_age_days: float = _opt(8.0, "HarborGarbageCollectionNotRun: days since the last successful GC.")
    scan_all_stuck_for: str = _opt("2h", "HarborScanAllStuck: a running scan-all with no finished scan this long.")
    drill_max_age_hours: float = _opt(26.0, "RegistryDrillTooOld: hours since the last passing drill (the RPO).")
    cache_hit_ratio_threshold: float = _opt(0.5, "RegistryProxyCacheHitRatioLow: hit ratio below this.",
                                            ratio=True)
    robot_expiry_days: float = _opt(7.0, "HarborRobotAccountExpiring: days before a robot account expires.")
    selector: str = _opt('job=~".*regwatch.*"', "Label matchers added to every metric in every rule "
                                                "('' for none).")
    runbook_base: str = _opt("https://github.com/regwatch/regwatch/blob/main/docs/runbook.md",
                             "Runbook URL; each alert links to #<alertname lower-cased>.")
    # `for:` durations by alert name; an alert not listed uses its own default.
    for_durations: dict[str, str] = field(default_factory=dict)
    # Extra labels on every alert (e.g. team=platform).
    extra_labels: dict[str, str] = field(default_factory=dict)
