"""`regwatch check-config FILE` as a user meets it: every rule's whole message, the exit code, and
nothing of a secret in any output (issue 14 "check-config as a teacher", "no duplicate series").

Each case writes a config file, runs the real command through click's CliRunner, and compares the
complete stderr and stdout with what the user must read.
"""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from regwatch.cli import cli

SECRET = "hunter2-Secret-Value"

DIST = {"name": "hub", "kind": "distribution", "url": "http://127.0.0.1:5000"}
HARBOR = {"name": "harbor", "kind": "harbor", "url": "https://harbor.example.com"}


def run(path, *extra: str):
    result = CliRunner().invoke(cli, ["check-config", *extra, str(path)], prog_name="regwatch")
    return result.exit_code, result.stdout, result.stderr


def one_problem(path, message: str) -> str:
    return f"Error: {path}: 1 problem in the config:\n  - {message}\n"


def target(**fields) -> dict:
    return {"targets": [{**DIST, **fields}]}


def write(tmp_path, data, name: str = "regwatch.yml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# Each rule: the config, then the one message it must give (after "Error: FILE: 1 problem in the config:").
RULES = {
    # did you mean: synonyms difflib cannot see, close spellings, and keys one level down
    "type for kind": ({"targets": [{"name": "hub", "type": "distribution", "url": "http://127.0.0.1:5000"}]},
                      None),
    "user for username": (target(user="monitor"), "targets[0].user: unknown key; did you mean username?"),
    "misspelt section": ({"targets": [DIST], "storrage": []}, "storrage: unknown key; did you mean storage?"),
    "tls key one level up": (target(insecure_skip_verify=True),
                             "targets[0].insecure_skip_verify: unknown key; did you mean tls.insecure_skip_verify?"),
    "misspelt harbor option": ({"targets": [{**HARBOR, "harbor": {"skipp": ["gc"]}}]},
                               "targets[0].harbor.skipp: unknown key; did you mean skip?"),
    "a key nothing resembles": (target(colour="red"), "targets[0].colour: unknown key"),
    "literal password": (target(password=SECRET),
                         "targets[0].password: literal secrets are not allowed; use password_file or password_env"),
    # kinds and their blocks (issue 13)
    "nexus block on distribution": (target(nexus={"docker_connectors": {}}),
                                    "targets[0].nexus: unknown key for kind: distribution "
                                    "(nexus options belong to kind: nexus)"),
    "misspelt kind": (target(kind="harbour"),
                      "targets[0].kind: must be distribution, harbor, nexus, artifactory or upstream; "
                      "did you mean harbor?"),
    "unknown kind": (target(kind="quay"),
                     "targets[0].kind: must be distribution, harbor, nexus, artifactory or upstream"),
    "upstream without its block": ({"targets": [{"name": "dockerhub", "kind": "upstream",
                                                 "url": "https://registry-1.docker.io"}]},
                                   "targets[0].upstream: required for kind: upstream: the manifest to HEAD, "
                                   "e.g. upstream: {image: library/alpine:latest}"),
    "probes on an upstream target": ({"targets": [{"name": "dockerhub", "kind": "upstream",
                                                   "url": "https://registry-1.docker.io",
                                                   "upstream": {"image": "library/alpine:latest"},
                                                   "probes": [{"image": "library/alpine:latest"}]}]},
                                     "targets[0].probes: an upstream target is read with HEAD requests only; a probe "
                                     "pulls (GET) and would spend the pull limit it watches: probe through the "
                                     "pull-through cache's own target instead"),
    # the registry's base URL, not its API root
    "url ending in /v2/": (target(url="http://127.0.0.1:5000/v2/"),
                           "targets[0].url: ends in /v2, but url is the registry's base URL (regwatch adds /v2/ "
                           "itself): use http://127.0.0.1:5000"),
    "url ending in /v2": (target(url="https://registry.example.com/v2"),
                          "targets[0].url: ends in /v2, but url is the registry's base URL (regwatch adds /v2/ "
                          "itself): use https://registry.example.com"),
    "mirror ending in /v2": (target(probes=[{"image": "library/alpine:3.20", "mirror": "http://cache:5000/v2"}]),
                             "targets[0].probes[0].mirror: ends in /v2, but url is the registry's base URL "
                             "(regwatch adds /v2/ itself): use http://cache:5000"),
    "credentials in url": (target(url=f"http://monitor:{SECRET}@127.0.0.1:5000"),
                           "targets[0].url: must not contain credentials; use username with password_file or "
                           "password_env"),
    # listen takes what --listen takes
    "listen not a port": ({"listen": "nowhere", "targets": [DIST]},
                          "listen: must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732"),
    "listen port too big": ({"listen": 97320, "targets": [DIST]},
                            "listen: must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732"),
    # plain words for every type mistake
    "targets as a mapping": ({"targets": DIST}, "targets: must be a list (one '- ' entry per item), got a mapping"),
    "page_size as text": (target(page_size="many"), "targets[0].page_size: must be a whole number, got text"),
    "page_size too big": (target(page_size=20000), "targets[0].page_size: must be at most 10000"),
    "bool as text": (target(tls={"insecure_skip_verify": "perhaps"}),
                     "targets[0].tls.insecure_skip_verify: must be true or false, got text"),
    "tls as a list": (target(tls=["ca.pem"]), "targets[0].tls: must be a mapping (key: value lines), got a list"),
    "empty harbor block": ({"targets": [{**HARBOR, "harbor": None}]},
                           "targets[0].harbor: must be a mapping (key: value lines), got nothing (an empty value)"),
    "bare number duration": (target(interval=30), "targets[0].interval: duration 30 needs a unit, e.g. 30s"),
    "empty path": ({"storage": [{"name": "data", "path": ""}]},
                   "storage[0].path: is empty; give a path, or leave the key out"),
    "bad name": (target(name="my hub"), "targets[0].name: must start with a letter or digit and hold only "
                                        "letters, digits, _ . : and - (at most 100)"),
    "bad format": ({"auth_logs": [{"name": "reg", "path": "/var/log/r.log", "format": "json"}]},
                   "auth_logs[0].format: must be 'distribution', 'harbor-core', 'harbor-proxy', 'nginx' or 'auto'"),
    "missing url": ({"targets": [{"name": "hub", "kind": "distribution"}]}, "targets[0].url: required key is missing"),
    "missing kind": ({"targets": [{"name": "hub", "url": "http://127.0.0.1:5000"}]},
                     "targets[0].kind: required key is missing; set it to distribution, harbor, nexus, artifactory "
                     "or upstream"),
    "bad probe image": (target(probes=[{"image": "Library/Alpine"}]),
                        "targets[0].probes[0].image: 'Library/Alpine' is not a valid repository name "
                        "(distribution-spec: lower-case letters and digits, separated by . _ __ - or /); write the "
                        "image as repository:tag or repository@digest, e.g. library/alpine:3.20"),
    # nothing to watch
    "empty file": ("", "nothing to watch: add a target (targets:), a storage volume (storage:) or an auth-failure "
                       "source (auth_logs:); docs/configuration.md has an example of each"),
    "only listen": ({"listen": ":9732"}, "nothing to watch: add a target (targets:), a storage volume (storage:) or "
                                         "an auth-failure source (auth_logs:); docs/configuration.md has an example "
                                         "of each"),
    # names that would collide on a label (issue 14, "no duplicate series")
    "auth source named like a harbor target": (
        {"targets": [HARBOR], "auth_logs": [{"name": "harbor", "path": "/var/log/harbor/core.log"}]},
        "auth_logs[0].name: 'harbor' is also the name of Harbor target targets[0], whose audit log is counted as "
        "regwatch_auth_requests_total{source=\"harbor\"} too: the series would be duplicated and the failure ratio "
        "wrong; rename one of them (or set targets[0].harbor.skip: [audit])"),
    "two sources, one positions file": (
        {"auth_logs": [{"name": "a", "path": "/var/log/a.log", "positions_file": "/var/lib/regwatch/pos.json"},
                       {"name": "b", "path": "/var/log/b.log", "positions_file": "/var/lib/regwatch/pos.json"}]},
        "auth_logs[1].positions_file: /var/lib/regwatch/pos.json is also auth_logs[0].positions_file; each source "
        "keeps its own state there and they would overwrite each other: give each its own file"),
    "positions file is a harbor audit state file": (
        {"targets": [{**HARBOR, "harbor": {"audit_state_file": "/var/lib/regwatch/state.json"}}],
         "auth_logs": [{"name": "reg", "path": "/var/log/r.log", "positions_file": "/var/lib/regwatch/state.json"}]},
        "targets[0].harbor.audit_state_file: /var/lib/regwatch/state.json is also auth_logs[0].positions_file; each "
        "source keeps its own state there and they would overwrite each other: give each its own file"),
    "one nexus connector under two names": (
        {"targets": [{"name": "nexus", "kind": "nexus", "url": "https://nexus.example.com", "nexus": {
            "docker_connectors": {"docker-hosted": "https://nexus.example.com:8082",
                                  "docker-copy": "https://nexus.example.com:8082/"}}}]},
        "targets[0].nexus.docker_connectors.docker-copy: https://nexus.example.com:8082 is also the connector of "
        "docker-hosted; a connector serves one repository, and its counts would be added twice: keep one of them"),
    "duplicate target names": ({"targets": [DIST, DIST]}, "targets[1].name: duplicate name 'hub' (also targets[0])"),
}
RULES["type for kind"] = (RULES["type for kind"][0], None)  # two problems: see test_type_for_kind


@pytest.mark.parametrize("rule", [r for r in RULES if RULES[r][1] is not None])
def test_each_rule_is_one_plain_message_with_its_key_and_exit_2(tmp_path, rule):
    data, message = RULES[rule]
    path = write(tmp_path, data)
    assert run(path) == (2, "", one_problem(path, message))


def test_type_for_kind_says_both_what_is_missing_and_what_was_meant(tmp_path):
    path = write(tmp_path, RULES["type for kind"][0])
    assert run(path) == (2, "", f"Error: {path}: 2 problems in the config:\n"
                                "  - targets[0].kind: required key is missing; set it to distribution, harbor, "
                                "nexus, artifactory or upstream\n"
                                "  - targets[0].type: unknown key; did you mean kind?\n")


def test_every_problem_at_once(tmp_path):
    path = write(tmp_path, {"listen": "x", "targets": [{**DIST, "kind": "quay", "interval": "soon", "user": "bob"},
                                                       {**HARBOR, "url": "http://h/v2/"}],
                            "auth_logs": [{"name": "reg"}]})
    assert run(path) == (2, "", f"Error: {path}: 6 problems in the config:\n"
                                "  - listen: must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732\n"
                                "  - targets[0].kind: must be distribution, harbor, nexus, artifactory or upstream\n"
                                "  - targets[0].interval: 'soon' is not a duration; use a number and a unit (ms, s, "
                                "m, h, d), e.g. 30s\n"
                                "  - targets[0].user: unknown key; did you mean username?\n"
                                "  - targets[1].url: ends in /v2, but url is the registry's base URL (regwatch adds "
                                "/v2/ itself): use http://h\n"
                                "  - auth_logs[0]: set exactly one of path and elasticsearch\n")


def test_a_good_config_says_what_it_holds(tmp_path):
    path = write(tmp_path, {"targets": [DIST, HARBOR], "storage": [{"name": "data", "path": str(tmp_path)}]})
    assert run(path) == (0, f"{path}: OK (2 targets, 1 storage volume, 0 auth log sources)\n", "")


@pytest.mark.parametrize("listen", [9732, "9732", ":9732", "127.0.0.1:9732", "[::1]:9732", "localhost:9732"])
def test_listen_takes_a_bare_port_as_the_flag_does(tmp_path, listen):
    path = write(tmp_path, {"listen": listen, "targets": [DIST]})
    assert run(path) == (0, f"{path}: OK (1 target, 0 storage volumes, 0 auth log sources)\n", "")


def test_serve_listen_flag_takes_the_same_values_and_refuses_the_same_ones(tmp_path):
    from regwatch.commands.common import LISTEN
    from regwatch.config import parse_config, split_listen

    every = "0.0.0.0"  # noqa: S104 - the address split_listen must give when listen names no host
    for value in ("9811", ":9811", f"{every}:9811"):
        from_flag = split_listen(LISTEN.convert(value, None, None))
        from_config = split_listen(parse_config({"listen": value, "targets": [DIST]}).listen)
        assert from_flag == from_config == (every, 9811)
    assert split_listen(parse_config({"listen": 9811, "targets": [DIST]}).listen) == (every, 9811)
    config = write(tmp_path, {"targets": [DIST]})
    result = CliRunner().invoke(cli, ["serve", "--config", str(config), "--listen", "nowhere"], prog_name="regwatch")
    assert (result.exit_code, result.stderr) == (2, (
        "Usage: regwatch serve [OPTIONS]\nTry 'regwatch serve --help' for help.\n\n"
        "Error: Invalid value for '--listen': must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732\n"))


def test_a_missing_storage_path_is_a_warning_and_exit_0_unless_strict(tmp_path):
    missing = tmp_path / "not-mounted"
    path = write(tmp_path, {"storage": [{"name": "data", "path": str(missing)}]})
    warning = (f"warning: {path}: storage[0].path: {missing} does not exist here; serve will report volume 'data' "
               "as failed (regwatch_collector_success{target=\"data\",collector=\"storage\"} 0) until it does\n")
    assert run(path) == (0, f"{path}: OK (0 targets, 1 storage volume, 0 auth log sources)\n", warning)
    assert run(path, "--strict") == (2, "", warning)
    missing.mkdir()
    assert run(path, "--strict") == (0, f"{path}: OK (0 targets, 1 storage volume, 0 auth log sources)\n", "")


def test_harbor_audit_skipped_means_no_collision(tmp_path):
    path = write(tmp_path, {"targets": [{**HARBOR, "harbor": {"skip": ["audit"]}}],
                            "auth_logs": [{"name": "harbor", "path": "/var/log/harbor/core.log"}]})
    assert run(path) == (0, f"{path}: OK (1 target, 0 storage volumes, 1 auth log source)\n", "")


def test_a_volume_and_a_target_may_share_a_name(tmp_path):
    # Their series differ: regwatch_storage_*{volume=} vs {target=}, and collector="storage" vs the kind's own.
    path = write(tmp_path, {"targets": [HARBOR], "storage": [{"name": "harbor", "path": str(tmp_path)}]})
    assert run(path) == (0, f"{path}: OK (1 target, 1 storage volume, 0 auth log sources)\n", "")


@pytest.mark.parametrize("text, message", [
    ("targets: [\n", "invalid YAML: line 2, column 1: expected the node content, but found '<stream end>'"),
    ("listen: ':1'\nlisten: ':2'\n", "invalid YAML: line 2, column 1: duplicate key 'listen'"),
    ("? [a, b]\n: 1\n", "invalid YAML: line 1, column 3: found unhashable key"),
    ("- a\n- b\n", "the config must be a YAML mapping (key: value) at the top level"),
])
def test_yaml_mistakes(tmp_path, text, message):
    path = write(tmp_path, text)
    assert run(path) == (2, "", one_problem(path, message))


def test_a_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes("targets:\n  - name: caf\xe9\n".encode("latin-1"))
    assert run(path) == (2, "", one_problem(path, "the config file is not UTF-8 text (byte 22 is not); "
                                                  "save it as UTF-8"))


def test_a_missing_config_file(tmp_path):
    path = tmp_path / "absent.yml"
    assert run(path) == (2, "", one_problem(path, "cannot read config file: No such file or directory"))


def test_a_missing_ca_file_of_a_target_and_of_elasticsearch(tmp_path):
    missing = tmp_path / "ca.pem"
    path = write(tmp_path, {"targets": [{**DIST, "tls": {"ca_file": str(missing)}}],
                            "auth_logs": [{"name": "elk", "elasticsearch": {"url": "https://es:9200",
                                                                            "tls": {"ca_file": str(tmp_path)}}}]})
    assert run(path) == (2, "", f"Error: {path}: 2 problems in the config:\n"
                                f"  - targets[0].tls.ca_file: no such file: {missing}; give the CA bundle (PEM) "
                                "that signed the server's certificate\n"
                                f"  - auth_logs[0].elasticsearch.tls.ca_file: not a file: {tmp_path}; give the CA "
                                "bundle (PEM) that signed the server's certificate\n")
