"""The container image's Dockerfile: no Docker engine here, so its instructions are parsed and checked.

What a build would produce that matters at run time: the last stage runs as a numeric non-root
user, its ENTRYPOINT is the ``regwatch`` console script and CMD is ``serve``, and no compiler
or skopeo ends up in it.
"""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest

from tests.conftest import REPO_ROOT
from tests.dockerfile import DOCKERFILE, exec_form, image_entrypoint, instructions, stages


@pytest.fixture(scope="module")
def final_stage():
    return stages(DOCKERFILE.read_text())[-1]


def last(stage, keyword: str) -> str:
    values = [args for k, args in stage if k == keyword]
    assert values, f"no {keyword} in the final stage"
    return values[-1]


def test_it_is_a_multi_stage_build_on_a_slim_python_base(final_stage):
    text = DOCKERFILE.read_text()
    assert len(stages(text)) == 2
    base = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base)
    assert final_stage[0] == ("FROM", "${PYTHON_IMAGE}")


def test_runs_as_a_numeric_non_root_user(final_stage):
    user, _, group = last(final_stage, "USER").partition(":")
    assert user.isdigit() and int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)


def test_entrypoint_is_the_console_script_and_cmd_is_serve(final_stage):
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert image_entrypoint() == ["regwatch"] and "regwatch" in scripts
    cmd = exec_form(last(final_stage, "CMD"))
    assert cmd[0] == "serve" and cmd[cmd.index("--config") + 1] == "/etc/regwatch/config.yaml"


def test_the_default_port_is_exposed_and_health_checked(final_stage):
    from regwatch.config import DEFAULT_LISTEN

    port = DEFAULT_LISTEN.rpartition(":")[2]
    assert last(final_stage, "EXPOSE") == port
    assert f"127.0.0.1:{port}/healthz" in last(final_stage, "HEALTHCHECK")


def test_no_compiler_or_skopeo_in_the_runtime_image(final_stage):
    runs = " ".join(args for keyword, args in final_stage if keyword == "RUN")
    for package in ("gcc", "build-essential", "skopeo", "apt-get install"):
        assert package not in runs
    installed = shlex.split(runs)
    assert "--no-index" in installed, "the runtime stage installs only the wheels built in the build stage"


def test_dockerignore_sends_only_the_package_to_the_build():
    rules = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {src for keyword, args in stages(DOCKERFILE.read_text())[0] if keyword == "COPY"
              for src in args.split()[:-1] if not src.startswith("--")}
    assert copied <= allowed, "every COPY source must pass .dockerignore"


def test_instructions_parser_joins_continued_lines():
    parsed = instructions("FROM a\n# c\nRUN one \\\n    two \\\n    # inside\n    three\nUSER 1\n")
    assert parsed == [("FROM", "a"), ("RUN", "one  two  three"), ("USER", "1")]
