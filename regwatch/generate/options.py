"""Thresholds shared by the alert rules and the dashboards (which draw them on the panels).

The defaults are the seeds' three thresholds plus what a registry on-call needs beside
them. ``regwatch generate alerts`` turns every field below into a command-line option
(``storage_threshold`` -> ``--storage-threshold``), its ``help`` the option's help and its
``kind`` the option's type:

- ``ratio``: a number in the interval ``interval`` (85 % is 0.85);
- ``seconds``: a positive number of seconds (a threshold on a measured time);
- ``count``: a whole number >= 0;
- ``duration``: a Prometheus duration (``6h``, ``30m``, ``1h30m``), written as it is into
  the rules' range selectors and ``for:``; a bare number is an error, never "seconds";
- ``selector``: PromQL label matchers (``job="regwatch",namespace=~"mon.*"``);
- ``text``: anything.

This module only parses and checks (pure functions, ``ValueError`` with the reason); the
command turns a ``ValueError`` into a usage error naming the option.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from regwatch.config import parse_duration

# Recording rules shared by alerts and dashboards (level:metric:operations, as in the mixins).
PULL_LATENCY_QUANTILE = "target_image:regwatch_probe_pull_duration_seconds:histogram_quantile"
AUTH_FAILURE_RATIO = "source:regwatch_auth_failures:ratio_rate5m"
CACHE_HIT_RATIO = "target_object:regwatch_proxy_cache_hits:ratio_rate30m"
# Harbor 2.16's own proxy-cache counters (harbor_core_http_registry_proxy_*), per project.
HARBOR_PROXY_HIT_RATIO = "project:harbor_core_http_registry_proxy_hits:ratio_rate30m"

# --- durations -----------------------------------------------------------------------------------

# Prometheus's duration grammar (prometheus/common model.ParseDuration, which PromQL range
# selectors and a rule's `for:` both use): whole numbers, units largest first, each once.
_PROM_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
EXAMPLES = "e.g. 6h, 30m, 7d or 1h30m"


def duration_seconds(text: str, *, zero: bool = False) -> float:
    """Seconds of a Prometheus duration; ``ValueError`` saying what is wrong if it is not one.

    ``zero`` allows ``0s`` (a ``for:`` may be 0; a range selector may not).
    """
    value = text.strip() if isinstance(text, str) else text
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a Prometheus duration ({EXAMPLES})")
    if zero and value == "0":
        return 0.0
    if re.fullmatch(r"\d+", value):
        raise ValueError(f"{value!r} has no unit; a Prometheus duration needs one, e.g. {value}h, {value}m or {value}d")
    if re.fullmatch(r"\d*\.\d+", value):
        raise ValueError(f"{value!r} has no unit; a Prometheus duration needs one, {EXAMPLES}")
    match = _PROM_DURATION.fullmatch(value)
    if not value or not match:
        raise ValueError(f"{value!r} is not a Prometheus duration: whole numbers with units, largest first "
                         f"(y, w, d, h, m, s, ms), {EXAMPLES}")
    if not any(int(group) for group in match.groups() if group):
        if zero:
            return 0.0
        raise ValueError(f"{value!r} is zero; give a duration greater than 0 ({EXAMPLES})")
    return parse_duration(value)


# --- selectors -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str

    def matches(self, value: str) -> bool:
        """As Prometheus matches (an absent label is ""); regexps are anchored."""
        if self.op in ("=", "!="):
            return (value == self.value) == (self.op == "=")
        return bool(re.fullmatch(self.value, value)) == (self.op == "=~")


_MATCHER = re.compile(r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"""
                      r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*""")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f",
            "v": "\v"}


def _unquote(quoted: str) -> str:
    if quoted[0] == "`":
        return quoted[1:-1]

    def sub(match: re.Match) -> str:
        char = match.group(1)
        if char not in _ESCAPES:
            raise ValueError(f"unknown escape \\{char} in {quoted}")
        return _ESCAPES[char]
    return re.sub(r"\\(.)", sub, quoted[1:-1])


def parse_selector(text: str) -> list[Matcher]:
    """PromQL label matchers, comma-separated, without braces; ``ValueError`` naming the bad part."""
    matchers: list[Matcher] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        match = _MATCHER.match(text, pos)
        if not match:
            raise ValueError(f"cannot read a label matcher at {text[pos:]!r}; write label=\"value\", "
                             "label=~\"regex\", label!=\"value\" or label!~\"regex\", comma-separated, "
                             "e.g. job=\"regwatch\"")
        label, op, quoted = match.groups()
        if label == "__name__":
            raise ValueError("the selector is added to every metric: it must not match on __name__")
        value = _unquote(quoted)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{label}{op}{quoted}: not a regular expression ({exc})") from None
        matchers.append(Matcher(label, op, value))
        pos = match.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"expected a comma after {text[match.start():pos].strip()!r}, "
                                 f"not {text[pos:]!r}")
            pos += 1
            if not text[pos:].strip():
                break
    return matchers


def render_selector(matchers: list[Matcher]) -> str:
    """The matchers as PromQL writes them (double quotes; JSON's escapes are Go's)."""
    return ",".join(f"{m.label}{m.op}{json.dumps(m.value, ensure_ascii=False)}" for m in matchers)


# --- the options ---------------------------------------------------------------------------------

def _opt(default, help: str, kind: str, interval: tuple[float, float, bool] | None = None):  # noqa: A002 - like click's help=
    """``interval``: (low, high, high included) for ratios; the low end is always excluded."""
    return field(default=default, metadata={"help": help, "kind": kind, "interval": interval})


OPEN = (0.0, 1.0, False)    # a "> threshold" on a ratio that cannot exceed 1: 1 would never fire
CLOSED = (0.0, 1.0, True)   # a "< threshold" on a ratio: 1 fires on anything short of 100 %


@dataclass
class AlertOptions:
    storage_threshold: float = _opt(0.85, "Storage used ratio that fires RegistryStorageAlmostFull (seed: 85 %).",
                                    "ratio", OPEN)
    pull_latency_threshold: float = _opt(0.5, "Pull latency in seconds that fires RegistryPullLatencyHigh "
                                              "(seed: 500 ms).", "seconds")
    pull_latency_quantile: float = _opt(0.95, "Quantile of the probe pull histogram the latency alert uses.",
                                        "ratio", CLOSED)
    auth_failure_threshold: float = _opt(0.01, "Failed share of authentication attempts that fires "
                                               "RegistryAuthFailureRateHigh (seed: 1 %).", "ratio", OPEN)
    storage_predict_horizon: str = _opt("24h", "RegistryStoragePredictedFull: full within this long.", "duration")
    storage_predict_window: str = _opt("6h", "RegistryStoragePredictedFull: the trend window predict_linear uses.",
                                       "duration")
    tls_warning_within: str = _opt("14d", "RegistryTLSCertificateExpiring warning: this long before notAfter.",
                                   "duration")
    tls_critical_within: str = _opt("3d", "RegistryTLSCertificateExpiring critical: this long before notAfter.",
                                    "duration")
    gc_max_age: str = _opt("8d", "HarborGarbageCollectionNotRun: time since the last successful GC.", "duration")
    scan_all_stuck_for: str = _opt("2h", "HarborScanAllStuck: a running scan-all with no finished scan this long.",
                                   "duration")
    schedule_grace: str = _opt("1h", "HarborScheduledJobMissed: how late a scheduled job may start. Room for a busy "
                                     "job service's queue (scan-all and replication share its workers); at most "
                                     "the shortest preset period (Hourly), so a daily job fires an hour after "
                                     "its missed run and an hourly one when its second run is due.", "duration")
    drill_max_age: str = _opt("26h", "RegistryDrillTooOld: time since the last passing full drill (backup, "
                                     "restore, verify in one run).", "duration")
    drill_backup_max_age: str = _opt("26h", "RegistryDrillBackupTooOld: time since the last successful backup "
                                            "(the RPO; a nightly backup plus 2h).", "duration")
    drill_coverage_threshold: float = _opt(1.0, "RegistryDrillCoverageLow: share of the source's selected tags in "
                                                "the store and verified below this (1: any tag missing).",
                                           "ratio", CLOSED)
    cache_hit_ratio_threshold: float = _opt(0.5, "RegistryProxyCacheHitRatioLow and HarborProxyCacheHitRatioLow: "
                                                 "hit ratio below this.", "ratio", CLOSED)
    harbor_proxy_min_requests: int = _opt(100, "HarborProxyCacheHitRatioLow: only for projects with at least this "
                                               "many proxied requests in 30m (a few first pulls are all misses).",
                                          "count")
    upstream_ratelimit_threshold: float = _opt(0.1, "RegistryUpstreamRateLimitLow: remaining share of the "
                                                    "upstream's pull limit below this.", "ratio", CLOSED)
    robot_expiry_within: str = _opt("7d", "HarborRobotAccountExpiring: this long before a robot account expires.",
                                    "duration")
    selector: str = _opt('job=~".*regwatch.*"', "Label matchers added to every regwatch metric in every rule "
                                                "('' for none); they must match the job that scrapes regwatch.",
                         "selector")
    harbor_selector: str = _opt("", "Label matchers added to Harbor's own harbor_core_* series ('' for none), "
                                    "e.g. job=\"harbor-core\".", "selector")
    runbook_base: str = _opt("https://github.com/regwatch/regwatch/blob/main/docs/runbook.md",
                             "Runbook URL; each alert links to #<alertname lower-cased>.", "text")
    # `for:` durations by alert name; an alert not listed uses its own default.
    for_durations: dict[str, str] = field(default_factory=dict)
    # Extra labels on every alert (e.g. team=platform).
    extra_labels: dict[str, str] = field(default_factory=dict)

    def seconds(self, name: str) -> float:
        """A duration option in seconds."""
        return duration_seconds(getattr(self, name))


def option_fields(kind: str | None = None) -> list:
    """The dataclass fields that are command-line options (of one ``kind``)."""
    import dataclasses

    return [f for f in dataclasses.fields(AlertOptions)
            if "kind" in f.metadata and (kind is None or f.metadata["kind"] == kind)]


def check(name: str, value: object) -> object:
    """The value of option ``name`` if valid; ``ValueError`` saying why not."""
    meta = next(f.metadata for f in option_fields() if f.name == name)
    kind = meta["kind"]
    if kind == "duration":
        duration_seconds(value)  # type: ignore[arg-type]
    elif kind == "selector":
        parse_selector(value)  # type: ignore[arg-type]
    elif kind == "ratio":
        low, high, closed = meta["interval"]
        number = float(value)  # type: ignore[arg-type]
        if not (low < number < high or (closed and number == high)):
            raise ValueError(f"{value:g} is not a ratio in ({low:g}, {high:g}{']' if closed else ')'}; "
                             "85 % is 0.85")
    elif kind == "seconds" and not float(value) > 0:  # type: ignore[arg-type]
        raise ValueError(f"{value:g} is not a positive number of seconds")
    elif kind == "count" and int(value) < 0:  # type: ignore[call-overload]
        raise ValueError(f"{value} is not a count (0 or more)")
    return value
