"""A kind that does not match what answers at the url is one clear error on the target's primary job, and
none of that kind's other collectors report success (issue 14). The registry here is a real
docker-registry: what a user points ``kind: nexus`` or ``kind: artifactory`` at by mistake."""

from __future__ import annotations

import pytest

from regwatch.collectors import build_jobs
from regwatch.config import parse_config
from regwatch.runner import Runner, wait_until


@pytest.mark.parametrize("kind, primary, message", [
    ("nexus", "nexus", "no Nexus REST API at {url}/service/rest/v1 (GET /service/rest/v1/status answered 404); check "
                       "kind and url (Nexus's base URL, not a Docker connector port)"),
    ("artifactory", "artifactory", "no Artifactory API at {url} (GET /api/system/ping answered 404); check kind and "
                                   "url (Artifactory's base, …/artifactory)"),
])
def test_the_wrong_kind_is_one_error_on_the_primary_job(make_registry, kind, primary, message, caplog):
    registry = make_registry()
    config = parse_config({"targets": [{"name": "oops", "kind": kind, "url": registry.url, "interval": "1h"}]})
    runner = Runner(build_jobs(config, sleep=lambda s: None))
    runner.start()
    try:
        assert wait_until(lambda: runner.ready, 30)
        status = {s["collector"]: (s["success"], s["last_error"]) for s in runner.status()}
    finally:
        runner.stop()
    assert status.pop(primary) == (False, "target oops: " + message.format(url=registry.url))
    assert status and all(success is False for success, _ in status.values())
    assert {error for _, error in status.values()} == {
        f"target oops: not collected: the target's primary job found no {kind} API at its url (see its error)"}
    lines = [r for r in caplog.records if r.getMessage() == "collector failed"]
    assert len(lines) == len(runner.jobs)  # one line per job, none of them a 404 of its own
