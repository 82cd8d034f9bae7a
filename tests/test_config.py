"""The config contract: every mistake names its key path, all problems at once, exit 2, no secret shown."""

from __future__ import annotations

import pytest
from regwatch.config import DISTRIBUTION_MAX_PAGE, ConfigError, TargetConfig, load_config, parse_config, parse_duration

GOOD = {
    "listen": "127.0.0.1:9732",
    "targets": [{"name": "hub", "kind": "distribution", "url": "http://127.0.0.1:5000", "interval": "30s"}],
    "storage": [{"name": "data", "path": "/tmp"}],
}


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(p) for p in info.value.problems]


def with_target(**fields) -> dict:
    target = {"name": "hub", "kind": "distribution", "url": "http://127.0.0.1:5000", **fields}
    return {"targets": [target]}


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"targets": [{"name": "hub", "kind": "distribution", "url": "http://x", "colour": "red"}]},
         "targets[0].colour: unknown key"),
        ({"tragets": []}, "tragets: unknown key; did you mean targets?"),
        (with_target(interval=30), "targets[0].interval: duration 30 needs a unit, e.g. 30s"),
        (with_target(interval="30 seconds"),
         "targets[0].interval: '30 seconds' is not a duration; use a number and a unit (ms, s, m, h, d), e.g. 30s"),
        (with_target(timeout="0s"), "targets[0].timeout: duration must be greater than zero"),
        (with_target(kind="quay"), "targets[0].kind: must be distribution, harbor, nexus, artifactory or upstream"),
        (with_target(url="ftp://x"),
         "targets[0].url: must be an http:// or https:// URL with a host, e.g. https://registry.example.com"),
        (with_target(url="https://bob:hunter2@registry"),
         "targets[0].url: must not contain credentials; use username with password_file or password_env"),
        (with_target(page_size="many"), "targets[0].page_size: must be a whole number, got text"),
        (with_target(password="hunter2"),
         "targets[0].password: literal secrets are not allowed; use password_file or password_env"),
        (with_target(tls={"insecure_skip_verify": "perhaps"}),
         "targets[0].tls.insecure_skip_verify: must be true or false, got text"),
        ({"targets": [{"kind": "distribution", "url": "http://x"}]}, "targets[0].name: required key is missing"),
        ({"storage": [{"name": "d", "path": "/x", "interval": "soon"}]},
         "storage[0].interval: 'soon' is not a duration; use a number and a unit (ms, s, m, h, d), e.g. 30s"),
        ({"listen": "nowhere"}, "listen: must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732"),
        ({"targets": {"name": "hub"}}, "targets: must be a list (one '- ' entry per item), got a mapping"),
        ({"auth_logs": [{"name": "reg"}]}, "auth_logs[0]: set exactly one of path and elasticsearch"),
    ],
)
def test_each_mistake_names_its_key(data, expected):
    assert problems_of(data) == [expected]


def test_duplicate_target_names():
    data = {"targets": [dict(GOOD["targets"][0]), dict(GOOD["targets"][0])]}
    assert problems_of(data) == ["targets[1].name: duplicate name 'hub' (also targets[0])"]


def test_unreadable_secret_file(tmp_path):
    missing = tmp_path / "nope"
    problems = problems_of(with_target(username="u", password_file=str(missing)))
    assert problems == [f"targets[0].password_file: cannot read secret file {missing}: No such file or directory"]


def test_unset_secret_env(monkeypatch):
    monkeypatch.delenv("REGWATCH_TEST_UNSET", raising=False)
    problems = problems_of(with_target(username="u", password_env="REGWATCH_TEST_UNSET"))
    assert problems == ["targets[0].password_env: environment variable REGWATCH_TEST_UNSET is not set"]


def test_password_without_username(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value")
    assert problems_of(with_target(password_file=str(secret))) == [
        "targets[0].username: a password is set but no username"]


def test_all_problems_at_once():
    data = {"targets": [{"name": "a", "kind": "quay", "url": "x", "interval": "1 minute", "extra": 1}], "bogus": 1}
    paths = {p.split(":")[0] for p in problems_of(data)}
    assert paths == {"targets[0].kind", "targets[0].url", "targets[0].interval", "targets[0].extra", "bogus"}


def test_secret_resolved_and_never_shown(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-value\n")
    config = parse_config(with_target(username="u", password_file=str(secret)))
    target = config.targets[0]
    assert target.secret("password") == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(config) and "s3cr3t-value" not in str(config)
    assert "s3cr3t-value" not in config.model_dump_json()
    monkeypatch.setenv("HUB_PW", "from-env")
    config = parse_config(with_target(username="u", password_env="HUB_PW"))
    assert config.targets[0].secret("password") == "from-env"


def test_yaml_duplicate_keys_and_syntax(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("listen: ':1'\nlisten: ':2'\n")
    with pytest.raises(ConfigError, match="duplicate key 'listen'"):
        load_config(path)
    path.write_text("targets: [\n")
    with pytest.raises(ConfigError, match="invalid YAML: line"):
        load_config(path)


def test_missing_file_is_an_error_not_a_traceback(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file: No such file or directory"):
        load_config(tmp_path / "absent.yml")


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


# --------------------------------------------------------------------------- kinds (issue 13, 17)


@pytest.mark.parametrize("kind, block", [("distribution", "nexus"), ("harbor", "artifactory"), ("nexus", "harbor"),
                                         ("artifactory", "upstream"), ("upstream", "nexus")])
def test_an_options_block_on_another_kind_names_the_key_and_its_kind(kind, block):
    target = {"name": "t", "kind": kind, "url": "http://127.0.0.1:5000", block: {}}
    if kind == "upstream":
        target["upstream"] = {"image": "library/alpine:latest"}
    assert problems_of({"targets": [target]}) == [
        f"targets[0].{block}: unknown key for kind: {kind} ({block} options belong to kind: {block})"]


def test_each_kind_carries_its_own_block_and_the_common_keys():
    config = parse_config({"targets": [
        {"name": "d", "kind": "distribution", "url": "http://127.0.0.1:5000"},
        {"name": "h", "kind": "harbor", "url": "https://harbor.example.com", "harbor": {"skip": ["gc"]}},
        {"name": "n", "kind": "nexus", "url": "https://nexus.example.com",
         "nexus": {"docker_connectors": {"docker-hosted": "https://nexus.example.com:8082"}}},
        {"name": "a", "kind": "artifactory", "url": "https://art.example.com/artifactory",
         "artifactory": {"docker_repositories": ["docker-local"]}},
        {"name": "u", "kind": "upstream", "url": "https://registry-1.docker.io",
         "upstream": {"image": "library/alpine"}}]})
    d, h, n, a, u = config.targets
    assert [t.kind for t in config.targets] == ["distribution", "harbor", "nexus", "artifactory", "upstream"]
    assert all(isinstance(t, TargetConfig) for t in config.targets)
    assert (d.interval, d.timeout, d.page_size, d.concurrency, d.probes) == (60.0, 10.0, 100, 4, [])
    assert h.harbor.skip == ["gc"] and not hasattr(d, "harbor")
    assert n.nexus.docker_connectors == {"docker-hosted": "https://nexus.example.com:8082"}
    assert a.artifactory.docker_repositories == ["docker-local"]
    assert (u.upstream.repository, u.upstream.reference) == ("library/alpine", "latest")
    assert config.target("u") is u


def test_an_upstream_target_needs_the_manifest_to_head():
    target = {"name": "hub", "kind": "upstream", "url": "https://registry-1.docker.io"}
    assert problems_of({"targets": [target]}) == [
        "targets[0].upstream: required for kind: upstream: the manifest to HEAD, "
        "e.g. upstream: {image: library/alpine:latest}"]
    target["upstream"] = {"image": "Library/Alpine:latest"}
    assert problems_of({"targets": [target]}) == [
        "targets[0].upstream.image: 'Library/Alpine' is not a valid repository name (distribution-spec: lower-case "
        "letters and digits, separated by . _ __ - or /); write the image as repository:tag or repository@digest, "
        "e.g. library/alpine:3.20"]
    target["upstream"] = {"image": "library/alpine@sha256:abc"}
    assert problems_of({"targets": [target]}) == [
        "targets[0].upstream.image: 'sha256:abc' is not a valid digest (sha256: and 64 hex digits, or sha512: and "
        "128); write the image as repository:tag or repository@digest, e.g. library/alpine:3.20"]


def test_a_target_with_a_wrong_kind_still_gets_its_other_keys_checked():
    data = {"targets": [{"name": "a", "kind": "harbour", "url": "http://x/", "interval": "soon", "harbor": {},
                         "colour": 1}]}
    assert problems_of(data) == [
        "targets[0].kind: must be distribution, harbor, nexus, artifactory or upstream; did you mean harbor?",
        "targets[0].interval: 'soon' is not a duration; use a number and a unit (ms, s, m, h, d), e.g. 30s",
        "targets[0].colour: unknown key"]


def test_page_size_default_stays_under_distributions_catalog_limit():
    # Distribution answers 400 PAGINATION_NUMBER_INVALID above catalog.maxentries (1000 by default).
    config = parse_config(with_target())
    assert config.targets[0].page_size <= DISTRIBUTION_MAX_PAGE == 1000
    # Larger values stay accepted: the client falls back to the registry's limit.
    assert parse_config(with_target(page_size=5000)).targets[0].page_size == 5000
    assert problems_of(with_target(page_size=10001)) == ["targets[0].page_size: must be at most 10000"]
