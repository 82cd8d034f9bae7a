"""The Elasticsearch source through the official client against a stand-in ES REST server.

Documents are ECS-shaped access-log events as Filebeat's nginx module produces them. The
test indexes them itself, so the expected counts are its own; late documents (timestamps
inside the overlap window, indexed after a run) must be counted once, re-runs count nothing
twice, and more than one page of hits is followed.

Each counting test runs twice: against a fake ES 8 and a fake ES 9, which refuse a client of
the wrong major the way Elasticsearch's REST compatibility check does. regwatch must read the
cluster's version and pick the matching official client (``elasticsearch8`` 8.x for ES 8, the
``elasticsearch`` 9.x package for ES 9, both installed by the ``test`` extra); the
``compatible-with`` major of every request the fake accepted shows which client did the work.
"""

from __future__ import annotations

import base64
import logging
import sys
import time

import pytest

from regwatch.config import parse_config
from regwatch.collectors.elasticsearch import ElasticsearchCollector
from regwatch.logs.elasticsearch import PAGE_SIZE, ElasticsearchSetupError
from tests.fakes.elasticsearch import FakeElasticsearch

PASSWORD = "es-secret-pw"
BASIC = "Basic " + base64.b64encode(f"regwatch:{PASSWORD}".encode()).decode()


@pytest.fixture
def start_es():
    servers = []

    def start(major: int, **kwargs) -> FakeElasticsearch:
        servers.append(FakeElasticsearch(major, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(params=[8, 9], ids=["es8", "es9"])
def es(request, start_es, monkeypatch):
    """A fake ES of each major that wants regwatch's Basic credentials on every request."""
    monkeypatch.setenv("REGWATCH_TEST_ES_PASSWORD", PASSWORD)
    return start_es(request.param, authorization=BASIC)


def event(ts_ms: int, status: int, user: str | None = "alice", path: str = "/v2/lib/app/manifests/v1") -> dict:
    doc = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z",
           "url": {"original": path}, "http": {"response": {"status_code": status}}}
    if user:
        doc["user"] = {"name": user}
    return doc


def make(es, tmp_path, **extra) -> ElasticsearchCollector:
    if es.authorization == BASIC:
        extra = {"username": "regwatch", "password_env": "REGWATCH_TEST_ES_PASSWORD", **extra}
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
    assert not es.pits
    # the version probe (plain JSON, any major answers it) and then only the matching client
    assert es.compat.count(None) == 2 and set(es.compat) == {None, es.major}
    assert not es.refused


def test_more_than_one_page(es, tmp_path):
    now = int(time.time() * 1000)
    total = PAGE_SIZE * 2 + 17
    for i in range(total):
        es.index("logs-registry", f"d{i}", event(now - 100_000 + (i // 3), 401 if i % 50 == 0 else 200))
    assert totals(make(es, tmp_path)) == (total, len(range(0, total, 50)))
    assert set(es.compat) == {None, es.major}
    pages = -(-total // PAGE_SIZE) + 1  # attempts over 3 pages; the 41 failures fit in one
    assert es.requests.count(("POST", "/_search")) == pages


def test_unreachable_cluster_is_a_clear_error(tmp_path):
    config = parse_config({"auth_logs": [{"name": "elk", "elasticsearch": {"url": "http://127.0.0.1:9",
                                                                           "timeout": "1s"}}]})
    collector = ElasticsearchCollector(config.auth_logs[0])
    with pytest.raises(RuntimeError, match="check auth_logs\\[\\].elasticsearch"):
        collector.collect()
    assert collector.errors["query"] == 1


def test_es8_refuses_the_9x_client_and_the_error_says_so(start_es, tmp_path):
    es = start_es(8)
    es.index("logs-registry", "b", event(int(time.time() * 1000) - 1000, 401))
    collector = make(es, tmp_path, client_major=9)
    with pytest.raises(RuntimeError, match="media_type_header_exception") as info:
        collector.collect()
    assert "client_major" in str(info.value)
    assert es.refused and "Accept version must be either version 8 or 7, but found 9" in es.refused[0]
    assert collector.errors["query"] == 1
    # the same cluster with the 8.x client chosen explicitly: no version probe, counted
    assert totals(make(es, tmp_path, client_major=8)) == (1, 1)
    assert ("GET", "/") not in es.requests


def test_es9_accepts_the_8x_client_through_rest_compatibility(start_es, tmp_path):
    es = start_es(9)
    es.index("logs-registry", "b", event(int(time.time() * 1000) - 1000, 401))
    assert totals(make(es, tmp_path, client_major=8)) == (1, 1)
    assert set(es.compat) == {8}


def test_es8_without_the_8x_client_tells_what_to_install(start_es, tmp_path, monkeypatch):
    es = start_es(8)
    monkeypatch.setitem(sys.modules, "elasticsearch8", None)  # as if elasticsearch8 were not installed
    collector = make(es, tmp_path)
    with pytest.raises(ElasticsearchSetupError) as info:
        collector.collect()
    message = str(info.value)
    assert "runs Elasticsearch 8.19.3, which needs the 8.x client" in message
    assert "installed clients: 9.x (elasticsearch)" in message
    assert "pip install 'elasticsearch>=8.12,<9'" in message and "'elasticsearch8>=8.12,<9'" in message
    assert es.requests == [("GET", "/")]  # nothing was sent that ES 8 would refuse
    assert collector.errors["query"] == 1


def test_version_probe_forbidden_then_allowed_and_api_key_sent(start_es, tmp_path, monkeypatch):
    monkeypatch.setenv("REGWATCH_TEST_ES_KEY", "a2V5LWlkOmtleS1zZWNyZXQ=")
    es = start_es(8, root_status=403, authorization="ApiKey a2V5LWlkOmtleS1zZWNyZXQ=")
    es.index("logs-registry", "b", event(int(time.time() * 1000) - 1000, 401))
    collector = make(es, tmp_path, api_key_env="REGWATCH_TEST_ES_KEY")
    with pytest.raises(ElasticsearchSetupError, match="monitor cluster privilege.*client_major to 8 or 9") as info:
        collector.collect()
    assert "a2V5" not in str(info.value)  # the key is not in the message
    assert "answered 403" in str(info.value) and es.compat == [None]  # the probe carried the key: not a 401
    es.root_status = 200  # privilege granted: the next run reads the version again and counts
    assert totals(collector) == (1, 1)
    assert set(es.compat) == {None, 8}


def test_unsupported_cluster_version(start_es, tmp_path):
    es = start_es(7, version="7.17.25")
    with pytest.raises(ElasticsearchSetupError, match="runs Elasticsearch 7.17.25; regwatch reads 8.x and 9.x"):
        make(es, tmp_path).collect()


# ---------------------------------------------------------------------------- a cluster that cannot be trusted


def hostile_collector(start_es, tmp_path, kind: str, **extra) -> tuple[FakeElasticsearch, ElasticsearchCollector]:
    es = start_es(9, hostile=kind)
    return es, make(es, tmp_path, client_major=9, **extra)


def test_endless_search_after_is_cut_by_the_page_cap_and_resumes(start_es, tmp_path, caplog):
    es, collector = hostile_collector(start_es, tmp_path, "endless", max_pages=3)
    with caplog.at_level(logging.WARNING):
        totals, errors = collector.es.run()
    # three pages per query, each of PAGE_SIZE new documents: counted, and the run ended
    assert totals.requests == 3 * PAGE_SIZE and sum(totals.failures.values()) == 3 * PAGE_SIZE
    assert es.requests.count(("POST", "/_search")) == 6
    assert errors["query_truncated"] == 2
    assert (f"auth source elk: the cluster at {es.url} had more attempts than one collection reads (3 pages, 60s); "
            "the rest is read next time") in caplog.messages
    assert not es.pits  # every point in time closed
    totals, _ = collector.es.run()  # the next run goes on from there
    assert totals.requests == 6 * PAGE_SIZE


def test_endless_search_after_is_cut_by_the_deadline(start_es, tmp_path):
    es, collector = hostile_collector(start_es, tmp_path, "endless", max_pages=10_000, deadline="1s")
    started = time.monotonic()
    totals, errors = collector.es.run()
    assert time.monotonic() - started < 1.0 + 10.0  # the deadline plus at most one request's timeout
    assert errors["query_truncated"] == 2 and totals.requests > 0


def test_huge_answer_is_refused_without_reading_it(start_es, tmp_path):
    es, collector = hostile_collector(start_es, tmp_path, "huge")
    with pytest.raises(RuntimeError) as info:
        collector.collect()
    assert str(info.value) == (
        f"Elasticsearch query for auth source elk failed: Elasticsearch at {es.url} sent an answer larger than 8 MiB; "
        "regwatch reads no more (is auth_logs[].elasticsearch.url an Elasticsearch?); check auth_logs[].elasticsearch "
        "(url, index, credentials, client_major)")
    assert collector.errors["query"] == 1


def test_trickled_answer_stops_at_the_deadline(start_es, tmp_path):
    es, collector = hostile_collector(start_es, tmp_path, "trickle", deadline="2s")
    started = time.monotonic()
    totals, errors = collector.es.run()  # out of time: what was read is kept, the run ends
    assert time.monotonic() - started < 2.0 + 3.0
    assert errors["query_truncated"] == 2 and totals.requests == 0


@pytest.mark.parametrize("kind", ["garbage", "not_json"])
def test_garbage_answer_is_a_clear_error(start_es, tmp_path, kind):
    es, collector = hostile_collector(start_es, tmp_path, kind)
    with pytest.raises(RuntimeError) as info:
        collector.collect()
    detail = {"garbage": f"the cluster at {es.url} answered a search with a hit that has no usable _id and sort "
                         "timestamp; check auth_logs[].elasticsearch.timestamp_field",
              "not_json": "SerializationError: Unable to deserialize as JSON: b'\\x00\\xffnot json at all'"}[kind]
    assert str(info.value) == (f"Elasticsearch query for auth source elk failed: {detail}; check "
                               "auth_logs[].elasticsearch (url, index, credentials, client_major)")


def test_tls_verification_off_is_said_loudly(caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="regwatch.tls"):
        config = parse_config({"auth_logs": [{"name": "elk", "elasticsearch": {
            "url": "https://127.0.0.1:9", "tls": {"insecure_skip_verify": True}}}]})
        ElasticsearchCollector(config.auth_logs[0])
    [record] = [r for r in caplog.records if r.name == "regwatch.tls"]
    assert record.getMessage() == "TLS verification is OFF"
    assert record.peer == "auth_logs elk (Elasticsearch https://127.0.0.1:9)"
