"""Auth attempts and failures counted in Elasticsearch (the ELK the registry logs are shipped to).

Each run searches the index pattern for documents newer than the newest timestamp seen
minus ``overlap`` (documents are indexed late: shippers batch, pipelines lag), once with the
attempts query and once with the failures query, and counts the document ``_id``s not seen
before. Remembered ids are dropped once they fall out of the overlap window, so memory is
bounded by the window's traffic and a late document is counted exactly once.

Paging uses a point in time plus ``search_after`` (no 10,000-hit cap, no scroll context).
Only the official ``elasticsearch`` client's keyword arguments common to its 8.x and 9.x
majors are used; install the major that matches the cluster (``elasticsearch>=9,<10`` for
ES 9, ``elasticsearch>=8.12,<9`` for ES 8).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client.metrics_core import Metric

from regwatch.collectors import Collector
from regwatch.config import AuthLogConfig
from regwatch.logs.parsers import Tally
from regwatch.logs.positions import PositionsError, PositionsFile

log = logging.getLogger("regwatch.authlogs.elasticsearch")

PAGE_SIZE = 1000

# ECS fields as Filebeat's nginx module (or a dissect of the registry's access log) fills them:
# a request to the registry API that carried a Basic user is an attempt; with status 401, a failure.
_API_PATHS = {"bool": {"should": [{"prefix": {"url.original": "/v2/"}},
                                  {"prefix": {"url.original": "/service/token"}}], "minimum_should_match": 1}}
DEFAULT_ATTEMPTS_QUERY = {"bool": {"filter": [{"exists": {"field": "user.name"}}, _API_PATHS]}}
DEFAULT_FAILURES_QUERY = {"bool": {"filter": [{"exists": {"field": "user.name"}}, _API_PATHS,
                                              {"term": {"http.response.status_code": 401}}]}}


def _millis(value) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


class ElasticsearchCollector(Collector):
    name = "authlogs"

    def __init__(self, source: AuthLogConfig, client=None):
        self.source = source
        self.es_config = source.elasticsearch
        self._client = client
        self.cursor: int | None = None
        self.seen: dict[str, dict[str, int]] = {"attempts": {}, "failures": {}}
        self.totals = Tally()
        self.errors: Counter = Counter()
        self.positions = PositionsFile(source.positions_file) if source.positions_file else None
        self._lock = threading.Lock()
        self._load()

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        if self.positions is None:
            return
        from regwatch.collectors.authlogs import tally_from_json

        state, problems = self.positions.load()
        for problem in problems:
            log.error(f"{problem}; counting starts over", extra={"source": self.source.name})
            self.errors["corrupt_positions"] += 1
        if state and isinstance(state.get("elasticsearch"), dict):
            es = state["elasticsearch"]
            try:
                self.totals = tally_from_json(state.get("counters", {}))
                self.cursor = int(es["cursor"]) if es.get("cursor") is not None else None
                self.seen = {kind: {str(k): int(v) for k, v in es["seen"][kind].items()}
                             for kind in ("attempts", "failures")}
            except (KeyError, TypeError, ValueError) as exc:
                log.error(f"positions file {self.positions.path} is corrupt ({exc}); counting starts over",
                          extra={"source": self.source.name})
                self.errors["corrupt_positions"] += 1

    def _save(self, totals: Tally, errors: Counter) -> None:
        from regwatch.collectors.authlogs import tally_to_json

        if self.positions is None:
            return
        try:
            self.positions.save({"source": self.source.name, "files": [], "counters": tally_to_json(totals),
                                 "errors": dict(errors),
                                 "elasticsearch": {"cursor": self.cursor, "seen": self.seen}})
        except PositionsError as exc:
            log.error(str(exc), extra={"source": self.source.name})
            errors["positions_write"] += 1

    # ------------------------------------------------------------------ querying

    def client(self):
        if self._client is None:
            from elasticsearch import Elasticsearch

            cfg = self.es_config
            kwargs: dict = {"request_timeout": cfg.timeout, "verify_certs": not cfg.tls.insecure_skip_verify}
            if cfg.tls.ca_file:
                kwargs["ca_certs"] = str(cfg.tls.ca_file)
            if cfg.secret("api_key"):
                kwargs["api_key"] = cfg.secret("api_key")
            elif cfg.username:
                kwargs["basic_auth"] = (cfg.username, cfg.secret("password") or "")
            self._client = Elasticsearch(cfg.url, **kwargs)
        return self._client

    def _hits(self, query: dict, since: int) -> Iterator[tuple[str, int]]:
        """(``_id``, timestamp in ms) of every document matching ``query`` at or after ``since``."""
        es, ts_field = self.client(), self.es_config.timestamp_field
        full = {"bool": {"filter": [{"range": {ts_field: {"gte": since, "format": "epoch_millis"}}}, query]}}
        pit = es.open_point_in_time(index=self.es_config.index, keep_alive="1m")["id"]
        after = None
        try:
            while True:
                kwargs = {"search_after": after} if after is not None else {}
                response = es.search(pit={"id": pit, "keep_alive": "1m"}, size=PAGE_SIZE, query=full,
                                     sort=[{ts_field: {"order": "asc", "format": "epoch_millis"}}],
                                     source=False, track_total_hits=False, **kwargs)
                hits = response["hits"]["hits"]
                pit = response.get("pit_id", pit)
                for hit in hits:
                    yield hit["_id"], _millis(hit["sort"][0])
                if len(hits) < PAGE_SIZE:
                    return
                after = hits[-1]["sort"]
        finally:
            try:
                es.close_point_in_time(id=pit)
            except Exception:  # noqa: BLE001 - the PIT expires by itself after keep_alive
                pass

    def collect(self) -> Iterable[Metric]:
        from regwatch.collectors.authlogs import auth_families

        with self._lock:
            first_run = self.cursor is None
            overlap_ms = int(self.es_config.overlap * 1000)
            since = (self.cursor if self.cursor is not None else int(time.time() * 1000)) - overlap_ms
            pending, errors = copy.deepcopy(self.totals), Counter(self.errors)
            seen = {kind: dict(ids) for kind, ids in self.seen.items()}
            newest = self.cursor or 0
            queries = (("attempts", self.es_config.attempts_query or DEFAULT_ATTEMPTS_QUERY),
                       ("failures", self.es_config.failures_query or DEFAULT_FAILURES_QUERY))
            try:
                for kind, query in queries:
                    for doc_id, ts in self._hits(query, since):
                        newest = max(newest, ts)
                        if doc_id in seen[kind]:
                            continue
                        seen[kind][doc_id] = ts
                        if first_run and self.source.start_at == "end":
                            continue  # remembered, not counted: as a log file, start at the end
                        if kind == "attempts":
                            pending.requests += 1
                        else:
                            pending.failures["bad_credentials"] += 1
            except Exception as exc:
                self.errors["query"] += 1
                raise RuntimeError(f"Elasticsearch query for auth source {self.source.name} failed: "
                                   f"{type(exc).__name__}: {exc}; check auth_logs[].elasticsearch (url, index, "
                                   "credentials) and that the client major matches the cluster's") from None
            horizon = (newest or since + overlap_ms) - overlap_ms
            self.seen = {kind: {i: t for i, t in ids.items() if t >= horizon} for kind, ids in seen.items()}
            self.cursor = newest if newest else since + overlap_ms
            self._save(pending, errors)
            self.totals, self.errors = pending, errors
            return auth_families(self.source.name, pending, errors, 0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
