"""Pull-latency probes against real registries: what a probe pulls, how each failure is reported, and
that the probe after a failure still runs.

Faults are made for real: a tag that is not there, a wrong password, a token server that is
stopped, and a TCP proxy (tests/probeproxy.py) that cuts or corrupts blob bodies between the
real registry and the probe.
"""

from __future__ import annotations

import os

import pytest

from regwatch.credentials import Credentials
from regwatch.client import RegistryClient
from regwatch.collectors import build_jobs
from regwatch.collectors.probes import ProbeCollector
from regwatch.config import parse_config
from regwatch.images import build_image, build_index, push_image, push_index
from regwatch.probes import Prober, ProbeSpec
from regwatch.runner import wait_until
from tests.probe_support import make_collector, run, value
from tests.probeproxy import DelayProxy
from tests.tokenserver import TokenServer


@pytest.fixture
def two_platforms(registry, registry_client):
    """lib/app:1 is an index over linux/arm64 and linux/amd64 images whose bytes the test knows."""
    amd64 = build_image([{"bin": os.urandom(300_000)}, {"etc/os": b"amd64\n"}])
    arm64 = build_image([{"bin": os.urandom(1000)}], architecture="arm64")
    index = build_index([arm64, amd64])
    push_index(registry_client, "lib/app", "1", index)
    return index, amd64, arm64


def test_full_probe_reads_every_byte_of_the_chosen_platform(registry, two_platforms):
    index, amd64, arm64 = two_platforms
    prober = Prober()
    spec = dict(credentials=Credentials(username="alice", password="alice-secret"))
    result = prober.probe(ProbeSpec(registry.url, "lib/app", "1", **spec))
    assert result.success, result.message
    assert result.manifest_digest == amd64.digest
    # Everything a pull reads: the index, the platform's manifest, its config and layers (no more, no less).
    assert result.bytes_pulled == len(index.manifest) + amd64.size
    assert result.image_bytes == amd64.size - len(amd64.manifest)
    assert result.layers == 2
    # One request each for ping, index, manifest, config and both layers; cold: one connection each.
    assert result.requests == result.connections == 6
    assert all(result.phases[p] > 0 for p in ("connect", "ping", "manifest", "config", "blob_first_byte", "blob"))
    assert result.phases["tls"] == 0 and result.phases["auth"] == 0  # plain http, Basic auth: no token fetch

    arm = prober.probe(ProbeSpec(registry.url, "lib/app", "1", platform="linux/arm64", **spec))
    assert arm.success and arm.manifest_digest == arm64.digest
    assert arm.bytes_pulled == len(index.manifest) + arm64.size

    missing = prober.probe(ProbeSpec(registry.url, "lib/app", "1", platform="linux/s390x", **spec))
    assert (missing.success, missing.reason) == (False, "platform_not_found")
    assert "linux/arm64" in missing.message and "linux/amd64" in missing.message


def test_manifest_mode_pulls_no_blob_and_byte_limit_stops_a_big_image(registry, two_platforms):
    index, amd64, _ = two_platforms
    spec = dict(credentials=Credentials(username="alice", password="alice-secret"))
    cheap = Prober().probe(ProbeSpec(registry.url, "lib/app", "1", mode="manifest", **spec))
    assert cheap.success and cheap.manifest_digest == amd64.digest
    assert cheap.bytes_pulled == len(index.manifest) + len(amd64.manifest)
    assert cheap.phases["blob"] == cheap.phases["config"] == 0

    limited = Prober().probe(ProbeSpec(registry.url, "lib/app", "1", max_bytes=100_000, **spec))
    assert (limited.success, limited.reason, limited.failed_phase) == (False, "byte_limit", "manifest")
    assert limited.bytes_pulled == cheap.bytes_pulled  # refused before the first blob byte
    assert "max_bytes" in limited.message


def test_missing_tag_fails_with_not_found_and_the_next_probe_succeeds(tmp_path, registry, registry_client):
    collector = make_collector(tmp_path, registry.url, "lib/late:1")
    first = run(collector)
    assert value(first, "regwatch_probe_success", image="lib/late:1") == 0
    assert value(first, "regwatch_probe_failures_total", image="lib/late:1", reason="not_found") == 1
    assert value(first, "regwatch_probe_failed_phase", image="lib/late:1", phase="manifest") == 1
    assert value(first, "regwatch_probe_pull_duration_seconds_count", image="lib/late:1") == 0

    push_image(registry_client, "lib/late", "1", build_image([{"f": b"now here"}]))
    second = run(collector)
    assert value(second, "regwatch_probe_success", image="lib/late:1") == 1
    assert value(second, "regwatch_probe_failures_total", image="lib/late:1", reason="not_found") == 1
    assert value(second, "regwatch_probe_failed_phase", image="lib/late:1", phase="manifest") is None
    assert value(second, "regwatch_probe_pull_duration_seconds_count", image="lib/late:1") == 1
    assert value(second, "regwatch_probe_pull_duration_seconds_sum", image="lib/late:1") == \
        pytest.approx(collector.last.total_seconds)


def test_wrong_password_fails_with_auth(tmp_path, registry, registry_client):
    push_image(registry_client, "lib/app", "1", build_image([{"f": b"x"}]))
    collector = make_collector(tmp_path, registry.url, "lib/app:1", password="not-alices")
    for run_number in (1, 2):
        exposed = run(collector)
        assert value(exposed, "regwatch_probe_success", image="lib/app:1") == 0
        assert value(exposed, "regwatch_probe_failures_total", image="lib/app:1", reason="auth") == run_number
    assert "not-alices" not in collector.last.message


@pytest.fixture
def token_registry(tmp_path, make_registry):
    tokens = TokenServer(tmp_path, {"alice": "alice-secret"}).start()
    reg = make_registry(token=tokens.registry_auth())
    yield reg, tokens
    tokens.stop()


def test_token_auth_is_its_own_phase_and_a_stopped_token_server_is_auth_unreachable(tmp_path, token_registry):
    reg, tokens = token_registry
    client = RegistryClient(reg.url, username="alice", password="alice-secret")
    push_image(client, "lib/app", "1", build_image([{"f": b"token"}]))
    collector = make_collector(tmp_path, reg.url, "lib/app:1")
    ok = run(collector)
    assert value(ok, "regwatch_probe_success", image="lib/app:1") == 1
    assert value(ok, "regwatch_probe_phase_duration_seconds", image="lib/app:1", phase="auth") > 0
    # The token server saw exactly the pull scope a container runtime asks for.
    assert tokens.requests[-1]["scope"] == ["repository:lib/app:pull"] and tokens.requests[-1]["user"] == "alice"

    wrong = make_collector(tmp_path, reg.url, "lib/app:1", password="wrong")
    failed = run(wrong)
    assert value(failed, "regwatch_probe_failures_total", image="lib/app:1", reason="auth") == 1
    assert value(failed, "regwatch_probe_failed_phase", image="lib/app:1", phase="auth") == 1

    tokens.stop()
    for run_number in (1, 2):
        down = run(collector)
        assert value(down, "regwatch_probe_success", image="lib/app:1") == 0
        assert value(down, "regwatch_probe_failures_total", image="lib/app:1", reason="auth_unreachable") == run_number
        assert value(down, "regwatch_probe_failed_phase", image="lib/app:1", phase="auth") == 1
    assert "token server" in collector.last.message


@pytest.mark.parametrize("fault, reason", [("truncate", "truncated"), ("corrupt", "digest_mismatch")])
def test_a_cut_or_corrupted_blob_fails_the_probe_and_the_next_clean_pull_succeeds(
        tmp_path, registry, registry_client, fault, reason):
    layer = os.urandom(200_000)
    image = build_image([{"data": layer}])
    push_image(registry_client, "lib/app", "1", image)
    proxy = DelayProxy(registry.port, fault=fault)
    try:
        collector = make_collector(tmp_path, proxy.url, "lib/app:1")
        broken = run(collector)
        assert value(broken, "regwatch_probe_success", image="lib/app:1") == 0
        assert value(broken, "regwatch_probe_failures_total", image="lib/app:1", reason=reason) == 1
        # The config blob is the first blob the proxy damages.
        assert value(broken, "regwatch_probe_failed_phase", image="lib/app:1", phase="config") == 1
        assert proxy.requests["blob"] == 1
        proxy.fault = None
        clean = run(collector)
        assert value(clean, "regwatch_probe_success", image="lib/app:1") == 1
        assert value(clean, "regwatch_probe_failures_total", image="lib/app:1", reason=reason) == 1
        pulled = value(clean, "regwatch_probe_pulled_bytes_total", image="lib/app:1")
        assert pulled >= len(image.manifest) + len(image.config.data) + len(image.layers[0].data)
    finally:
        proxy.stop()


@pytest.mark.parametrize("fault, reason", [("truncate", "truncated"), ("corrupt", "digest_mismatch")])
def test_a_damaged_layer_is_caught_in_the_blob_phase(registry, registry_client, fault, reason):
    image = build_image([{"data": os.urandom(100_000)}])
    push_image(registry_client, "lib/app", "1", image)
    proxy = DelayProxy(registry.port, fault=fault, fault_skip=1)  # the config passes, the layer is damaged
    try:
        alice = Credentials(username="alice", password="alice-secret")
        result = Prober().probe(ProbeSpec(proxy.url, "lib/app", "1", credentials=alice))
        assert (result.success, result.reason, result.failed_phase) == (False, reason, "blob")
        assert proxy.requests["blob"] == 2
    finally:
        proxy.stop()


def test_an_unreachable_registry_is_connect_not_a_crash(tmp_path):
    from regwatch.localregistry import free_port

    collector = make_collector(tmp_path, f"http://127.0.0.1:{free_port()}", "lib/app:1", password=None)
    exposed = run(collector)
    assert value(exposed, "regwatch_probe_success", image="lib/app:1") == 0
    assert value(exposed, "regwatch_probe_failures_total", image="lib/app:1", reason="connect") == 1
    assert value(exposed, "regwatch_probe_failed_phase", image="lib/app:1", phase="ping") == 1


def test_the_same_image_direct_and_through_a_pull_through_cache(make_registry):
    upstream = make_registry()
    image = build_image([{"f": os.urandom(30_000)}])
    push_image(RegistryClient(upstream.url), "lib/app", "1", image)
    mirror = make_registry(proxy={"remoteurl": upstream.url})
    config = parse_config({"targets": [{"name": "hub", "kind": "distribution", "url": upstream.url, "probes": [
        {"image": "lib/app:1"}, {"image": "lib/app:1", "mirror": mirror.url}]}]})
    jobs = [job for job in build_jobs(config) if isinstance(job.collector, ProbeCollector)]
    # Two jobs of one collector, told apart by their labels on the self-metrics (and their keys).
    assert [job.labels for job in jobs] == [{"image": "lib/app:1"}, {"image": "lib/app:1", "endpoint": mirror.url}]
    assert len({job.key for job in jobs}) == 2
    direct, via_mirror = (job.collector for job in jobs)
    exposed = run(via_mirror)
    labels = {"image": "lib/app:1", "endpoint": mirror.url}
    assert value(exposed, "regwatch_probe_success", **labels) == 1, via_mirror.last.message
    assert value(exposed, "regwatch_probe_pulled_bytes_total", **labels) == image.size
    assert via_mirror.last.manifest_digest == image.digest
    # The mirror's own access log shows the layer going out: the pull really went through it.
    # (The registry writes the access-log line after the response, so give it a moment.)
    line = f"GET /v2/lib/app/blobs/{image.layers[0].digest}"
    assert wait_until(lambda: line in mirror.log_path.read_text(), 5), mirror.log_path.read_text()[-2000:]
    assert value(run(direct), "regwatch_probe_success", image="lib/app:1") == 1


def test_reused_connections_are_opt_in_and_skip_connection_set_up(registry, registry_client):
    push_image(registry_client, "lib/app", "1", build_image([{"f": b"a"}, {"g": b"b"}]))
    spec = ProbeSpec(registry.url, "lib/app", "1", credentials=Credentials(username="alice", password="alice-secret"))
    cold = Prober()
    assert [cold.probe(spec).connections for _ in range(2)] == [5, 5]  # ping, manifest, config, 2 layers
    warm = Prober(reuse_connections=True)
    first, second = warm.probe(spec), warm.probe(spec)
    warm.close()
    assert first.success and second.success
    assert (first.connections, second.connections) == (1, 0)
    assert second.phases["connect"] == 0 and second.requests == 5
