"""The Harbor collectors against the fake Harbor (tests/fakes/harbor.py): what each metric says,
compared with counts the test makes itself from the fake's data, and how regwatch copes with
Harbor's pitfalls (422 above page_size 100, relative Link, double encoding, roles, old versions,
core down, 429)."""

from __future__ import annotations

import logging
import time

import pytest

from regwatch.budget import Budget
from regwatch.client import RegistryClient
from regwatch.collectors import TargetContext
from regwatch.collectors.harbor.api import items_of, repo_path
from regwatch.collectors.harbor.audit import AuditState, new_events
from regwatch.collectors.harbor.rotation import rotate
from tests.fakes.harbor import T0, FakeHarbor
from tests.harbor_support import Scrape, api_for, target_for


@pytest.fixture
def fake():
    with FakeHarbor(projects=12, repositories=345) as harbor:
        yield harbor


def test_projects_repositories_and_quotas_match_the_harbor_data(fake, tmp_path):
    scrape = Scrape(target_for(fake, tmp_path)).run()
    names = [fake.project_name(i) for i in range(1, 13)]
    public = sum(fake.project_public(i) for i in range(1, 13))
    assert scrape.get("regwatch_harbor_projects", target="h", public="true") == public
    assert scrape.get("regwatch_harbor_projects", target="h", public="false") == 12 - public
    assert scrape.get("regwatch_registry_repositories", target="h") == 345
    # Per-project sums, counted here from the fake's repositories one by one.
    artifacts = {n: 0 for n in names}
    pulls = {n: 0 for n in names}
    for j in range(1, 346):
        repo = fake.repository(j)
        project = repo["name"].split("/")[0]
        artifacts[project] += repo["artifact_count"]
        pulls[project] += repo["pull_count"]
    assert scrape.series("regwatch_harbor_project_artifacts") == artifacts
    assert scrape.series("regwatch_harbor_project_pulls_total") == pulls
    # Quotas: -1 (unlimited) has no hard series and no ratio.
    limited = [i for i in range(1, 13) if fake.quota(i)["hard"]["storage"] >= 0]
    assert set(scrape.series("regwatch_harbor_project_quota_hard_bytes")) == {fake.project_name(i) for i in limited}
    assert scrape.get("regwatch_harbor_project_quota_used_ratio", target="h", project="proj2") == \
        pytest.approx(fake.quota(2)["used"]["storage"] / fake.quota(2)["hard"]["storage"])
    assert scrape.get("regwatch_storage_used_ratio", target="h") == pytest.approx(0.6)
    assert scrape.get("regwatch_harbor_proxy_cache_project", target="h", project="proj2", registry="dockerhub") == 1
    assert scrape.get("regwatch_target_up", target="h", kind="harbor") == 1
    # No page was ever asked for with more than 100 items (Harbor answers 422 above it).
    assert all(int(q.get("page_size", ["10"])[0]) <= 100 for _, _, q in fake.requests)
    scrape.close()


def test_page_size_above_100_gets_422_from_the_fake(fake):
    with RegistryClient(fake.url, username="admin", password="Harbor12345") as client:
        resp = client.request("GET", "/api/v2.0/projects", params={"page_size": 101}, preemptive_basic=True,
                              ok=(422,))
        assert resp.json()["errors"][0]["code"] == "UNPROCESSABLE_ENTITY"


def test_pagination_follows_relative_link_when_there_is_no_total_count(fake, tmp_path, monkeypatch):
    api = api_for(target_for(fake, tmp_path))
    original = fake._list

    def without_total(handler, template, path, query, getter, total, page, size):
        # Drop X-Total-Count: regwatch must fall back to the relative " , "-joined Link header.
        send = fake._send

        def strip(handler, status, body, ctype, headers=None):
            headers = {k: v for k, v in (headers or {}).items() if k != "X-Total-Count"}
            assert headers.get("Link", "").startswith("</api/v2.0/") or "Link" not in headers
            send(handler, status, body, ctype, headers)

        monkeypatch.setattr(fake, "_send", strip)
        try:
            original(handler, template, path, query, getter, total, page, size)
        finally:
            monkeypatch.setattr(fake, "_send", send)

    monkeypatch.setattr(fake, "_list", without_total)
    ids = [r.integer("id") for r in api.list_all("/repositories")]
    assert ids == list(range(1, 346))
    api.close()


def test_repository_names_with_a_slash_are_encoded_twice(fake, tmp_path):
    nested = next(j for j in range(1, 346) if "/" in fake.repo_name(j).split("/", 1)[1])
    project, short = fake.repo_name(nested).split("/", 1)
    assert repo_path(short) == short.replace("/", "%252F")
    with RegistryClient(fake.url, username="admin", password="Harbor12345") as client:
        base = f"/api/v2.0/projects/{project}/repositories"
        ok = client.request("GET", f"{base}/{repo_path(short)}/artifacts", preemptive_basic=True)
        assert len(ok.json()) == nested % 7 + 1
        once = client.request("GET", f"{base}/{short.replace('/', '%2F')}/artifacts", preemptive_basic=True,
                              ok=(404,))
        assert once.status_code == 404


def test_signed_artifacts_are_counted_per_project_over_time(fake, tmp_path):
    fake.n_repos = 60
    scrape = Scrape(target_for(fake, tmp_path, detail_calls_per_cycle=25))
    scrape.run()
    assert scrape.get("regwatch_harbor_detail_coverage_ratio", target="h", group="signatures") == pytest.approx(25 / 60)
    scrape.run()
    scrape.run()  # 75 visits >= 60 repositories: everything seen once
    assert scrape.get("regwatch_harbor_detail_coverage_ratio", target="h", group="signatures") == 1.0
    assert sum(scrape.series("regwatch_harbor_project_signed_artifacts").values()) == fake.signed_artifacts()
    # The members group walks projects the same way: 12 projects at 25 a cycle are all known.
    members = scrape.series("regwatch_harbor_project_members")
    assert members  # keys are label tuples with role; compare one project with its summary
    assert scrape.get("regwatch_harbor_project_members", target="h", project="proj3", role="developer") == 3
    assert scrape.get("regwatch_harbor_project_members", target="h", project="proj3", role="guest") is None
    scrape.close()


def test_rotate_visits_every_item_once_per_round():
    items = list(range(10))
    seen, cursor = [], 0
    for _ in range(4):
        chosen, cursor = rotate(items, cursor, 3)
        seen += chosen
    assert seen[:10] == items and seen[10:] == [0, 1]


def test_replication_gc_scans_jobservice_and_robots(fake, tmp_path):
    scrape = Scrape(target_for(fake, tmp_path)).run()
    g = scrape.get
    # Latest execution of to-dr failed with 8 succeeded and 2 failed tasks.
    assert g("regwatch_harbor_replication_last_execution_succeeded", target="h", policy="to-dr") == 0
    assert g("regwatch_harbor_replication_tasks", target="h", policy="to-dr", status="failed") == 2
    assert g("regwatch_harbor_replication_last_execution_end_timestamp_seconds", target="h", policy="to-dr") == \
        T0 + 3600 + 300
    assert g("regwatch_harbor_replication_policy_enabled", target="h", policy="nightly") == 0
    # GC: newest run is Running, the last finished one errored, the last success before that.
    assert g("regwatch_harbor_gc_running", target="h") == 1
    assert g("regwatch_harbor_gc_last_run_succeeded", target="h") == 0
    assert g("regwatch_harbor_gc_last_freed_bytes", target="h") == 512 * 1024 * 1024  # the successful run's
    assert g("regwatch_harbor_gc_last_purged_blobs", target="h") == 120
    assert g("regwatch_harbor_gc_last_purged_manifests", target="h") == 8
    assert g("regwatch_harbor_gc_last_success_timestamp_seconds", target="h") == T0 + 60
    assert g("regwatch_harbor_gc_next_run_timestamp_seconds", target="h") == T0 + 86400
    assert g("regwatch_harbor_purge_audit_last_run_succeeded", target="h") == 1
    assert g("regwatch_harbor_purge_audit_next_run_timestamp_seconds", target="h") == T0 + 5 * 86400
    assert g("regwatch_harbor_scan_all_tasks", target="h", status="Error") == 5
    assert g("regwatch_harbor_scan_all_ongoing", target="h") == 1
    assert g("regwatch_harbor_vulnerabilities", target="h", severity="critical") == 3
    assert g("regwatch_harbor_jobservice_queue_length", target="h", job_type="REPLICATION") == 3
    assert g("regwatch_harbor_jobservice_queue_latency_seconds", target="h", job_type="REPLICATION") == 12
    assert g("regwatch_harbor_robot_expiry_timestamp_seconds", target="h", robot="robot$ci") == T0 + 30 * 86400
    assert g("regwatch_harbor_robot_expiry_timestamp_seconds", target="h", robot="robot$proj1+pull") is None
    assert g("regwatch_harbor_robot_disabled", target="h", robot="robot$proj1+pull") == 1
    scrape.close()


def test_forbidden_endpoints_are_not_collected_with_one_log_line(fake, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="regwatch.collectors.harbor")
    scrape = Scrape(target_for(fake, tmp_path, user="dev"))
    scrape.run()
    scrape.run()
    g = scrape.get
    assert g("regwatch_harbor_endpoint_collected", target="h", endpoint="/quotas") == 0
    assert g("regwatch_harbor_endpoint_collected", target="h", endpoint="/projects") == 1
    # The group still succeeds: a forbidden endpoint is not an error every cycle.
    assert g("regwatch_collector_success", target="h", collector="harbor_storage") == 1
    assert g("regwatch_harbor_project_quota_used_bytes", target="h", project="library") is None
    lines = [r for r in caplog.records if r.getMessage() == "Harbor endpoint not collected"
             and r.endpoint == "/api/v2.0/quotas"]
    assert len(lines) == 1
    # A non-admin sees no /statistics totals, so no total series.
    assert g("regwatch_harbor_storage_consumption_bytes", target="h") is None
    scrape.close()


def test_a_robot_cannot_list_robots_but_gets_the_rest(fake, tmp_path):
    scrape = Scrape(target_for(fake, tmp_path, user="robot$monitor")).run()
    assert scrape.get("regwatch_harbor_endpoint_collected", target="h", endpoint="/robots") == 0
    assert scrape.get("regwatch_harbor_endpoint_collected", target="h", endpoint="/quotas") == 1
    assert scrape.get("regwatch_target_up", target="h", kind="harbor") == 1
    scrape.close()


def test_wrong_password_is_target_down_with_a_clear_error(fake, tmp_path):
    scrape = Scrape(target_for(fake, tmp_path, user="nobody")).run()
    assert scrape.get("regwatch_target_up", target="h", kind="harbor") == 0
    status = {s["collector"]: s for s in scrape.runner.status()}
    secret = tmp_path / "secret-nobody"
    assert status["harbor"]["last_error"] == (
        "target h: Harbor did not accept user nobody (from the config) (/systeminfo answered as to an anonymous "
        "caller); check the username and password")
    assert "wrong" not in status["harbor"]["last_error"] and secret.read_text() == "wrong"
    scrape.close()


@pytest.mark.servers
def test_an_old_harbor_lacks_endpoints_without_calling_them(tmp_path):
    with FakeHarbor(version="v2.6.1") as old:
        scrape = Scrape(target_for(old, tmp_path)).run()
        for endpoint in ("/jobservice/queues", "/schedules", "/security/summary", "/auditlog-exts",
                         "/projects/{project_name_or_id}/artifacts"):
            assert scrape.get("regwatch_harbor_endpoint_collected", target="h", endpoint=endpoint) == 0
            assert old.calls[endpoint] == 0  # known from the version: never asked
        # The audit falls back to the legacy /audit-logs.
        assert scrape.get("regwatch_harbor_endpoint_collected", target="h", endpoint="/audit-logs") == 1
        scrape.close()


@pytest.mark.servers
def test_an_unknown_old_endpoint_404_is_not_collected(tmp_path):
    with FakeHarbor(version="v2.2.0") as old:
        api = api_for(target_for(old, tmp_path))
        api._version = None  # version unknown: regwatch has to learn it from the 404
        scrape = Scrape(target_for(old, tmp_path), api)
        for job in scrape.jobs[1:]:  # skip the primary job, which would learn the version
            scrape.runner.run_once(job)
        assert old.calls["/health"] == 1
        assert api._collected["/health"] is False
        scrape.close()


def test_core_down_is_target_down_and_core_unhealthy(fake, tmp_path):
    fake.core_down = True
    target = target_for(fake, tmp_path, collection_timeout="20s")
    scrape = Scrape(target, api_for(target, retries=2, backoff=0.1))
    scrape.run()
    assert scrape.get("regwatch_target_up", target="h", kind="harbor") == 0
    assert scrape.get("regwatch_harbor_healthy", target="h") == 0
    assert scrape.get("regwatch_harbor_component_healthy", target="h", component="core") == 0
    # The first 502 (retried twice by the client) pauses the target: the other groups do not ask again.
    assert sum(fake.calls.values()) == 3
    scrape.close()


def test_unhealthy_component_reported(fake, tmp_path):
    fake.components["trivy"] = "unhealthy"
    scrape = Scrape(target_for(fake, tmp_path)).run()
    assert scrape.get("regwatch_harbor_healthy", target="h") == 0
    assert scrape.get("regwatch_harbor_component_healthy", target="h", component="trivy") == 0
    assert scrape.get("regwatch_harbor_component_healthy", target="h", component="redis") == 1
    scrape.close()


def test_rate_limited_harbor_is_backed_off_not_hammered(fake, tmp_path):
    fake.rate_limit = 1
    target = target_for(fake, tmp_path, collection_timeout="30s")
    waits: list[float] = []
    ctx = TargetContext(target, budget=Budget(timeout=target.timeout, retries=2, backoff=0.1, sleep=waits.append))
    scrape = Scrape(target, ctx=ctx)
    scrape.run()
    # The first 429s are retried after Retry-After (1 s); then every group pauses without asking again.
    calls = sum(fake.calls.values())
    assert calls <= 3 * len(scrape.jobs), f"{calls} requests: a tight loop"
    assert waits[:2] == [1.0, 1.0]  # the client honoured Retry-After twice
    assert scrape.get("regwatch_target_up", target="h", kind="harbor") == 0
    before = sum(fake.calls.values())
    scrape.run()  # within the pause: no request at all
    assert sum(fake.calls.values()) == before
    scrape.close()


@pytest.mark.servers
def test_concurrency_is_bounded_per_target(tmp_path):
    with FakeHarbor(projects=50, repositories=3000, delay=0.02) as slow:
        target = target_for(slow, tmp_path)
        target.concurrency = 3
        inflight, peak = [0], [0]
        original = slow._handle

        def counting(handler):
            with slow._lock:
                inflight[0] += 1
                peak[0] = max(peak[0], inflight[0])
            try:
                original(handler)
            finally:
                with slow._lock:
                    inflight[0] -= 1

        slow._handle = counting
        scrape = Scrape(target)
        import threading
        threads = [threading.Thread(target=scrape.runner.run_once, args=(job,)) for job in scrape.jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert peak[0] == 3  # reached, never exceeded, though 12 jobs ran at once
        scrape.close()


# --------------------------------------------------------------------------- audit


def test_new_events_skips_what_was_counted_even_in_the_same_second():
    state = AuditState(None)
    first = [{"id": 1, "op_time": "2024-01-01T00:00:01Z"}, {"id": 2, "op_time": "2024-01-01T00:00:02Z"}]
    assert [e.integer("id") for e in new_events(items_of(first, "test"), state)] == [1, 2]
    again = first + [{"id": 3, "op_time": "2024-01-01T00:00:02Z"}, {"id": 4, "op_time": "2024-01-01T00:00:03Z"}]
    assert [e.integer("id") for e in new_events(items_of(again, "test"), state)] == [3, 4]
    assert new_events(items_of(again, "test"), state) == []


def test_audit_counts_incrementally_and_survives_a_restart(fake, tmp_path):
    state_file = tmp_path / "state" / "audit.json"
    now = time.time()
    fake.add_audit("login", resource_type="user", result=False, when=now - 10)
    fake.add_audit("login", resource_type="user", result=True, when=now - 10)
    fake.add_audit("push", when=now - 5)
    fake.add_audit("pull", when=now - 4000)  # older than the default 1 h lookback: not counted
    target = target_for(fake, tmp_path, audit_state_file=str(state_file))
    scrape = Scrape(target).run()
    assert scrape.get("regwatch_auth_requests_total", source="h") == 2
    assert scrape.get("regwatch_auth_failures_total", source="h", reason="bad_credentials") == 1
    assert scrape.get("regwatch_harbor_audit_events_total", target="h", operation="push") == 1
    assert scrape.get("regwatch_harbor_audit_events_total", target="h", operation="pull") is None
    scrape.run()
    assert scrape.get("regwatch_auth_requests_total", source="h") == 2  # nothing counted twice
    fake.add_audit("login", resource_type="user", result=False)
    scrape.run()
    assert scrape.get("regwatch_auth_failures_total", source="h", reason="bad_credentials") == 2
    scrape.close()
    assert state_file.exists()
    # A restart (a new collector) reads the mark: old events stay counted once, new ones are counted.
    fake.add_audit("delete", result=False)
    restarted = Scrape(target_for(fake, tmp_path, audit_state_file=str(state_file))).run()
    assert restarted.get("regwatch_auth_requests_total", source="h") == 0
    assert restarted.get("regwatch_harbor_audit_events_total", target="h", operation="delete") == 1
    assert restarted.get("regwatch_harbor_audit_failed_events_total", target="h", operation="delete") == 1
    restarted.close()


@pytest.mark.servers
def test_audit_on_an_old_harbor_counts_events_without_auth_metrics(tmp_path):
    with FakeHarbor(version="v2.10.0") as old:
        old.add_audit("push")
        old.add_audit("push")
        scrape = Scrape(target_for(old, tmp_path)).run()
        assert scrape.get("regwatch_harbor_audit_events_total", target="h", operation="push") == 2
        assert scrape.get("regwatch_auth_requests_total", source="h") is None
        scrape.close()


def test_no_secret_in_the_exposition(fake, tmp_path):
    scrape = Scrape(target_for(fake, tmp_path)).run()
    text = scrape.runner.exposition().decode()
    assert "Harbor12345" not in text and "*****" not in text and "puller" not in text
    scrape.close()


def test_artifacts_by_type_preheat_and_a_paused_scheduler(fake, tmp_path):
    fake.scheduler_paused = True
    scrape = Scrape(target_for(fake, tmp_path, detail_calls_per_cycle=1000)).run()
    # Counted here from the fake's artifacts, repository by repository.
    expected: dict[tuple[str, str], int] = {}
    for j in range(1, fake.n_repos + 1):
        project = fake.repo_name(j).split("/")[0]
        for artifact in fake.artifacts(j):
            key = (project, artifact["type"])
            expected[key] = expected.get(key, 0) + 1
    got = {(dict(k[1])["project"], dict(k[1])["artifact_type"]): v for k, v in scrape.samples.items()
           if k[0] == "regwatch_harbor_project_artifacts_by_type"}
    assert got == expected and {t for _, t in got} == {"IMAGE", "CHART", "CNAB"}
    assert scrape.get("regwatch_harbor_detail_coverage_ratio", target="h", group="artifacts") == 1.0
    # warm-nodes' newest execution errored; never-ran has no execution, so no series.
    preheat = {dict(k[1])["policy"]: v for k, v in scrape.samples.items()
               if k[0] == "regwatch_harbor_preheat_last_execution_success"}
    assert preheat == {"library/warm-nodes": 0.0}
    assert scrape.get("regwatch_harbor_jobservice_schedules_paused", target="h") == 1
    scrape.close()


def test_the_detail_groups_share_one_project_listing(fake, tmp_path):
    scrape = Scrape(target_for(fake, tmp_path)).run()
    # projects, members, retention, preheat and artifacts all need the projects: one listing of 12 (one page).
    assert fake.calls["/projects"] == 1
    scrape.close()
