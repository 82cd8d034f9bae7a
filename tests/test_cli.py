"""Every command answers --help without a traceback; usage mistakes exit 2."""

from __future__ import annotations

import subprocess
import time

import pytest
from click.testing import CliRunner

from regwatch.cli import COMMANDS, cli
from tests.conftest import REPO_ROOT, regwatch_cmd


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and name in result.output


def test_top_level_help_is_fast_and_lists_commands():
    started = time.monotonic()
    out = subprocess.run(regwatch_cmd("--help"), capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout
    assert time.monotonic() - started < 5
    for name in COMMANDS:
        assert name in out


def test_usage_errors_exit_2(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["no-such-command"]).exit_code == 2
    assert runner.invoke(cli, ["serve"]).exit_code == 2  # --config is required
    result = runner.invoke(cli, ["serve", "--config", str(tmp_path / "missing.yml")])
    assert result.exit_code == 2 and "cannot read config file" in result.output
    config = tmp_path / "c.yml"
    config.write_text("targets: []\n")
    result = runner.invoke(cli, ["serve", "--config", str(config), "--listen", "nowhere"])
    assert result.exit_code == 2 and "must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "regwatch, version" in result.output


@pytest.mark.parametrize(("args", "error"), [
    (["--duration", "-1"], "Error: Invalid value for '--duration': -1.0 is not in the range x>=0."),
    (["--starter-config", "{tmp}"], "Error: Invalid value for '--starter-config': File '{tmp}' is a directory."),
])
def test_demo_usage_errors_exit_2_before_starting_anything(tmp_path, args, error):
    result = CliRunner().invoke(cli, ["demo", *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == error.format(tmp=tmp_path)
