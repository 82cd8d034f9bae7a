"""kind: nexus targets against a fake Nexus Repository 3 REST API (tests/fakes/nexus.py says which
documented payloads it follows) and REAL docker-registry processes standing in for the Docker
connectors of two hosted Docker repositories.
"""

from __future__ import annotations

import logging
import time

import pytest

from regwatch.client import RegistryClient
from regwatch.collectors import build_jobs, factories
from regwatch.config import parse_config
from regwatch.images import build_image, push_image
from regwatch.runner import Runner
from tests.fakes.nexus import FakeNexus
from tests.helpers import samples, value

@pytest.fixture
def nexus():
    fake = FakeNexus().start()
    yield fake
    fake.stop()


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "nexus-password"
    path.write_text("admin123\n")
    return path


def nexus_target(fake, password_file, **extra) -> dict:
    return {"name": "nx", "kind": "nexus", "url": fake.url, "username": "admin",
            "password_file": str(password_file), "interval": "1s", "timeout": "2s", **extra}


def run(config: dict) -> tuple[str, Runner]:
    cfg = parse_config({"targets": [config]})
    jobs = build_jobs(cfg, {name: name == "nexus" for name in factories()}, sleep=lambda seconds: None)
    runner = Runner(jobs)
    for job in jobs:
        runner.run_once(job)
    return runner.exposition().decode(), runner


def failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "collector failed"]


def test_nexus_targets_get_only_the_nexus_collectors(nexus, password_file):
    cfg = parse_config({"targets": [nexus_target(nexus, password_file)]})
    names = sorted(job.collector.name for job in build_jobs(cfg) if job.target == "nx")
    assert names == ["nexus", "nexus_storage"]  # not distribution (it would GET /v2/ on the REST port)


def test_happy_path_equals_the_payload(nexus, password_file):
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 1
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_storage") == 1
    for check, result in nexus.checks.items():
        assert value(text, "regwatch_nexus_status_check_healthy", target="nx", check=check) == float(result["healthy"])
    for store in nexus.blobstores:
        labels = {"target": "nx", "store": store["name"]}
        used, free = store["totalSizeInBytes"], store["availableSpaceInBytes"]
        assert value(text, "regwatch_storage_used_bytes", **labels) == used
        assert value(text, "regwatch_nexus_blob_store_blobs", **labels) == store["blobCount"]
        if store["type"] == "S3":  # Long.MAX_VALUE free: unlimited, so no capacity, free or ratio
            for name in ("regwatch_storage_capacity_bytes", "regwatch_storage_available_bytes",
                         "regwatch_storage_used_ratio"):
                assert value(text, name, **labels) is None
            continue
        assert value(text, "regwatch_storage_available_bytes", **labels) == free
        assert value(text, "regwatch_storage_capacity_bytes", **labels) == used + free
        assert value(text, "regwatch_storage_used_ratio", **labels) == pytest.approx(used / (used + free))
    docker = [r for r in nexus.repositories if r["format"] == "docker"]
    for kind in ("hosted", "proxy", "group"):
        assert value(text, "regwatch_nexus_repositories", target="nx", repository_type=kind) == \
            sum(r["type"] == kind for r in docker)
    for repo in (r for r in docker if r["type"] == "proxy"):
        labels = {"target": "nx", "repository": repo["name"]}
        assert value(text, "regwatch_nexus_proxy_repository_info", remote_url=repo["attributes"]["proxy"]["remoteUrl"],
                     **labels) == 1
        settings = nexus.proxy_settings[repo["name"]]
        assert value(text, "regwatch_nexus_proxy_repository_blocked", **labels) == float(settings["blocked"])
        assert value(text, "regwatch_nexus_proxy_repository_online", **labels) == float(settings["online"])


def test_proxy_without_settings_endpoint_exports_no_blocked_value(nexus, password_file):
    del nexus.proxy_settings["quay-proxy"]  # answers 404, as a Nexus older than 3.20 does
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_storage") == 1
    assert value(text, "regwatch_nexus_proxy_repository_blocked", target="nx", repository="quay-proxy") is None
    assert value(text, "regwatch_nexus_proxy_repository_blocked", target="nx", repository="docker-proxy") == 0


def test_docker_connectors_count_what_the_real_registries_hold(nexus, password_file, make_registry):
    regs = [make_registry(), make_registry()]
    pushed_repos = pushed_tags = 0
    for i, reg in enumerate(regs):
        with RegistryClient(reg.url) as client:
            for r in range(i + 2):
                image = build_image([{f"f{i}{r}": f"{i}-{r}".encode()}])
                for t in range(r + 1):
                    push_image(client, f"team/app{r}", f"v{t}", image)
                    pushed_tags += 1
                pushed_repos += 1
    connectors = {"docker-hosted": regs[0].url, "docker-hosted-2": regs[1].url}
    text, _ = run(nexus_target(nexus, password_file, nexus={"docker_connectors": connectors}, page_size=2))
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_docker") == 1
    assert value(text, "regwatch_registry_repositories", target="nx") == pushed_repos
    assert value(text, "regwatch_registry_tags", target="nx") == pushed_tags


def test_unreachable_nexus_is_target_down_with_a_log_line(nexus, password_file, caplog):
    nexus.stop()
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 0
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_storage") == 0
    assert not [k for k in samples(text) if k[0].startswith(("regwatch_storage", "regwatch_nexus"))]
    line = next(r for r in failures(caplog) if r.collector == "nexus")
    assert "target nx" in line.err and "/service/rest/v1/status" in line.err and "cannot connect" in line.err


def test_unavailable_nexus_503_is_target_down(nexus, password_file, caplog):
    nexus.unavailable = True
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 0
    line = next(r for r in failures(caplog) if r.collector == "nexus")
    assert "503" in line.err and "unavailable" in line.err and "nexus.log" in line.err


def test_401_is_target_down_naming_endpoint_and_credentials(nexus, password_file, caplog):
    nexus.auth_fail = True
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 0
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_storage") == 0
    lines = {r.collector: r.err for r in failures(caplog)}
    assert "/service/rest/v1/status/check" in lines["nexus"] and "401" in lines["nexus"]
    assert "password_file" in lines["nexus"]
    assert "/service/rest/v1/blobstores" in lines["nexus_storage"]
    assert "admin123" not in caplog.text


def test_missing_field_yields_no_value_and_a_failed_collection(nexus, password_file, caplog):
    nexus.drop_field = "availableSpaceInBytes"
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 1
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_storage") == 0
    assert value(text, "regwatch_storage_available_bytes", target="nx", store="default") is None
    line = next(r for r in failures(caplog) if r.collector == "nexus_storage")
    assert "availableSpaceInBytes" in line.err and "blobstores [default]" in line.err


def test_serve_subprocess_exports_nexus(nexus, password_file, write_config, serve):
    proc = serve(write_config({"targets": [nexus_target(nexus, password_file)]}))
    proc.wait_ready()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = proc.metrics()
        if value(text, "regwatch_storage_used_bytes", target="nx", store="default") is not None:
            break
        time.sleep(0.2)
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 1
    assert value(text, "regwatch_storage_used_bytes", target="nx", store="default") == \
        nexus.blobstores[0]["totalSizeInBytes"]
    nexus.auth_fail = True
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and value(proc.metrics(), "regwatch_target_up", target="nx", kind="nexus"):
        time.sleep(0.2)
    assert value(proc.metrics(), "regwatch_target_up", target="nx", kind="nexus") == 0
    assert "status/check" in proc.log() and "admin123" not in proc.log()


def test_connector_rejecting_the_credentials_fails_only_the_docker_job(nexus, password_file, make_registry, caplog):
    # A real registry with htpasswd auth that does not know the Nexus user: its 401 is real.
    reg = make_registry(users={"someone": "else"})
    text, _ = run(nexus_target(nexus, password_file, nexus={"docker_connectors": {"docker-hosted": reg.url}}))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 1
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_docker") == 0
    assert value(text, "regwatch_registry_repositories", target="nx") is None  # not a 0
    err = next(r.err for r in failures(caplog) if r.collector == "nexus_docker")
    assert "docker-hosted" in err and "401" in err and "password_file" in err


def test_403_on_blob_stores_fails_only_the_storage_job(nexus, password_file, caplog):
    nexus.forbidden.add("/service/rest/v1/blobstores")
    text, _ = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 1
    assert value(text, "regwatch_collector_success", target="nx", collector="nexus_storage") == 0
    assert not [k for k in samples(text) if k[0].startswith("regwatch_storage")]
    err = {r.collector: r.err for r in failures(caplog)}["nexus_storage"]
    assert "target nx" in err and "/service/rest/v1/blobstores" in err and "403" in err
    assert "nx-blobstores-read" in err


def test_403_on_status_checks_keeps_target_up_and_exports_no_check(nexus, password_file, caplog):
    nexus.forbidden.add("/service/rest/v1/status/check")
    text, runner = run(nexus_target(nexus, password_file))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 1
    assert not [k for k in samples(text) if k[0] == "regwatch_nexus_status_check_healthy"]  # absent, not 0
    job = next(j for j in runner.jobs if j.collector.name == "nexus")
    runner.run_once(job)  # a second run does not repeat the log line
    lines = [r for r in caplog.records if r.getMessage() == "Nexus status checks not collected"]
    assert len(lines) == 1 and "nx-metrics-all" in lines[0].err and "403" in lines[0].err


def test_hung_nexus_is_target_down_naming_the_endpoint(nexus, password_file, caplog):
    nexus.delay = 2.0  # accepts the connection, answers after the client's 0.5 s timeout
    text, _ = run(nexus_target(nexus, password_file, timeout="0.5s"))
    assert value(text, "regwatch_target_up", target="nx", kind="nexus") == 0
    assert not [k for k in samples(text) if k[0].startswith(("regwatch_storage", "regwatch_nexus"))]
    errs = {r.collector: r.err for r in failures(caplog)}
    # The client's own timeout error (endpoint and budget), not the runner's bare "timed out after".
    where = nexus.url.split("//")[1]
    assert errs["nexus"] == (f"target nx: GET /service/rest/v1/status: {where} accepted the connection but did not "
                             "answer within 0.5s; the registry (or a proxy in front of it) is hung or overloaded")
