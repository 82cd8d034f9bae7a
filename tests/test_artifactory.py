"""kind: artifactory targets against a fake Artifactory REST API (tests/fakes/artifactory.py says
which documented payloads it follows), whose /api/docker/<repo>/v2/ paths reverse-proxy to REAL
docker-registry processes.
"""

from __future__ import annotations

import time

import pytest

from regwatch.client import RegistryClient
from regwatch.collectors import build_jobs, factories
from regwatch.collectors.artifactory import parse_size
from regwatch.config import parse_config
from regwatch.images import build_image, push_image
from regwatch.runner import Runner
from tests.fakes.artifactory import FakeArtifactory
from tests.helpers import samples, value

GIB, MIB = 1024 ** 3, 1024 ** 2


@pytest.fixture
def secrets(tmp_path):
    paths = {}
    for kind, text in (("token", "tok-123"), ("api_key", "key-456"), ("password", "password")):
        paths[kind] = tmp_path / kind
        paths[kind].write_text(text + "\n")
    return paths


@pytest.fixture
def jfrog():
    fake = FakeArtifactory().start()
    yield fake
    fake.stop()


def art_target(fake, secrets, cred: str = "token", **extra) -> dict:
    auth = {"token": {"token_file": str(secrets["token"])},
            "api_key": {"api_key_file": str(secrets["api_key"])},
            "basic": {"username": "admin", "password_file": str(secrets["password"])}}[cred]
    return {"name": "jf", "kind": "artifactory", "url": fake.url + "/artifactory", "interval": "1s",
            "timeout": "2s", **auth, **extra}


def run(config: dict) -> str:
    cfg = parse_config({"targets": [config]})
    jobs = build_jobs(cfg, {name: name == "artifactory" for name in factories()}, sleep=lambda seconds: None)
    runner = Runner(jobs)
    for job in jobs:
        runner.run_once(job)
    return runner.exposition().decode()


def failed(caplog) -> dict[str, str]:
    return {r.collector: r.err for r in caplog.records if r.getMessage() == "collector failed"}


def test_artifactory_targets_get_only_the_artifactory_collectors(jfrog, secrets):
    cfg = parse_config({"targets": [art_target(jfrog, secrets)]})
    assert sorted(job.collector.name for job in build_jobs(cfg)) == \
        ["artifactory", "artifactory_docker", "artifactory_storage"]


@pytest.mark.parametrize("text,expected", [
    ("204.28 GB", 204.28 * GIB), ("32.22 GB (15.77%)", 32.22 * GIB), ("0 bytes", 0.0), ("1,536 KB", 1536 * 1024),
    ("34.46 MB", 34.46 * MIB), ("12 parsecs", None), ("", None), (None, None), ("GB", None)])
def test_parse_size(text, expected):
    assert parse_size(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("cred", ["token", "api_key", "basic"])
def test_storage_equals_the_payload(jfrog, secrets, cred):
    text = run(art_target(jfrog, secrets, cred))
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 1
    assert value(text, "regwatch_collector_success", target="jf", collector="artifactory_storage") == 1
    store = {"target": "jf", "store": "filestore"}
    # The documented sample: 204.28 GB total, 32.22 GB used, 172.06 GB free (binary units).
    assert value(text, "regwatch_storage_capacity_bytes", **store) == pytest.approx(204.28 * GIB)
    assert value(text, "regwatch_storage_used_bytes", **store) == pytest.approx(32.22 * GIB)
    assert value(text, "regwatch_storage_available_bytes", **store) == pytest.approx(172.06 * GIB)
    # The payload's own "(15.77%)" agrees to its printed precision.
    assert value(text, "regwatch_storage_used_ratio", **store) == pytest.approx(0.1577, abs=5e-5)
    assert value(text, "regwatch_artifactory_binaries", target="jf") == 125726
    assert value(text, "regwatch_artifactory_binaries_bytes", target="jf") == pytest.approx(3.48 * GIB)
    assert value(text, "regwatch_artifactory_artifacts_bytes", target="jf") == pytest.approx(59.77 * GIB)
    repos = {k[1]: v for k, v in samples(text).items() if k[0] == "regwatch_artifactory_repository_used_bytes"}
    assert repos == {(("repository", "docker-local"), ("target", "jf")): 36138261,
                     (("repository", "docker-remote"), ("target", "jf")): pytest.approx(1.5 * GIB)}
    assert value(text, "regwatch_artifactory_repository_files", target="jf", repository="docker-local") == 11
    assert value(text, "regwatch_artifactory_repository_files", target="jf", repository="docker-remote") == 5
    assert value(text, "regwatch_artifactory_repository_files", target="jf", repository="libs-release") is None


@pytest.mark.parametrize("cred", ["api_key", "basic"])
def test_docker_repositories_count_what_the_real_registries_hold(jfrog, secrets, make_registry, cred):
    regs = {"docker-local": make_registry(), "docker-dev": make_registry()}
    jfrog.docker.update({key: reg.url for key, reg in regs.items()})
    pushed_repos = pushed_tags = 0
    for i, reg in enumerate(regs.values()):
        with RegistryClient(reg.url) as client:
            for r in range(3 + i):
                image = build_image([{f"f{i}{r}": f"{i}-{r}".encode()}])
                for t in range(r + 1):
                    push_image(client, f"app{r}", f"v{t}", image)
                    pushed_tags += 1
                pushed_repos += 1
    text = run(art_target(jfrog, secrets, cred, page_size=2))  # page_size 2: pagination through the path
    assert value(text, "regwatch_collector_success", target="jf", collector="artifactory_docker") == 1
    assert value(text, "regwatch_registry_repositories", target="jf") == pushed_repos
    assert value(text, "regwatch_registry_tags", target="jf") == pushed_tags
    assert any("/artifactory/api/docker/docker-dev/v2/_catalog" in p and "last=" in p for p in jfrog.requests)


def test_unreachable_is_target_down_with_a_log_line(jfrog, secrets, caplog):
    jfrog.stop()
    text = run(art_target(jfrog, secrets))
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 0
    assert not [k for k in samples(text) if k[0].startswith(("regwatch_storage", "regwatch_artifactory"))]
    err = failed(caplog)["artifactory"]
    assert "target jf" in err and "/artifactory/api/system/ping" in err and "cannot connect" in err


@pytest.mark.parametrize("cred,hint", [("token", "token_file"), ("api_key", "api_key_file"),
                                       ("basic", "password_file")])
def test_401_is_target_down_naming_endpoint_and_credential(jfrog, secrets, caplog, cred, hint):
    jfrog.auth_fail = True
    text = run(art_target(jfrog, secrets, cred))
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 0
    assert value(text, "regwatch_collector_success", target="jf", collector="artifactory_storage") == 0
    errs = failed(caplog)
    assert "/api/system/ping" in errs["artifactory"] and "401" in errs["artifactory"] and hint in errs["artifactory"]
    assert "/api/storageinfo" in errs["artifactory_storage"]
    for secret in ("tok-123", "key-456", "password\n"):
        assert secret not in caplog.text


def test_missing_field_yields_no_value_and_a_failed_collection(jfrog, secrets, caplog):
    jfrog.drop_field = "freeSpace"
    text = run(art_target(jfrog, secrets))
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 1
    assert value(text, "regwatch_collector_success", target="jf", collector="artifactory_storage") == 0
    assert value(text, "regwatch_storage_available_bytes", target="jf", store="filestore") is None
    err = failed(caplog)["artifactory_storage"]
    assert "fileStoreSummary: freeSpace" in err and "target jf" in err


def test_unparseable_size_is_no_value_not_zero(jfrog, secrets, caplog):
    jfrog.storageinfo["fileStoreSummary"]["usedSpace"] = "lots"
    text = run(art_target(jfrog, secrets))
    assert value(text, "regwatch_storage_used_bytes", target="jf", store="filestore") is None
    assert "unparseable 'lots'" in failed(caplog)["artifactory_storage"]


def test_serve_subprocess_exports_artifactory(jfrog, secrets, make_registry, write_config, serve):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        push_image(client, "svc", "1.0", build_image([{"a": b"a"}]))
    jfrog.docker["docker-local"] = reg.url
    proc = serve(write_config({"targets": [art_target(jfrog, secrets, "token")]}))
    proc.wait_ready()
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = proc.metrics()
        if value(text, "regwatch_registry_tags", target="jf") is not None and \
                value(text, "regwatch_storage_used_bytes", target="jf", store="filestore") is not None:
            break
        time.sleep(0.2)
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 1
    assert value(text, "regwatch_registry_repositories", target="jf") == 1
    assert value(text, "regwatch_registry_tags", target="jf") == 1
    assert value(text, "regwatch_storage_used_bytes", target="jf", store="filestore") == pytest.approx(32.22 * GIB)
    assert "tok-123" not in proc.log() and "tok-123" not in text


def test_non_admin_403_on_storageinfo_fails_only_the_storage_job(jfrog, secrets, caplog):
    secrets["password"].write_text("reader-pw\n")
    config = art_target(jfrog, secrets, "basic")
    config["username"] = "reader"
    text = run(config)
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 1
    assert value(text, "regwatch_collector_success", target="jf", collector="artifactory_storage") == 0
    assert not [k for k in samples(text) if k[0].startswith(("regwatch_storage", "regwatch_artifactory"))]
    err = failed(caplog)["artifactory_storage"]
    assert "target jf" in err and "/api/storageinfo" in err and "403" in err and "admin" in err
    assert "reader-pw" not in caplog.text


def test_hung_artifactory_is_target_down_naming_the_endpoint(jfrog, secrets, caplog):
    jfrog.delay = 2.0
    text = run(art_target(jfrog, secrets, timeout="0.5s"))
    assert value(text, "regwatch_target_up", target="jf", kind="artifactory") == 0
    err = failed(caplog)["artifactory"]
    where = jfrog.url.split("//")[1].split("/")[0]
    assert err == (f"target jf: GET /artifactory/api/system/ping: {where} accepted the connection "
                   "but did not answer within 0.5s; the registry (or a proxy in front of it) is hung or overloaded")
