"""The Elasticsearch source through the official client against a stand-in ES REST server.

Documents are ECS-shaped access-log events as Filebeat's nginx module produces them. The
test indexes them itself, so the expected counts are its own; late documents (timestamps
inside the overlap window, indexed after a run) must be counted once, re-runs count nothing
twice, and more than one page of hits is followed.
"""

from __future__ import annotations

import time

import pytest

from regwatch.config import parse_config
from regwatch.logs.elasticsearch import PAGE_SIZE, ElasticsearchCollector
from tests.fakes.elasticsearch import FakeElasticsearch


@pytest.fixture
def es():
    server = FakeElasticsearch()
    yield server
    server.stop()


def event(ts_ms: int, status: int, user: str | None = "alice", path: str = "/v2/lib/app/manifests/v1") -> dict:
    doc = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z",
           "url": {"original": path}, "http": {"response": {"status_code": status}}}
    if user:
        doc["user"] = {"name": user}
    return doc


def make(es, tmp_path, **extra) -> ElasticsearchCollector:
    config = parse_config({"auth_logs": [{"name": "elk", "start_at": "beginning",
                                          "positions_file": str(tmp_path / "es-positions.json"),
                                          "elasticsearch": {"url": es.url, "index": "filebeat-*,logs-*",
                                                            "overlap": "5m", **extra}}]})
    return ElasticsearchCollector(config.auth_logs[0])


def totals(collector) -> tuple[int, int]:
    collector.collect()
    return collector.totals.requests, sum(collector.totals.failures.values())


def test_counts_incrementally_with_late_documents_once(es, tmp_path):
    now = int(time.time() * 1000)
    n = 0
    for i in range(30):
        es.index("filebeat-8.15", f"g{i}", event(now - 60_000 + i, 200))
    for i in range(4):
        es.index("logs-nginx-default", f"b{i}", event(now - 50_000 + i, 401))
    es.index("filebeat-8.15", "anon", event(now - 40_000, 401, user=None))  # a challenge: not counted
    es.index("filebeat-8.15", "other", event(now - 40_000, 401, path="/index.html"))
    es.index("other-index", "x", event(now - 40_000, 401))  # outside the index pattern
    collector = make(es, tmp_path)
    assert totals(collector) == (34, 4)
    assert totals(collector) == (34, 4)  # a re-run over the overlap window counts nothing twice
    # late documents: timestamps older than the newest seen, but inside the overlap window
    es.index("filebeat-8.15", "late-bad", event(now - 55_000, 401))
    es.index("filebeat-8.15", "late-good", event(now - 58_000, 200))
    n = 34 + 2
    assert totals(collector) == (n, 5)
    # a restart resumes from the persisted totals and remembered ids
    restarted = make(es, tmp_path)
    assert totals(restarted) == (n, 5)
    assert ("DELETE", "/_pit") in es.requests  # every point in time is closed


def test_more_than_one_page(es, tmp_path):
    now = int(time.time() * 1000)
    total = PAGE_SIZE * 2 + 17
    for i in range(total):
        es.index("logs-registry", f"d{i}", event(now - 100_000 + (i // 3), 401 if i % 50 == 0 else 200))
    assert totals(make(es, tmp_path)) == (total, len(range(0, total, 50)))


def test_unreachable_cluster_is_a_clear_error(tmp_path):
    config = parse_config({"auth_logs": [{"name": "elk", "elasticsearch": {"url": "http://127.0.0.1:9",
                                                                           "timeout": "1s"}}]})
    collector = ElasticsearchCollector(config.auth_logs[0])
    with pytest.raises(RuntimeError, match="check auth_logs\\[\\].elasticsearch"):
        collector.collect()
    assert collector.errors["query"] == 1
