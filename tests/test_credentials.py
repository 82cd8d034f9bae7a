"""One credential resolution for serve, probe and drill: config, then REGWATCH_USERNAME/REGWATCH_PASSWORD,
then the docker config in every shape docker writes it (auth, username/password, identitytoken,
credsStore and credHelpers through the docker-credential-* protocol). A broken entry is an error that
names the file and the host, never a traceback and never the secret."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from regwatch.config import parse_config
from regwatch.credentials import CredentialsError, resolve

HOST = "registry.example.com:5000"
URL = f"https://{HOST}"


def docker_config(tmp_path, data: dict) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(tmp_path), "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def helper(tmp_path, name: str, script: str) -> None:
    """A docker-credential-<name> program speaking the helper protocol (``get``, server URL on stdin)."""
    path = tmp_path / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_config_comes_first(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    target = parse_config({"targets": [{"name": "hub", "kind": "distribution", "url": URL, "username": "cfg",
                                        "password_file": str(secret)}]}).targets[0]
    env = {**docker_config(tmp_path, {"auths": {HOST: {"auth": b64("docker:x")}}}), "REGWATCH_USERNAME": "env"}
    creds = resolve(URL, target, env=env)
    assert (creds.username, creds.password, creds.source) == ("cfg", "from-file", "the config")


def test_then_the_environment_then_the_docker_config(tmp_path):
    env = docker_config(tmp_path, {"auths": {HOST: {"auth": b64("docker:pw:with:colons")}}})
    assert resolve(URL, env={**env, "REGWATCH_USERNAME": "env", "REGWATCH_PASSWORD": "e"}).username == "env"
    creds = resolve(URL, env=env)
    assert (creds.username, creds.password) == ("docker", "pw:with:colons")
    assert creds.source == f"the docker config {tmp_path / 'config.json'}"
    # serve does not read the environment: it is not bound to a host.
    assert resolve(URL, env={**env, "REGWATCH_USERNAME": "env"}, use_env=False).username == "docker"


@pytest.mark.parametrize("entry, expected", [
    ({"username": "u", "password": "p"}, ("u", "p", None)),
    ({"auth": b64("u:"), "identitytoken": "refresh"}, ("u", None, "refresh")),
    ({"identitytoken": "refresh"}, (None, None, "refresh")),
])
def test_every_auths_entry_shape(tmp_path, entry, expected):
    env = docker_config(tmp_path, {"auths": {f"https://{HOST}/v1/": entry}})
    creds = resolve(URL, env=env)
    assert (creds.username, creds.password, creds.identity_token) == expected


def test_docker_hub_is_found_under_its_index_url(tmp_path):
    env = docker_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")}}})
    assert resolve("https://registry-1.docker.io", env=env).username == "hubuser"


def test_a_bad_auth_value_names_the_file_and_host_not_the_value(tmp_path):
    env = docker_config(tmp_path, {"auths": {HOST: {"auth": "not base64!! secret-ish"}}})
    with pytest.raises(CredentialsError) as info:
        resolve(URL, env=env)
    assert str(info.value) == (f"the docker config {tmp_path / 'config.json'}, auths['{HOST}'].auth is not base64 "
                               f"of user:password; run `docker login {HOST}` again")
    assert "secret-ish" not in str(info.value)


def test_a_cred_helper_answers_for_its_host(tmp_path):
    helper(tmp_path, "test", 'read url; echo "{\\"ServerURL\\":\\"$url\\",\\"Username\\":\\"h-user\\",'
                             '\\"Secret\\":\\"h-secret\\"}"\n')
    env = docker_config(tmp_path, {"credHelpers": {HOST: "test"}})
    creds = resolve(URL, env=env)
    assert (creds.username, creds.password, creds.source) == ("h-user", "h-secret",
                                                              "the credential helper docker-credential-test")


def test_a_creds_store_token_answer_is_an_identity_token(tmp_path):
    helper(tmp_path, "store", 'read url; echo \'{"Username":"<token>","Secret":"refresh-tok"}\'\n')
    env = docker_config(tmp_path, {"auths": {HOST: {}}, "credsStore": "store"})
    creds = resolve(URL, env=env)
    assert (creds.username, creds.identity_token) == (None, "refresh-tok")


def test_a_creds_store_without_the_host_is_no_credentials(tmp_path):
    helper(tmp_path, "store", 'echo "credentials not found in native keychain"; exit 1\n')
    env = docker_config(tmp_path, {"credsStore": "store"})
    creds = resolve(URL, env=env)
    assert creds.anonymous
    assert creds.looked == ("REGWATCH_USERNAME/REGWATCH_PASSWORD (not set)",
                            f"the docker config {tmp_path / 'config.json'} (no entry for {HOST})")


def test_a_failing_or_missing_helper_is_a_clear_error(tmp_path):
    env = docker_config(tmp_path, {"credHelpers": {HOST: "absent"}})
    with pytest.raises(CredentialsError) as info:
        resolve(URL, env=env)
    assert str(info.value) == (f"the docker config {tmp_path / 'config.json'} sends {HOST} to the credential helper "
                               "docker-credential-absent, which is not installed (not on PATH); install it or remove "
                               "the entry")
    helper(tmp_path, "broken", "echo oops >&2; exit 3\n")
    env = docker_config(tmp_path, {"credHelpers": {HOST: "broken"}})
    with pytest.raises(CredentialsError) as info:
        resolve(URL, env=env)
    assert str(info.value) == (f"the credential helper docker-credential-broken failed for {HOST} (exit 3); run "
                               "`docker-credential-broken list` to check it")


def test_nothing_found_says_where_regwatch_looked(tmp_path):
    target = parse_config({"targets": [{"name": "hub", "kind": "distribution", "url": URL}]}).targets[0]
    creds = resolve(URL, target, env={"DOCKER_CONFIG": str(tmp_path)})
    assert creds.anonymous
    assert creds.missing_hint(HOST) == (
        f"regwatch found no credentials for {HOST} (looked in: the config (target hub has no username, token_file "
        f"or api_key_file); REGWATCH_USERNAME/REGWATCH_PASSWORD (not set); the docker config "
        f"{tmp_path / 'config.json'} (no entry for {HOST})); set username and password_file on the target, or "
        f"export REGWATCH_USERNAME and REGWATCH_PASSWORD, or run `docker login {HOST}`")


def test_a_docker_config_that_is_not_json_is_an_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CredentialsError) as info:
        resolve(URL, env={"DOCKER_CONFIG": str(tmp_path)})
    assert str(info.value) == (f"the docker config {tmp_path / 'config.json'} is not valid JSON; fix it or run "
                               "docker login again")
