"""Secrets and credentials at the edge (issue 18 "secrets never show"): a secret with a control
character is refused naming its key and never its value; a URL with user:password@ is refused on the
command line as in the config, exit 2, without echoing the password.
"""

from __future__ import annotations

import click
import pytest
import yaml
from click.testing import CliRunner

from regwatch.cli import cli
from regwatch.commands.common import NO_CREDENTIALS_URL
from regwatch.config import CredentialsInURL, check_cli_url, parse_config

SECRET = "Sup3r-S3cret-Value"


def check(tmp_path, data):
    path = tmp_path / "regwatch.yml"
    path.write_text(yaml.safe_dump(data))
    before = path.read_bytes()
    result = CliRunner().invoke(cli, ["check-config", str(path)], prog_name="regwatch")
    assert path.read_bytes() == before  # a bad config is only read, never rewritten
    everything = result.stdout + result.stderr
    assert SECRET not in everything
    return path, result.exit_code, result.stdout, result.stderr


def secret_file(tmp_path, content: bytes, name: str = "password"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def target_with(**fields) -> dict:
    return {"targets": [{"name": "hub", "kind": "distribution", "url": "http://127.0.0.1:5000", "username": "monitor",
                         **fields}]}


@pytest.mark.parametrize("content, what", [
    (f"{SECRET}\nsecond line".encode(), "a line feed (newline)"),
    (f"{SECRET}\n\n".encode(), "a line feed (newline)"),  # one line end is stripped, not two
    (f"{SECRET[:4]}\r{SECRET[4:]}".encode(), "a carriage return"),
    (f"{SECRET}\0".encode(), "a NUL byte"),
    (f"{SECRET}\t".encode(), "a tab"),
    (f"\x1b[31m{SECRET}".encode(), "the control character U+001B"),
    (f"{SECRET}\x7f".encode(), "the control character U+007F"),
    (f"{SECRET}\u0085".encode(), "the control character U+0085"),
])
def test_a_control_character_in_a_secret_file_names_the_key_not_the_value(tmp_path, content, what):
    pw = secret_file(tmp_path, content)
    path, code, out, err = check(tmp_path, target_with(password_file=str(pw)))
    assert (code, out, err) == (2, "", f"Error: {path}: 1 problem in the config:\n"
                                       f"  - targets[0].password_file: the secret in {pw} holds {what}, which no "
                                       "HTTP header can carry; remove it (one line end at the end of the file is "
                                       "fine)\n")


@pytest.mark.parametrize("content", [f"{SECRET}\n".encode(), f"{SECRET}\r\n".encode(), SECRET.encode()])
def test_one_line_end_at_the_end_of_a_secret_file_is_normal(tmp_path, content):
    pw = secret_file(tmp_path, content)
    config = parse_config(target_with(password_file=str(pw)))
    assert config.targets[0].secret("password") == SECRET
    path, code, out, err = check(tmp_path, target_with(password_file=str(pw)))
    assert (code, out, err) == (0, f"{path}: OK (1 target, 0 storage volumes, 0 auth log sources)\n", "")


def test_spaces_are_part_of_a_secret(tmp_path):
    pw = secret_file(tmp_path, f" {SECRET} \n".encode())
    assert parse_config(target_with(password_file=str(pw))).targets[0].secret("password") == f" {SECRET} "


def test_a_control_character_in_an_api_key_env_of_elasticsearch(tmp_path, monkeypatch):
    monkeypatch.setenv("ES_KEY", f"{SECRET}\n")
    path, code, out, err = check(tmp_path, {"auth_logs": [{"name": "elk", "elasticsearch": {
        "url": "https://es:9200", "api_key_env": "ES_KEY"}}]})
    assert (code, out, err) == (2, "", f"Error: {path}: 1 problem in the config:\n"
                                       "  - auth_logs[0].elasticsearch.api_key_env: environment variable ES_KEY "
                                       "holds a line feed (newline), which no HTTP header can carry; remove it\n")


def test_a_token_file_with_a_newline_is_reported_even_when_the_shape_is_wrong_too(tmp_path):
    token = secret_file(tmp_path, f"{SECRET}\nx".encode(), "token")
    path, code, out, err = check(tmp_path, target_with(token_file=str(token), interval="soon"))
    assert (code, out, err) == (2, "", f"Error: {path}: 2 problems in the config:\n"
                                       "  - targets[0].interval: 'soon' is not a duration; use a number and a unit "
                                       "(ms, s, m, h, d), e.g. 30s\n"
                                       f"  - targets[0].token_file: the secret in {token} holds a line feed "
                                       "(newline), which no HTTP header can carry; remove it (one line end at the "
                                       "end of the file is fine)\n")


def test_empty_big_and_binary_secret_files(tmp_path, monkeypatch):
    empty = secret_file(tmp_path, b"\n", "empty")
    big = secret_file(tmp_path, SECRET.encode() * 4000, "big")
    binary = secret_file(tmp_path, b"\xff\xfe" + SECRET.encode(), "binary")
    monkeypatch.setenv("EMPTY_PW", "")
    data = {"targets": [{"name": f"t{i}", "kind": "distribution", "url": "http://127.0.0.1:5000", "username": "u",
                         **refs} for i, refs in enumerate([{"password_file": str(empty)}, {"password_file": str(big)},
                                                          {"password_file": str(binary)},
                                                          {"password_env": "EMPTY_PW"}])]}
    path, code, out, err = check(tmp_path, data)
    assert (code, out, err) == (2, "", f"Error: {path}: 4 problems in the config:\n"
                                       f"  - targets[0].password_file: secret file {empty} is empty\n"
                                       f"  - targets[1].password_file: secret file {big} is larger than 64 KiB; "
                                       "point it at the file that holds only the secret\n"
                                       f"  - targets[2].password_file: secret file {binary} is not UTF-8 text\n"
                                       "  - targets[3].password_env: environment variable EMPTY_PW is empty\n")


def test_a_secret_never_shows_in_the_config_objects(tmp_path):
    pw = secret_file(tmp_path, f"{SECRET}\n".encode())
    config = parse_config(target_with(password_file=str(pw)))
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.targets[0])):
        assert SECRET not in text


# --------------------------------------------------------------------------- URLs on the command line


@pytest.mark.parametrize("value, write, login", [
    (f"http://monitor:{SECRET}@127.0.0.1:5000", "http://127.0.0.1:5000", "127.0.0.1:5000"),
    (f"https://monitor:{SECRET}@registry.example.com/", "https://registry.example.com/", "registry.example.com"),
    (f"monitor:{SECRET}@127.0.0.1:5000/library/alpine:3.20", "127.0.0.1:5000/library/alpine:3.20", "127.0.0.1:5000"),
    (f"https://{SECRET}@registry.example.com", "https://registry.example.com", "registry.example.com"),
])
def test_check_cli_url_refuses_userinfo_without_echoing_it(value, write, login):
    with pytest.raises(CredentialsInURL) as info:
        check_cli_url(value, "--source")
    assert str(info.value) == (
        f"--source: credentials in a URL are refused (they would show in logs, reports and the process list); "
        f"write {write} and give the credentials with REGWATCH_USERNAME and REGWATCH_PASSWORD, a target's username "
        f"and password_file in --config, or docker login {login}")
    assert SECRET not in str(info.value)


def test_a_password_with_a_slash_is_still_caught():
    # RFC 3986 ends the authority at "/", so urlsplit would see host "monitor" and a path holding the rest.
    with pytest.raises(CredentialsInURL) as info:
        check_cli_url(f"http://monitor:{SECRET[:5]}/{SECRET[5:]}@127.0.0.1:5000")
    assert SECRET[5:] not in str(info.value) and SECRET[:5] not in str(info.value)


@pytest.mark.parametrize("value", ["hub", "http://127.0.0.1:5000", "https://registry.example.com/",
                                   "127.0.0.1:5000/library/alpine:3.20", "alpine@sha256:" + "a" * 64,
                                   "127.0.0.1:5000/library/alpine@sha256:" + "b" * 64, "http://pushgateway:9091"])
def test_urls_names_and_digest_references_pass(value):
    assert check_cli_url(value, "--source") == value


@pytest.mark.parametrize("option", ["--source", "--dest", "--pushgateway"])
def test_drill_refuses_a_url_with_credentials_exit_2(tmp_path, option):
    args = {"--source": ["--backup"], "--dest": ["--restore"], "--pushgateway": ["--verify"]}[option]
    result = CliRunner().invoke(cli, ["drill", *args, option, f"http://monitor:{SECRET}@127.0.0.1:5000",
                                      "--store", str(tmp_path / "store")], prog_name="regwatch")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Usage: regwatch drill [OPTIONS]\nTry 'regwatch drill --help' for help.\n\n"
        f"Error: Invalid value for '{option}': credentials in a URL are refused (they would show in logs, reports "
        "and the process list); write http://127.0.0.1:5000 and give the credentials with REGWATCH_USERNAME and "
        "REGWATCH_PASSWORD, a target's username and password_file in --config, or docker login 127.0.0.1:5000\n")
    assert not (tmp_path / "store").exists()  # refused before anything was made


def test_drill_against_is_checked_too(tmp_path):
    result = CliRunner().invoke(cli, ["drill", "--verify", "--store", str(tmp_path), "--against",
                                      f"monitor:{SECRET}@127.0.0.1:5000"], prog_name="regwatch")
    assert result.exit_code == 2 and SECRET not in result.output
    assert "Error: Invalid value for '--against': credentials in a URL are refused" in result.stderr


def test_the_param_type_as_probe_ref_would_use_it():
    @click.command()
    @click.argument("ref", type=NO_CREDENTIALS_URL)
    def probe(ref: str) -> None:
        click.echo(ref)

    result = CliRunner().invoke(probe, [f"monitor:{SECRET}@127.0.0.1:5000/library/alpine:3.20"], prog_name="probe")
    assert result.exit_code == 2
    assert result.stderr == (
        "Usage: probe [OPTIONS] REF\nTry 'probe --help' for help.\n\n"
        "Error: Invalid value for 'REF': credentials in a URL are refused (they would show in logs, reports and the "
        "process list); write 127.0.0.1:5000/library/alpine:3.20 and give the credentials with REGWATCH_USERNAME "
        "and REGWATCH_PASSWORD, a target's username and password_file in --config, or docker login 127.0.0.1:5000\n")
    ok = CliRunner().invoke(probe, ["127.0.0.1:5000/library/alpine@sha256:" + "c" * 64])
    assert (ok.exit_code, ok.stdout) == (0, "127.0.0.1:5000/library/alpine@sha256:" + "c" * 64 + "\n")
