"""Upstream pull-rate-limit headroom (``kind: upstream``): manifest HEADs only, through Docker Hub's token auth.

The upstream is ``tests/fakes/dockerhub.py``: Docker Hub's documented pull limit (a manifest GET counts, a
HEAD does not; ``ratelimit-limit``/``ratelimit-remaining`` with ``;w=`` and ``docker-ratelimit-source`` on
manifest answers; 429 when nothing is left) in front of a real docker-registry 2.8.2 whose token realm is a
token server on another port, as auth.docker.io is for registry-1.docker.io. The test's own pulls spend the
limit, directly and through a real 2.8.2 pull-through cache; regwatch's figures must equal the fake's state,
and the fake must have seen nothing but HEADs from regwatch.

The alert test loads the generated rules once the generator has ``RegistryUpstreamRateLimitLow``; until then a
stand-in rule with the expression issue 17 asks for (``remaining / limit < 0.1``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from regwatch.budget import Budget
from regwatch.client import USER_AGENT, AuthFailed, NotFound, RateLimited, RegistryClient
from regwatch.collectors import TargetContext
from regwatch.collectors.upstream import UpstreamCollector, source_label
from regwatch.config import parse_config
from regwatch.generate import alerts
from regwatch.generate.options import AlertOptions
from tests.fakes.dockerhub import IMAGE_REPO, IMAGE_TAG, PASSWORD, PULL_AGENT, USERNAME, populated_hub
from tests.fakes.hostile import HostileServer, Reply
from tests.promserver import PrometheusServer


@pytest.mark.servers
def test_a_client_that_does_not_pace_on_the_rate_limit_never_waits_for_it():
    """A manifest HEAD does not spend Docker Hub's limit, so the client that reads the limit must not spread its
    requests over what is left of it (5 of 100: one request per 72 minutes), or it stops reading the limit just
    when it matters."""
    low = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "5;w=21600", "Docker-Content-Digest":
           "sha256:" + "a" * 64, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    server = HostileServer({("HEAD", "/v2/library/alpine/manifests/latest"): Reply(200, low)}).start()
    try:
        waits: list[float] = []
        budget = Budget(timeout=5, sleep=waits.append)
        with RegistryClient(server.url, name="hub", budget=budget, pace_ratelimit=False) as client:
            for _ in range(3):
                assert client.head_manifest("library/alpine", "latest") == "sha256:" + "a" * 64
        assert waits == []
        # The default paces: the third request would wait 4320 s, so it is refused instead.
        with RegistryClient(server.url, name="hub", budget=budget) as client:
            client.head_manifest("library/alpine", "latest")
            client.head_manifest("library/alpine", "latest")
            with pytest.raises(RateLimited):
                client.head_manifest("library/alpine", "latest")
    finally:
        server.stop()


# --------------------------------------------------------------------------- against the Docker Hub fake

@pytest.fixture
def hub(tmp_path):
    with populated_hub(tmp_path, spent=0) as stack:
        yield stack


def upstream_target(url: str, tmp_path: Path, *, password: str = PASSWORD, image: str = f"{IMAGE_REPO}:{IMAGE_TAG}",
                    **extra) -> dict:
    secret = tmp_path / "upstream-password"
    secret.write_text(password + "\n")
    return {"name": "dockerhub", "kind": "upstream", "url": url, "username": USERNAME,
            "password_file": str(secret), "upstream": {"image": image}, **extra}


def collector_for(target: dict, *, sleep=None) -> UpstreamCollector:
    config = parse_config({"targets": [target]})
    budget = Budget(timeout=5, **({"sleep": sleep} if sleep else {}))
    return UpstreamCollector(TargetContext(config.targets[0], budget=budget))


def figures(collector: UpstreamCollector) -> dict[str, tuple[dict, float]]:
    return {family.name.removeprefix("regwatch_upstream_ratelimit_"): (sample.labels, sample.value)
            for family in collector.collect() for sample in family.samples}


@pytest.mark.servers
def test_regwatch_reads_what_the_pulls_left_and_spends_none_of_it(hub, tmp_path, make_registry):
    # The test's own pulls: five straight from the upstream, two through a real 2.8.2 pull-through cache that
    # fetches with the same account. The cache resolves the tag with a HEAD each time and GETs the manifest once,
    # on its first miss: 5 + 1 pulls counted.
    hub.pull(5)
    cache = make_registry(proxy={"remoteurl": hub.hub.url, "username": USERNAME, "password": PASSWORD})
    for _ in range(2):
        resp = requests.get(f"{cache.url}/v2/{IMAGE_REPO}/manifests/{IMAGE_TAG}", timeout=10,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert resp.status_code == 200
    assert hub.hub.gets() == 6
    assert hub.hub.state(hub.source) == 100 - 6

    waits: list[float] = []
    collector = collector_for(upstream_target(hub.hub.url, tmp_path), sleep=waits.append)
    labels = {"target": "dockerhub", "source": hub.source}
    for _ in range(3):   # three collections: each reads the same state, none changes it
        assert figures(collector) == {"limit": (labels, 100.0), "remaining": (labels, 94.0),
                                      "window_seconds": (labels, 21600.0)}
    assert hub.hub.state(hub.source) == 94
    assert waits == []
    ours = [(s.method, s.path, s.status) for s in hub.hub.seen if s.user_agent == USER_AGENT]
    manifest = f"/v2/{IMAGE_REPO}/manifests/{IMAGE_TAG}"
    # Only HEADs: the first draws the registry's challenge, the token comes from the realm on the token server's
    # own port (never through the front), then one authorised HEAD per collection with the cached token.
    assert ours == [("HEAD", manifest, 401)] + [("HEAD", manifest, 200)] * 3
    assert [r["user"] for r in hub.tokens.requests] == [USERNAME] * (len(hub.tokens.requests))


@pytest.mark.servers
def test_with_the_limit_spent_regwatch_still_reads_it(hub, tmp_path):
    hub.hub.remaining[hub.source] = 2
    hub.pull(2)
    with pytest.raises(RateLimited):
        hub.pull(1)      # the next docker pull would fail: 429 TOOMANYREQUESTS
    got = figures(collector_for(upstream_target(hub.hub.url, tmp_path)))
    assert {name: value for name, (_, value) in got.items()} == {"limit": 100.0, "remaining": 0.0,
                                                                  "window_seconds": 21600.0}


@pytest.mark.servers
def test_an_account_without_a_pull_limit_exports_no_ratelimit_series(tmp_path, caplog):
    with populated_hub(tmp_path, spent=1, unlimited=frozenset({USERNAME})) as stack:
        collector = collector_for(upstream_target(stack.hub.url, tmp_path))
        with caplog.at_level(logging.INFO, logger="regwatch.collectors.upstream"):
            assert figures(collector) == {}
            assert figures(collector) == {}
    said = [r.getMessage() for r in caplog.records]
    assert said == ["the upstream's manifest answer has no rate-limit headers: pulls by this account are not limited "
                    "(no ratelimit series exported)"], "said once, not every interval"


@pytest.mark.servers
def test_an_image_the_upstream_does_not_have_names_the_key_to_fix(hub, tmp_path):
    collector = collector_for(upstream_target(hub.hub.url, tmp_path, image="library/no-such-image:1"))
    with pytest.raises(NotFound) as err:
        list(collector.collect())
    assert str(err.value) == ("target dockerhub: HEAD /v2/library/no-such-image/manifests/1 answered 404: the upstream "
                              "has no manifest library/no-such-image:1; set upstream.image to an image the account may "
                              "pull (e.g. library/alpine:latest)")


@pytest.mark.servers
def test_a_wrong_password_is_the_token_servers_refusal(hub, tmp_path):
    collector = collector_for(upstream_target(hub.hub.url, tmp_path, password="wrong"))
    with pytest.raises(AuthFailed) as err:
        list(collector.collect())
    realm = urlsplit(hub.tokens.realm)
    assert str(err.value) == (f"target dockerhub: the token server {realm.scheme}://{realm.netloc} rejected user "
                              f"{USERNAME} (from the config) (HTTP 401); check the username and password (or token)")
    assert "wrong" not in str(err.value)


# --------------------------------------------------------------------------- hostile and odd headers

@pytest.mark.parametrize(("value", "label"), [
    ("192.0.2.7", "192.0.2.7"), ("2001:DB8::1", "2001:db8::1"), ("5f0c1b3e-8c2a-5a4e-9d55-3b1f8e2f1a77",
                                                                  "5f0c1b3e-8c2a-5a4e-9d55-3b1f8e2f1a77"),
    (None, "unknown"), ("", "unknown"), ("a b", "unknown"), ("x" * 65, "unknown"), ("<script>", "unknown"),
    ("-leading-dash", "unknown"),
])
def test_the_source_label_is_an_address_an_account_id_or_unknown(value, label):
    assert source_label(value) == label


def hostile_upstream(headers: dict[str, str], status: int = 200) -> HostileServer:
    return HostileServer({("HEAD", f"/v2/{IMAGE_REPO}/manifests/{IMAGE_TAG}"): Reply(status, headers)}).start()


@pytest.mark.servers
def test_figures_that_are_not_counts_are_left_out(tmp_path):
    server = hostile_upstream({"ratelimit-limit": "inf", "ratelimit-remaining": "nan;w=21600",
                               "docker-ratelimit-source": "198.51.100.4\x7f"})
    try:
        got = figures(collector_for(upstream_target(server.url, tmp_path)))
    finally:
        server.stop()
    assert got == {"window_seconds": ({"target": "dockerhub", "source": "unknown"}, 21600.0)}


@pytest.mark.servers
def test_a_429_on_the_head_without_figures_says_what_to_do(tmp_path):
    server = hostile_upstream({"Retry-After": "3600"}, status=429)
    try:
        with pytest.raises(RateLimited) as err:
            list(collector_for(upstream_target(server.url, tmp_path)).collect())
    finally:
        server.stop()
    assert str(err.value) == (f"target dockerhub: HEAD /v2/{IMAGE_REPO}/manifests/{IMAGE_TAG} answered 429 without "
                              "rate-limit headers: the upstream limits regwatch's own requests; raise the target's "
                              "interval")


@pytest.mark.servers
def test_every_upstream_series_has_a_value_in_the_populated_stack(tmp_path):
    with populated_hub(tmp_path) as stack:
        names = {family.name for family in collector_for(upstream_target(stack.hub.url, tmp_path)).collect()
                 if family.samples}
    assert names == {"regwatch_upstream_ratelimit_limit", "regwatch_upstream_ratelimit_remaining",
                     "regwatch_upstream_ratelimit_window_seconds"}


@pytest.mark.servers
def test_a_429_on_the_head_with_figures_exports_them(tmp_path):
    server = hostile_upstream({"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600",
                               "docker-ratelimit-source": "203.0.113.9", "Retry-After": "3600"}, status=429)
    try:
        got = figures(collector_for(upstream_target(server.url, tmp_path)))
    finally:
        server.stop()
    labels = {"target": "dockerhub", "source": "203.0.113.9"}
    assert got == {"limit": (labels, 100.0), "remaining": (labels, 0.0), "window_seconds": (labels, 21600.0)}


# --------------------------------------------------------------------------- the alert in a real Prometheus

ALERT = "RegistryUpstreamRateLimitLow"
# Until the rules generator has the alert, the test loads this rule, with the expression issue 17 asks for.
STANDIN_RULE = {"groups": [{"name": "regwatch-upstream", "rules": [{
    "alert": ALERT, "expr": "regwatch_upstream_ratelimit_remaining / regwatch_upstream_ratelimit_limit < 0.1",
    "for": "2s", "labels": {"severity": "warning"}}]}]}


def rules_file(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "upstream.rules.yml"
    if ALERT in alerts.alert_names():
        path.write_text(alerts.dump(alerts.render_rules(AlertOptions(for_durations={ALERT: "2s"}))))
    else:
        path.write_text(yaml.safe_dump(STANDIN_RULE))
    return path


def firing(prom: PrometheusServer) -> list[dict]:
    body = requests.get(prom.url + "/api/v1/alerts", timeout=5).json()
    return [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]


@pytest.mark.servers
@pytest.mark.slow
def test_the_alert_fires_in_prometheus_when_the_pulls_leave_under_10_percent(tmp_path, write_config, serve):
    with populated_hub(tmp_path, limit=100, spent=0) as stack:
        config = write_config({"targets": [upstream_target(stack.hub.url, tmp_path, interval="1s")]})
        proc = serve(config)
        proc.wait_ready()
        with PrometheusServer(tmp_path / "prom", [proc.url.removeprefix("http://")],
                              rule_files=[str(rules_file(tmp_path / "rules"))]) as prom:
            selector = f'{{target="dockerhub",source="{stack.source}"}}'
            prom.wait_for(f"regwatch_upstream_ratelimit_remaining{selector} == 100")
            prom.wait_for('regwatch_target_up{target="dockerhub",kind="upstream"} == 1')
            stack.pull(90)                  # 10 left: exactly 10 %, not under it
            prom.wait_for(f"regwatch_upstream_ratelimit_remaining{selector} == 10")
            time.sleep(4)                   # longer than for:, so no alert is not just "pending"
            assert firing(prom) == []
            stack.pull(1)                   # 9 left: under 10 %
            deadline = time.monotonic() + 45
            fired: list[dict] = []
            while time.monotonic() < deadline and not fired:
                fired = firing(prom)
                time.sleep(0.5)
            assert fired, f"{ALERT} never fired:\n{proc.log()[-2000:]}"
            remaining = stack.hub.state(stack.source)
            assert remaining == 9
            assert float(fired[0]["value"]) == pytest.approx(remaining / stack.hub.limit)
            assert (fired[0]["labels"]["target"], fired[0]["labels"]["source"]) == ("dockerhub", stack.source)
        methods = {s.method for s in stack.hub.seen if s.user_agent == USER_AGENT}
        assert methods == {"HEAD"}, "regwatch sent something other than a HEAD to the upstream"
        assert stack.hub.gets() == 91 == stack.hub.gets(user_agent=PULL_AGENT)
