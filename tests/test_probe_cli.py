"""``regwatch probe REF`` and probes run by ``regwatch serve``, against a real registry."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from regwatch.cli import cli
from regwatch.images import build_image, push_image


@pytest.fixture
def pushed(registry, registry_client):
    image = build_image([{"f": os.urandom(20_000)}])
    push_image(registry_client, "lib/app", "1", image)
    return image


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["probe", *args], env=env, catch_exceptions=False)


def test_json_output_credentials_from_the_environment(registry, pushed):
    ref = registry.url.removeprefix("http://") + "/lib/app:1"
    result = invoke(ref, "--json", env={"REGWATCH_USERNAME": "alice", "REGWATCH_PASSWORD": "alice-secret"})
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["success"] is True and out["manifest_digest"] == pushed.digest
    assert out["bytes_pulled"] == pushed.size
    assert set(out["phases"]) == {"dns", "connect", "tls", "ping", "auth", "manifest", "config", "blob_first_byte",
                                  "blob"}
    assert "alice-secret" not in result.output


def test_table_output_and_exit_1_on_failure(registry, pushed):
    env = {"REGWATCH_USERNAME": "alice", "REGWATCH_PASSWORD": "alice-secret"}
    ok = invoke(f"{registry.url}/lib/app:1", "--mode", "manifest", env=env)
    assert ok.exit_code == 0, ok.output
    assert "manifest" in ok.output and "total" in ok.output and "OK" in ok.output
    missing = invoke(f"{registry.url}/lib/app:nope", env=env)
    assert missing.exit_code == 1
    assert "reason=not_found" in missing.output and "failed here" in missing.output


def test_credentials_from_the_docker_config_file(tmp_path, registry, pushed):
    host = registry.url.removeprefix("http://")
    auth = base64.b64encode(b"alice:alice-secret").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    result = invoke(f"{host}/lib/app:1", "--json", env={"DOCKER_CONFIG": str(tmp_path), "REGWATCH_USERNAME": ""})
    assert json.loads(result.output)["success"] is True, result.output
    anonymous = invoke(f"{host}/lib/app:1", "--json", env={"DOCKER_CONFIG": str(tmp_path / "none"),
                                                           "REGWATCH_USERNAME": ""})
    assert anonymous.exit_code == 1 and json.loads(anonymous.output)["reason"] == "auth"


def test_a_target_name_from_the_config_lends_url_and_credentials(tmp_path, write_config, registry, pushed):
    secret = tmp_path / "pw"
    secret.write_text("alice-secret")
    config = write_config({"targets": [{"name": "hub", "kind": "distribution", "url": registry.url,
                                        "username": "alice", "password_file": str(secret),
                                        "probes": [{"image": "lib/app:1", "mode": "manifest"}]}]})
    result = invoke("hub/lib/app:1", "--config", str(config), "--json", env={"REGWATCH_USERNAME": ""})
    out = json.loads(result.output)
    assert out["success"] is True and out["target"] == "hub" and out["endpoint"] == registry.url
    assert out["mode"] == "manifest" and out["phases"]["blob"] == 0  # the configured probe's settings apply


def test_bad_reference_is_a_usage_error():
    result = CliRunner().invoke(cli, ["probe", "http://127.0.0.1:5000/"])
    assert result.exit_code == 2 and "no repository" in result.output


def test_serve_runs_probes_and_exposes_valid_metrics(tmp_path, write_config, serve, registry, pushed):
    secret = tmp_path / "pw"
    secret.write_text("alice-secret")
    config = write_config({"targets": [{"name": "hub", "kind": "distribution", "url": registry.url,
                                        "username": "alice", "password_file": str(secret),
                                        "probes": [{"image": "lib/app:1", "interval": "1s"},
                                                   {"image": "lib/gone:1", "interval": "1s", "mode": "manifest"}]}]})
    proc = serve(config)
    proc.wait_ready()
    text = proc.metrics()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("regwatch_probe_success", (("image", "lib/app:1"), ("target", "hub")))] == 1
    assert samples[("regwatch_probe_success", (("image", "lib/gone:1"), ("target", "hub")))] == 0
    assert samples[("regwatch_probe_failures_total", (("image", "lib/gone:1"), ("reason", "not_found"),
                                                      ("target", "hub")))] >= 1
    assert samples[("regwatch_probe_pull_duration_seconds_bucket", (("image", "lib/app:1"), ("le", "0.5"),
                                                                   ("target", "hub")))] >= 1
    assert samples[("regwatch_collector_success", (("collector", "probe"), ("image", "lib/app:1"),
                                                   ("target", "hub")))] == 1
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        probe_lines = [line for line in (check.stdout + check.stderr).splitlines() if "probe" in line]
        assert not probe_lines, probe_lines
