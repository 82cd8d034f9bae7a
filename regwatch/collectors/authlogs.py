"""The ``authlogs`` collector: authentication attempts and failures from registry logs or Elasticsearch.

One job per ``auth_logs`` entry. Example exposition::

    # HELP regwatch_auth_requests_total Requests that presented credentials (anonymous challenges excluded).
    # TYPE regwatch_auth_requests_total counter
    regwatch_auth_requests_total{source="registry"} 1520.0
    # HELP regwatch_auth_failures_total Requests whose credentials were refused, by reason.
    # TYPE regwatch_auth_failures_total counter
    regwatch_auth_failures_total{reason="bad_credentials",source="registry"} 31.0
    regwatch_auth_failures_total{reason="insufficient_scope",source="registry"} 0.0
    # HELP regwatch_auth_log_read_errors_total Problems reading the source, by reason.
    # TYPE regwatch_auth_log_read_errors_total counter
    regwatch_auth_log_read_errors_total{reason="unreadable",source="registry"} 0.0

Counters are read in the background every ``interval`` and survive restarts: the totals
are saved with the log positions (one atomic write), and a restarted regwatch continues
from them, so ``rate()`` sees no reset and no line is counted twice.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.budget import Budget
from regwatch.collectors import Collector, Contexts, Job, job_factory
from regwatch.config import AuthLogConfig, Config
from regwatch.logs.follower import Follower
from regwatch.logs.parsers import REASONS, Parser, Tally, sniff
from regwatch.logs.positions import PositionsError, PositionsFile

log = logging.getLogger("regwatch.authlogs")

ERROR_REASONS = ("unreadable", "missing", "read", "truncated", "line_too_long", "binary", "corrupt_positions",
                 "positions_write", "query")
SNIFF_LINES = 50


def auth_families(source: str, tally: Tally, errors: Counter, top_n: int) -> list[Metric]:
    """The metric families of one source (shared by the file and Elasticsearch sources)."""
    requests = CounterMetricFamily("regwatch_auth_requests",
                                   "Requests that presented credentials (anonymous challenges excluded).",
                                   labels=["source"])
    requests.add_metric([source], tally.requests)
    failures = CounterMetricFamily("regwatch_auth_failures", "Requests whose credentials were refused, by reason.",
                                   labels=["source", "reason"])
    for reason in sorted(set(REASONS) | set(tally.failures)):
        failures.add_metric([source, reason], tally.failures.get(reason, 0))
    challenges = CounterMetricFamily("regwatch_auth_challenges",
                                     "Anonymous requests answered with an auth challenge (normal protocol, not "
                                     "attempts).", labels=["source"])
    challenges.add_metric([source], tally.challenges)
    read_errors = CounterMetricFamily("regwatch_auth_log_read_errors", "Problems reading the source, by reason.",
                                      labels=["source", "reason"])
    for reason in sorted(set(ERROR_REASONS) | set(errors)):
        read_errors.add_metric([source, reason], errors.get(reason, 0))
    families: list[Metric] = [requests, failures, challenges, read_errors]
    if top_n:
        for label, counts in (("user", tally.users), ("client", tally.clients)):
            family = CounterMetricFamily(f"regwatch_auth_{label}_failures",
                                         f"Failures of the top {top_n} {label}s by failures (opt-in: top_n).",
                                         labels=["source", label])
            for value, count in counts.most_common(top_n):
                family.add_metric([source, value], count)
            families.append(family)
    return families


def tally_to_json(tally: Tally) -> dict:
    return {"requests": tally.requests, "failures": dict(tally.failures), "challenges": tally.challenges,
            "lines": tally.lines, "binary_lines": tally.binary_lines, "users": dict(tally.users),
            "clients": dict(tally.clients)}


def tally_from_json(data: dict) -> Tally:
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


def _bound(counts: Counter, keep: int) -> None:
    """Keep the ``keep`` largest entries: the per-user/per-client memory stays bounded."""
    if len(counts) > keep:
        kept = dict(counts.most_common(keep))
        counts.clear()
        counts.update(kept)


class AuthLogCollector(Collector):
    """Follows the log files of one ``auth_logs`` entry and counts auth attempts and failures."""

    name = "authlogs"

    def __init__(self, source: AuthLogConfig):
        self.source = source
        self.follower = Follower(source.path or "", start_at=source.start_at)
        self.positions = PositionsFile(source.positions_file) if source.positions_file else None
        self.format: str | None = None if source.format == "auto" else source.format
        self.parser: Parser | None = None
        self.totals = Tally()
        self.errors: Counter = Counter()
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if self.positions is None:
            return
        state, problems = self.positions.load()
        for problem in problems:
            log.error(f"{problem}; {'resuming from the backup' if state else 'starting over at the end of the logs'}",
                      extra={"source": self.source.name})
            self.errors["corrupt_positions"] += 1
        if state is None:
            return
        try:
            totals = tally_from_json(state.get("counters", {}))
            errors = Counter(state.get("errors", {}))
            saved_format = state.get("format")
            if saved_format is not None and self.source.format == "auto":
                self.format = str(saved_format)
            self._make_parser(self.format)
            if self.parser is not None:
                self.parser.restore(state.get("parser", {}))
            self.follower.restore(state)
            self.totals = totals
            self.errors = errors + self.errors
        except (ValueError, TypeError, KeyError) as exc:
            log.error(f"positions file {self.positions.path} is corrupt ({exc}); starting over at the end of the logs",
                      extra={"source": self.source.name})
            self.errors["corrupt_positions"] += 1
            self.follower = Follower(self.source.path or "", start_at=self.source.start_at)

    def _make_parser(self, fmt: str | None) -> None:
        if fmt is not None and self.parser is None:
            self.parser = Parser(fmt, breakdown=self.source.top_n > 0)

    def _parser_for(self, block: bytes) -> Parser:
        if self.parser is None:
            lines = block[:1 << 16].decode("utf-8", "replace").splitlines()[:SNIFF_LINES]
            sniffed = sniff(lines)
            if sniffed:
                log.info("detected the log format", extra={"source": self.source.name, "format": sniffed})
                self.format = sniffed
            self._make_parser(sniffed or "distribution")
        return self.parser  # type: ignore[return-value]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            pending = copy.deepcopy(self.totals)
            errors_before = Counter(self.follower.errors)
            for block in self.follower.read():
                self._parser_for(block).feed(block, pending)
            errors = self.errors + (Counter(self.follower.errors) - errors_before)
            errors["binary"] += pending.binary_lines - self.totals.binary_lines
            keep = max(10 * self.source.top_n, 100)
            _bound(pending.users, keep)
            _bound(pending.clients, keep)
            if self.positions is not None:
                state = {"source": self.source.name, "format": self.format, **self.follower.positions(),
                         "counters": tally_to_json(pending), "errors": {k: v for k, v in errors.items() if v},
                         "parser": self.parser.state() if self.parser else {}}
                try:
                    self.positions.save(state)
                except PositionsError as exc:
                    log.error(str(exc), extra={"source": self.source.name})
                    errors["positions_write"] += 1
            self.totals, self.errors = pending, errors
            families = auth_families(self.source.name, pending, errors, self.source.top_n)
            lines = CounterMetricFamily("regwatch_auth_log_lines", "Log lines read.", labels=["source"])
            lines.add_metric([self.source.name], pending.lines)
            followed = GaugeMetricFamily("regwatch_auth_log_files", "Log files being followed.", labels=["source"])
            followed.add_metric([self.source.name], len(self.follower.files))
            lag = GaugeMetricFamily("regwatch_auth_log_lag_bytes", "Bytes written to the logs and not read yet.",
                                    labels=["source"])
            lag.add_metric([self.source.name], self.follower.lag_bytes())
        return [*families, lines, followed, lag]

    def close(self) -> None:
        self.follower.close()


@job_factory("authlogs", help="Authentication attempts and failures from registry logs or Elasticsearch.")
def authlog_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for source in config.auth_logs:
        if source.elasticsearch is not None:
            from regwatch.logs.elasticsearch import ElasticsearchCollector

            collector: Collector = ElasticsearchCollector(source)
        else:
            collector = AuthLogCollector(source)
        yield Job(source.name, collector, source.interval, Budget.local(max(source.interval, 30.0)))
