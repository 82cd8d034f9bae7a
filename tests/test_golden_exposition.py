"""The whole exposition of one serve that watches every kind at once, against a golden file (as
node_exporter keeps collector/fixtures/e2e-output.txt): every change to what regwatch exports is a
reviewable diff, no series appears twice, and ``promtool check metrics`` is clean.

The peers are real where they can run here (docker-registry for Distribution, a pull-through cache, the
registry's own log, a volume, a drill through real registries) and the fakes elsewhere: Harbor
(tests/fakes/harbor.py, from Harbor's swagger), Nexus and Artifactory (tests/fakes/nexus.py,
tests/fakes/artifactory.py, from their REST API docs), a Distribution 3 pull-through cache
(tests/fakes/distribution3.py, from v3.1's source) and a Docker Hub-style upstream with its rate limit
(tests/fakes/dockerhub.py, in front of a real token-auth registry).

Rewrite the golden file after an intended change with ``REGWATCH_UPDATE_GOLDEN=1 pytest
tests/test_golden_exposition.py`` and review its diff. Values that depend on the machine or the moment
(timestamps, durations, sizes, ports, paths) are normalised; names, labels and the set of series are not.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from regwatch.client import RegistryClient
from regwatch.collectors import build_jobs
from regwatch.config import parse_config
from regwatch.images import build_image, push_image
from regwatch.runner import Runner
from tests.conftest import regwatch_cmd
from tests.fakes.artifactory import FakeArtifactory
from tests.fakes.distribution3 import populated_cache
from tests.fakes.dockerhub import IMAGE_REPO, IMAGE_TAG, PASSWORD, USERNAME, populated_hub
from tests.fakes.harbor import FakeHarbor
from tests.fakes.nexus import FakeNexus

GOLDEN = Path(__file__).parent / "golden" / "exposition.txt"
# Values that are the same on every run: counts the test made. Everything else is normalised to V.
STABLE_VALUES = re.compile(r"^regwatch_(registry_(repositories|tags)|target_up|collector_success|"
                           r"auth_(requests|failures|challenges)_total|proxy_cache_\w+_total|harbor_\w+_(projects|"
                           r"repositories)|drill_success|drill_images|drill_coverage_ratio|probe_success|"
                           r"config_last_reload_successful|build_info|proxy_cache_info|upstream_ratelimit_(limit|remaining))\b")


def normalise(text: str, tmp: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if line.startswith(("# HELP process_", "# TYPE process_", "process_", "# HELP python_", "# TYPE python_",
                            "python_")):
            continue
        line = line.replace(tmp, "TMP")
        line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
        line = re.sub(r'(python_version|version)="[^"]*"', r'\1="X"', line)
        if not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if not STABLE_VALUES.match(name):
                value = "V"
            line = f"{name} {value}"
        out.append(line)
    return out


@pytest.fixture
def everything(tmp_path, make_registry):
    """A config naming one of every kind, each peer populated so that every collector has something to say."""
    registry = make_registry(users={"alice": "alice-secret"})
    client = RegistryClient(registry.url, username="alice", password="alice-secret")
    image = build_image([{"app": b"golden app layer"}])
    push_image(client, "lib/app", "1", image)
    push_image(client, "lib/app", "2", image)
    push_image(client, "team/tool", "1", build_image([{"tool": b"golden tool layer"}]))
    upstream = make_registry()
    push_image(RegistryClient(upstream.url), "lib/cached", "1", image)
    mirror = make_registry(proxy={"remoteurl": upstream.url})
    mirror_client = RegistryClient(mirror.url)
    for _ in range(2):  # a miss, then a hit
        manifest = mirror_client.get_manifest("lib/cached", "1")
        for layer in [image.config, *image.layers]:
            with mirror_client.get_blob("lib/cached", layer.digest) as resp:
                resp.content  # noqa: B018 - read it all
    assert manifest.digest == image.digest
    scratch = make_registry()
    store = tmp_path / "store"
    secret = tmp_path / "alice"
    secret.write_text("alice-secret")
    drill = subprocess.run(regwatch_cmd("drill", "--source", registry.url, "--dest", scratch.url, "--store",
                                        str(store)), capture_output=True, text=True, timeout=120,
                           env={**os.environ, "REGWATCH_USERNAME": "alice", "REGWATCH_PASSWORD": "alice-secret"})
    assert drill.returncode == 0, drill.stdout + drill.stderr
    cache3 = populated_cache(upstream.url)
    (tmp_path / "hub").mkdir()
    hub_stack = populated_hub(tmp_path / "hub")
    hub = hub_stack.__enter__()
    (tmp_path / "hub-pw").write_text(PASSWORD)
    harbor = FakeHarbor(projects=2, repositories=3).start()
    nexus = FakeNexus().start()
    jfrog = FakeArtifactory().start()
    (tmp_path / "harbor-pw").write_text(harbor.accounts["admin"][0])
    (tmp_path / "nexus-pw").write_text("admin123")
    (tmp_path / "jfrog-token").write_text("tok-123")
    config = {
        "targets": [
            {"name": "hub", "kind": "distribution", "url": registry.url, "debug_url": registry.debug_url,
             "username": "alice", "password_file": str(secret),
             "probes": [{"image": "lib/app:1"}, {"image": "team/tool:1", "mode": "manifest"}]},
            {"name": "mirror", "kind": "distribution", "url": mirror.url, "debug_url": mirror.debug_url},
            {"name": "harbor", "kind": "harbor", "url": harbor.url, "username": "admin",
             "password_file": str(tmp_path / "harbor-pw")},
            {"name": "nexus", "kind": "nexus", "url": nexus.url, "username": "admin",
             "password_file": str(tmp_path / "nexus-pw")},
            {"name": "jfrog", "kind": "artifactory", "url": jfrog.url + "/artifactory",
             "token_file": str(tmp_path / "jfrog-token")},
            {"name": "mirror3", "kind": "distribution", "url": cache3.url, "debug_url": cache3.debug_url},
            {"name": "dockerhub", "kind": "upstream", "url": hub.hub.url, "username": USERNAME,
             "password_file": str(tmp_path / "hub-pw"), "upstream": {"image": f"{IMAGE_REPO}:{IMAGE_TAG}"}},
        ],
        "storage": [{"name": "registry-data", "path": str(tmp_path)}],
        "auth_logs": [{"name": "registry-log", "path": str(registry.log_path), "format": "distribution",
                       "start_at": "beginning"}],
        "drill": {"report_dir": str(store)},
    }
    yield config
    for fake in (harbor, nexus, jfrog, cache3):
        fake.stop()
    hub_stack.__exit__(None, None, None)


def collect_all(config: dict) -> str:
    jobs = build_jobs(parse_config(config), sleep=lambda seconds: None)
    runner = Runner(jobs)
    primaries = [job for job in jobs if job.kind]
    for group in (primaries, [job for job in jobs if not job.kind]):
        threads = [threading.Thread(target=runner.run_once, args=(job,)) for job in group]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    failed = {(s["target"], s["collector"]): s["last_error"] for s in runner.status() if not s["success"]}
    assert failed == {}
    return runner.exposition().decode()


def test_every_kind_at_once_matches_the_golden_file(everything, tmp_path):
    text = collect_all(everything)
    samples = Counter((s.name, tuple(sorted(s.labels.items())))
                      for family in text_string_to_metric_families(text) for s in family.samples)
    assert [key for key, count in samples.items() if count > 1] == []
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.stdout + check.stderr == ""
    assert check.returncode == 0
    lines = normalise(text, str(tmp_path))
    if os.environ.get("REGWATCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("\n".join(lines) + "\n")
    assert lines == GOLDEN.read_text().splitlines()
