"""The auth tally: counts of attempts, failures and challenges, their JSON form and their metric families.

One tally per source. The file follower and the Elasticsearch source feed a ``Tally`` and
export it through ``auth_families``; Harbor's audit log exports its logins through
``attempt_families``, the part of it that counts attempts and failures. So every source has
the same metric names, help and labels. ``to_json``/``from_json`` are what the
positions file stores beside the offsets (one atomic write: totals and offsets always agree).

Example exposition of one source::

    regwatch_auth_requests_total{source="registry"} 1520.0
    regwatch_auth_failures_total{reason="bad_credentials",source="registry"} 31.0
    regwatch_auth_challenges_total{source="registry"} 1490.0
    regwatch_auth_log_read_errors_total{reason="unreadable",source="registry"} 0.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

ATTEMPT, FAILURE, CHALLENGE, USER_HINT = "attempt", "failure", "challenge", "user_hint"

REASONS = ("bad_credentials", "invalid_token", "malformed_token", "insufficient_scope", "robot_disabled",
           "robot_expired", "other")

# Bounded vocabulary of regwatch_auth_log_read_errors_total{reason}; all pre-created at 0.
ERROR_REASONS = ("unreadable", "missing", "read", "truncated", "line_too_long", "binary", "corrupt_positions",
                 "positions_write", "query", "query_truncated", "injected")


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    reason: str = ""
    user: str = ""
    client: str = ""
    request_id: str = ""


@dataclass
class Tally:
    """Counts from parsed lines. ``users``/``clients`` count failures and stay empty unless wanted."""

    requests: int = 0
    failures: Counter = field(default_factory=Counter)
    challenges: int = 0
    lines: int = 0
    binary_lines: int = 0
    users: Counter = field(default_factory=Counter)
    clients: Counter = field(default_factory=Counter)

    def add(self, event: Event, breakdown: bool) -> None:
        if event.kind == ATTEMPT:
            self.requests += 1
        elif event.kind == FAILURE:
            self.requests += 1
            self.failures[event.reason] += 1
            if breakdown:
                if event.user:
                    self.users[event.user] += 1
                if event.client:
                    self.clients[event.client] += 1
        elif event.kind == CHALLENGE:
            self.challenges += 1

    def copy(self) -> Tally:
        return Tally(self.requests, Counter(self.failures), self.challenges, self.lines, self.binary_lines,
                     Counter(self.users), Counter(self.clients))

    def bound(self, keep: int) -> None:
        """Keep the ``keep`` largest per-user/per-client entries: their memory stays bounded."""
        for counts in (self.users, self.clients):
            if len(counts) > keep:
                kept = dict(counts.most_common(keep))
                counts.clear()
                counts.update(kept)


def to_json(tally: Tally) -> dict:
    return {"requests": tally.requests, "failures": dict(tally.failures), "challenges": tally.challenges,
            "lines": tally.lines, "binary_lines": tally.binary_lines, "users": dict(tally.users),
            "clients": dict(tally.clients)}


def from_json(data: object) -> Tally:
    """A tally from its saved form; ValueError names the bad key."""
    if not isinstance(data, dict):
        raise ValueError("'counters' must be a mapping")

    def count(key: str) -> int:
        value = data.get(key, 0)
        if type(value) is not int or value < 0:
            raise ValueError(f"counter {key!r} must be a non-negative integer")
        return value

    def counter(key: str) -> Counter:
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(type(v) is int and v >= 0 for v in value.values()):
            raise ValueError(f"counter {key!r} must map names to non-negative integers")
        return Counter({str(k): v for k, v in value.items()})

    return Tally(count("requests"), counter("failures"), count("challenges"), count("lines"), count("binary_lines"),
                 counter("users"), counter("clients"))


def attempt_families(source: str, requests: int, failures: Counter, reasons: Iterable[str] = REASONS) -> list[Metric]:
    """``regwatch_auth_requests_total`` and ``regwatch_auth_failures_total`` of one source, the failures
    pre-created at 0 for ``reasons`` (the reasons the source can tell apart)."""
    attempts = CounterMetricFamily("regwatch_auth_requests",
                                   "Requests that presented credentials (anonymous challenges excluded); "
                                   "cached, updated as the source is read.", labels=["source"])
    attempts.add_metric([source], requests)
    refused = CounterMetricFamily("regwatch_auth_failures", "Requests whose credentials were refused, by reason; "
                                  "cached, updated as the source is read.", labels=["source", "reason"])
    for reason in sorted(set(reasons) | set(failures)):
        refused.add_metric([source, reason], failures.get(reason, 0))
    return [attempts, refused]


def auth_families(source: str, tally: Tally, errors: Counter, top_n: int = 0) -> list[Metric]:
    """The metric families of one log source (files, Elasticsearch)."""
    requests, failures = attempt_families(source, tally.requests, tally.failures)
    challenges = CounterMetricFamily("regwatch_auth_challenges",
                                     "Anonymous requests answered with an auth challenge (normal protocol, not "
                                     "attempts); cached.", labels=["source"])
    challenges.add_metric([source], tally.challenges)
    read_errors = CounterMetricFamily("regwatch_auth_log_read_errors", "Problems reading the source, by reason.",
                                      labels=["source", "reason"])
    for reason in sorted(set(ERROR_REASONS) | set(errors)):
        read_errors.add_metric([source, reason], errors.get(reason, 0))
    families: list[Metric] = [requests, failures, challenges, read_errors]
    if top_n:
        for label, counts in (("user", tally.users), ("client", tally.clients)):
            family = CounterMetricFamily(f"regwatch_auth_{label}_failures",
                                         f"Failures of the top {top_n} {label}s by failures (opt-in: top_n; the "
                                         "value comes from the request, see docs/auth-logs.md).",
                                         labels=["source", label])
            for value, count in counts.most_common(top_n):
                family.add_metric([source, value], count)
            families.append(family)
    return families
