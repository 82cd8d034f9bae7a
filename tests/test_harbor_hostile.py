"""Every byte from Harbor is untrusted (issue 18), and a kind that does not match what answers is one
clear error (issue 14).

The hostile Harbor is the fake (tests/fakes/harbor.py, goharbor/harbor swagger v2.15.2) with
``tamper``/``extra_headers`` set: answers of the wrong shape, wrong types, counts that lie. Each
must become a failed collection of the group that read it, with a message naming the request and
the field, while the other groups go on; nothing may reach the runner as a Python exception type
(``AttributeError: 'list' object has no attribute 'get'``). The wrong kind is a real
docker-registry (Debian's 2.8.2) behind ``kind: harbor``.
"""

from __future__ import annotations

import logging

import pytest

from regwatch.collectors import build_jobs
from regwatch.config import parse_config
from regwatch.runner import Runner, wait_until
from tests.fakes.harbor import FakeHarbor
from tests.harbor_support import Scrape, target_for

HINT = "as Harbor's API sends; is url a Harbor (and not a proxy or another server)?"


@pytest.fixture
def fake():
    with FakeHarbor(projects=5, repositories=30) as harbor:
        yield harbor


def errors(scrape: Scrape) -> dict[str, str]:
    return {s["collector"]: s["last_error"] for s in scrape.runner.status()}


@pytest.mark.parametrize("template, tamper, group, message", [
    ("/quotas", lambda body: {"items": body}, "harbor_storage",
     "target h: GET /api/v2.0/quotas: the answer is an object, not a list as Harbor's API sends for this endpoint; "
     "is url a Harbor (and not a proxy or another server)?"),
    ("/scans/all/metrics", lambda body: {**body, "total": "lots"}, "harbor_scans",
     f'target h: GET /api/v2.0/scans/all/metrics: total is "lots", not a number {HINT}'),
    ("/quotas", lambda body: [{**body[0], "hard": {"storage": "10G"}}] + body[1:], "harbor_storage",
     f'target h: GET /api/v2.0/quotas: item 0\'s hard.storage is "10G", not a number {HINT}'),
    ("/health", lambda body: {**body, "components": {"core": "healthy"}}, "harbor_health",
     f'target h: GET /api/v2.0/health: components is {{"core": "healthy"}}, not a list {HINT}'),
    ("/jobservice/queues", lambda body: ["REPLICATION"], "harbor_jobservice",
     "target h: GET /api/v2.0/jobservice/queues: item 0 is a string, not an object as Harbor's API sends; "
     "is url a Harbor (and not a proxy or another server)?"),
    ("/replication/policies", lambda body: [{**body[0], "enabled": "yes"}], "harbor_replication",
     f'target h: GET /api/v2.0/replication/policies: item 0\'s enabled is "yes", not true or false {HINT}'),
    ("/robots", lambda body: [{**body[0], "name": "r" * 5000}], "harbor_robots",
     f'target h: GET /api/v2.0/robots: item 0\'s name is "{"r" * 36}..., not a string of '
     f"at most 1024 characters {HINT}"),
    ("/system/gc", lambda body: [{**r, "job_parameters": "{not json"} for r in body], "harbor_gc",
     # Item 2 is the successful run, the one whose figures are read; the position is that of Harbor's answer.
     f'target h: GET /api/v2.0/system/gc: item 2\'s job_parameters is "{{not json", not a JSON object in a string '
     f"{HINT}"),
    ("/system/gc", lambda body: [{**r, "update_time": "yesterday"} for r in body], "harbor_gc",
     f'target h: GET /api/v2.0/system/gc: item 1\'s update_time is "yesterday", not a date-time {HINT}'),
    ("/scans/all/metrics", lambda body: {**body, "total": 10 ** 400}, "harbor_scans",
     "target h: GET /api/v2.0/scans/all/metrics: total is "
     f'{str(10 ** 400)[:37]}..., not a number regwatch can hold {HINT}'),
    ("/repositories", lambda body: b"[" * 100_000, ("harbor_projects", "harbor_signatures"),
     "target h: GET /api/v2.0/repositories did not answer with JSON; is url the Harbor address (not its registry "
     "or a proxy login page)?"),
    ("/registries", lambda body: body + body, "harbor_projects",
     "target h: Harbor listed the same item twice (regwatch_harbor_registry_healthy{registry='dockerhub', "
     "target='h'}); this group's metrics are withheld until it answers consistently"),
])
def test_a_malformed_answer_is_a_clear_error_of_its_group_only(fake, tmp_path, template, tamper, group, message):
    fake.tamper[template] = tamper
    scrape = Scrape(target_for(fake, tmp_path)).run()
    failed = {collector: error for collector, error in errors(scrape).items() if error}
    # The groups that read the endpoint fail (/repositories: projects and signatures); the others do not.
    assert failed == {g: message for g in ((group,) if isinstance(group, str) else group)}
    assert scrape.get("regwatch_target_up", target="h", kind="harbor") == 1
    scrape.close()


@pytest.mark.parametrize("count, message", [
    ("1000000000000", "target h: GET /api/v2.0/repositories: X-Total-Count says 1000000000000 items, more than the "
                      "10000 pages of 100 regwatch reads from one listing; a Harbor that never stops paging?"),
    ("-5", 'target h: GET /api/v2.0/repositories: X-Total-Count "-5" is not a count of items'),
    ("9" * 5000, 'target h: GET /api/v2.0/repositories: X-Total-Count "999999999999999999999999999999999999... is '
                 "not a count of items"),
    ("12 apples", 'target h: GET /api/v2.0/repositories: X-Total-Count "12 apples" is not a count of items'),
])
def test_an_x_total_count_that_lies_is_refused_before_any_fan_out(fake, tmp_path, count, message):
    fake.extra_headers["/repositories"] = {"X-Total-Count": count}
    scrape = Scrape(target_for(fake, tmp_path, skip=["signatures"])).run()
    assert errors(scrape)["harbor_projects"] == message
    # One page asked for, not a million.
    assert fake.calls["/repositories"] == 1
    scrape.close()


def test_a_count_larger_than_the_listing_stops_at_the_first_short_page(fake, tmp_path):
    fake.n_repos = 250
    fake.extra_headers["/repositories"] = {"X-Total-Count": "50000"}  # 500 pages promised, 3 exist
    scrape = Scrape(target_for(fake, tmp_path, skip=["signatures"])).run()
    assert scrape.get("regwatch_registry_repositories", target="h") == 250
    assert fake.calls["/repositories"] <= 3 + 2 * 4  # the pages in flight when the short one came back
    scrape.close()


def test_kind_harbor_at_a_distribution_registry_is_one_error_on_the_primary_job(make_registry, caplog):
    caplog.set_level(logging.WARNING)
    registry = make_registry()
    config = parse_config({"targets": [{"name": "oops", "kind": "harbor", "url": registry.url, "interval": "1h"}]})
    runner = Runner(build_jobs(config, sleep=lambda s: None))
    runner.start()
    try:
        assert wait_until(lambda: runner.ready, 30)
        status = {s["collector"]: (s["success"], s["last_error"]) for s in runner.status() if s["target"] == "oops"}
    finally:
        runner.stop()
    assert status.pop("harbor") == (False, (
        f"target oops: no Harbor API at {registry.url}/api/v2.0 (GET /api/v2.0/systeminfo answered 404); check kind "
        "and url: this looks like a Docker Distribution registry (GET /v2/ answers as one), so kind: distribution"))
    assert len(status) == 14 and all(success is False for success, _ in status.values())
    assert {error for _, error in status.values()} == {
        "target oops: not collected: the target's primary job found no harbor API at its url (see its error)"}
    # No "grant the account the permission" line: the groups never asked Harbor anything.
    assert [r for r in caplog.records if r.getMessage() == "Harbor endpoint not collected"] == []
    assert len([r for r in caplog.records if r.getMessage() == "collector failed"]) == 15


def test_an_html_page_at_the_url_is_not_harbor_either(fake, tmp_path):
    fake.tamper["/systeminfo"] = lambda body: b"<html><body>Sign in</body></html>"
    scrape = Scrape(target_for(fake, tmp_path)).run()
    assert errors(scrape)["harbor"] == (
        f"target h: no Harbor API at {fake.url}/api/v2.0 (GET /api/v2.0/systeminfo answered application/json, not "
        "JSON); check kind and url (Harbor's base URL, not its registry port or a path)")
    scrape.close()


def test_a_malformed_page_behind_a_link_names_that_page(fake, tmp_path, monkeypatch):
    # Without X-Total-Count regwatch follows the Link header; the third page is the broken one.
    send = fake._send

    def without_total(handler, status, body, ctype, headers=None):
        send(handler, status, body, ctype, {k: v for k, v in (headers or {}).items() if k != "X-Total-Count"})

    monkeypatch.setattr(fake, "_send", without_total)
    fake.n_repos = 250
    original = fake.repository
    fake.repository = lambda j: {**original(j), "pull_count": "many"} if j == 201 else original(j)
    scrape = Scrape(target_for(fake, tmp_path, skip=["signatures"])).run()
    assert errors(scrape)["harbor_projects"] == (
        f'target h: GET /api/v2.0/repositories?page=3: item 0\'s pull_count is "many", not a number {HINT}')
    assert fake.calls["/repositories"] == 3
    scrape.close()


def test_a_malformed_page_of_the_fan_out_names_that_page(fake, tmp_path):
    fake.n_repos = 250
    original = fake.repository
    fake.repository = lambda j: {**original(j), "name": 7} if j == 105 else original(j)
    scrape = Scrape(target_for(fake, tmp_path, skip=["signatures"])).run()
    assert errors(scrape)["harbor_projects"] == (
        f"target h: GET /api/v2.0/repositories?page=2: item 4's name is 7, not a string {HINT}")
    scrape.close()
