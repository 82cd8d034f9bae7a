"""The Elasticsearch auth source's collector: each run counts what is new (``regwatch.logs.elasticsearch``).

Example exposition (the same families as a file source, without the per-file ones)::

    regwatch_auth_requests_total{source="elk"} 1520.0
    regwatch_auth_failures_total{reason="bad_credentials",source="elk"} 31.0
    regwatch_auth_log_read_errors_total{reason="query_truncated",source="elk"} 0.0
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors import Collector
from regwatch.config import AuthLogConfig
from regwatch.logs.elasticsearch import ElasticsearchSource
from regwatch.logs.tally import auth_families


class ElasticsearchCollector(Collector):
    name = "authlogs"

    def __init__(self, source: AuthLogConfig, client=None):
        self.source = source
        self.es = ElasticsearchSource(source, client)

    @property
    def totals(self):
        return self.es.totals

    @property
    def errors(self):
        return self.es.errors

    def collect(self) -> Iterable[Metric]:
        totals, errors = self.es.run()
        return auth_families(self.source.name, totals, errors, 0)

    def close(self) -> None:
        self.es.close()
