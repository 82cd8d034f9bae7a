"""The ``authlogs`` collector: authentication attempts and failures from registry logs or Elasticsearch.

One job per ``auth_logs`` entry. Example exposition::

    # HELP regwatch_auth_requests_total Requests that presented credentials (anonymous challenges excluded); ...
    # TYPE regwatch_auth_requests_total counter
    regwatch_auth_requests_total{source="registry"} 1520.0
    # HELP regwatch_auth_failures_total Requests whose credentials were refused, by reason; ...
    # TYPE regwatch_auth_failures_total counter
    regwatch_auth_failures_total{reason="bad_credentials",source="registry"} 31.0
    regwatch_auth_failures_total{reason="insufficient_scope",source="registry"} 0.0
    # HELP regwatch_auth_log_read_errors_total Problems reading the source, by reason.
    # TYPE regwatch_auth_log_read_errors_total counter
    regwatch_auth_log_read_errors_total{reason="unreadable",source="registry"} 0.0

A file source is followed by a ``regwatch.logs.stream.FileStream`` thread that counts lines as
they are written; this collector's ``collect()`` only copies its counters. The stream wakes the job
when it counts lines, so a burst reaches ``/metrics`` within about a quarter of a second. Counters survive
restarts: the totals are saved with the log positions (one atomic write), and a restarted
regwatch continues from them, so ``rate()`` sees no reset and no line is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.budget import Budget
from regwatch.collectors import Collector, Contexts, Job, job_factory
from regwatch.collectors.elasticsearch import ElasticsearchCollector
from regwatch.config import AuthLogConfig, Config
from regwatch.logs.stream import FileStream
from regwatch.logs.tally import auth_families

# A file source's counters reach /metrics when its stream counts lines: the stream wakes the job
# (Job.wake), and the runner runs it at once, at most every runner.WAKE_FLOOR (0.25 s). A quiet source
# is published only on its interval (lag and file counts), so it costs (almost) nothing.
# A file collection is a copy of counters in memory.
FILE_SECONDS = 10.0


class AuthLogCollector(Collector):
    """Exports the live counters of the files of one ``auth_logs`` entry."""

    name = "authlogs"

    def __init__(self, source: AuthLogConfig, *, use_inotify: bool = True, background: bool = True):
        self.source = source
        # background=False: no follower thread; each collect() reads what is new (tests, benchmarks)
        self.background = background
        self.stream = FileStream(source.name, source.path or "", fmt=source.format, start_at=source.start_at,
                                 positions_file=str(source.positions_file) if source.positions_file else None,
                                 top_n=source.top_n, client_source=source.client_address, use_inotify=use_inotify)

    @property
    def totals(self):
        return self.stream.snapshot()[0]

    def collect(self) -> Iterable[Metric]:
        if not self.stream.started:
            self.stream.start(self.background)  # loads the saved state and starts following
        elif not self.background:
            self.stream.pump()
        tally, errors, files, lag = self.stream.snapshot()
        families = auth_families(self.source.name, tally, errors, self.source.top_n)
        lines = CounterMetricFamily("regwatch_auth_log_lines", "Log lines read; cached, updated as they are written.",
                                    labels=["source"])
        lines.add_metric([self.source.name], tally.lines)
        followed = GaugeMetricFamily("regwatch_auth_log_files", "Log files being followed.", labels=["source"])
        followed.add_metric([self.source.name], files)
        lag_family = GaugeMetricFamily("regwatch_auth_log_lag_bytes",
                                       "Bytes written to the logs and not read yet (at the end of the last read).",
                                       labels=["source"])
        lag_family.add_metric([self.source.name], lag)
        return [*families, lines, followed, lag_family]

    def close(self) -> None:
        self.stream.stop()


def es_budget(source: AuthLogConfig) -> Budget:
    """An Elasticsearch collection: ``deadline`` in all, each request at most ``timeout``, no retries
    (the next collection is the retry)."""
    es = source.elasticsearch
    return Budget(timeout=es.timeout, retries=0, backoff=0.0, retry_after_cap=0.0, collection=es.deadline)


def auth_job(source: AuthLogConfig) -> Job:
    """The one place an auth source's job (collector, interval, budget) is built."""
    if source.elasticsearch is not None:
        return Job(source.name, ElasticsearchCollector(source), source.interval, es_budget(source))
    collector = AuthLogCollector(source)
    job = Job(source.name, collector, source.interval, Budget.local(FILE_SECONDS))
    collector.stream.on_change = job.wake.set
    return job


@job_factory("authlogs", help="Authentication attempts and failures from registry logs or Elasticsearch.")
def authlog_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for source in config.auth_logs:
        yield auth_job(source)
