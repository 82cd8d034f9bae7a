"""The chart's values.schema.json config part is generated from regwatch's config model (make generate).

Two checks: the committed file equals the generator's output (so it cannot drift from config.py), and
the schema and regwatch's own validation agree on sample configs, the invalid ones each wrong in one
way (jsonschema's Draft 7 validator stands in for Helm's, which reads the same draft).
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from pydantic import ValidationError

from regwatch.config import Config
from regwatch.generate import helm_schema
from tests.conftest import REPO_ROOT

SCHEMA_FILE = REPO_ROOT / helm_schema.SCHEMA_FILE


def test_committed_schema_equals_the_generator_output():
    committed = SCHEMA_FILE.read_text()
    assert helm_schema.render(committed) == committed, (
        "helm/regwatch/values.schema.json differs from the config model: run `make generate` and commit")


def test_the_generator_keeps_the_charts_own_parts():
    committed = json.loads(SCHEMA_FILE.read_text())
    scrambled = copy.deepcopy(committed)
    scrambled["properties"]["config"] = {"type": "object"}
    scrambled["properties"]["logs"]["properties"]["daemonset"]["properties"]["sources"] = {}
    out = json.loads(helm_schema.render(json.dumps(scrambled)))
    assert out == committed
    assert list(out["properties"]) == list(committed["properties"])


GOOD = {
    "targets": [
        {"name": "hub", "kind": "distribution", "url": "http://registry:5000", "interval": "30s",
         "probes": [{"image": "library/alpine:3.20", "mirror": "http://cache:5000"}]},
        {"name": "harbor", "kind": "harbor", "url": "https://harbor.example.com", "username": "robot$mon",
         "password_file": "/run/secrets/harbor", "harbor": {"skip": ["gc"], "detail_interval": "10m"}},
        {"name": "nexus", "kind": "nexus", "url": "https://nexus.example.com",
         "nexus": {"docker_connectors": {"docker-hosted": "https://nexus.example.com:8082"}}},
        {"name": "art", "kind": "artifactory", "url": "https://art.example.com/artifactory",
         "artifactory": {"docker_repositories": ["docker-local"]}, "page_size": 5000},
        {"name": "dockerhub", "kind": "upstream", "url": "https://registry-1.docker.io",
         "upstream": {"image": "library/alpine@sha256:" + "a" * 64}},
    ],
    "storage": [{"name": "data", "path": "/var/lib/registry", "interval": "1m"}],
    "auth_logs": [{"name": "elk", "elasticsearch": {"url": "https://es:9200", "api_key_file": "/run/es"}}],
    "drill": {"textfile_dir": "/var/lib/node_exporter"},
}


def _set(path: str, value):
    def change(config: dict) -> None:
        *head, last = path.split(".")
        node = config
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is KeyError:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return change


BAD = {
    "nexus block on a distribution target": _set("targets.0.nexus", {}),
    "harbor block on a nexus target": _set("targets.2.harbor", {}),
    "upstream target without its block": _set("targets.4.upstream", KeyError),
    "unknown kind": _set("targets.0.kind", "quay"),
    "kind missing": _set("targets.0.kind", KeyError),
    "url ending in /v2/": _set("targets.0.url", "http://registry:5000/v2/"),
    "url ending in /v2": _set("targets.1.url", "https://harbor.example.com/v2"),
    "mirror ending in /v2": _set("targets.0.probes.0.mirror", "http://cache:5000/v2"),
    "connector ending in /v2": _set("targets.2.nexus.docker_connectors.docker-hosted", "https://n:8082/v2/"),
    "credentials in a url": _set("targets.0.url", "http://bob:pw@registry:5000"),
    "credentials in the debug url": _set("targets.0.debug_url", "http://bob@registry:5001"),
    "not http": _set("targets.0.url", "ftp://registry"),
    "bare number duration": _set("targets.0.interval", 30),
    "bad duration": _set("targets.0.interval", "30 seconds"),
    "unknown key": _set("targets.0.colour", "red"),
    "literal password": _set("targets.1.password", "hunter2"),
    "page size too big": _set("targets.3.page_size", 10001),
    "page size zero": _set("targets.3.page_size", 0),
    "bad probe image": _set("targets.0.probes.0.image", "Library/Alpine"),
    "bad upstream image": _set("targets.4.upstream.image", "library/alpine@sha256:abc"),
    "bad name": _set("targets.0.name", "my hub"),
    "bad harbor group": _set("targets.1.harbor.skip", ["everything"]),
    "bad auth log format": _set("auth_logs.0.format", "json"),
    "top_n too big": _set("auth_logs.0.top_n", 101),
    "unknown drill key": _set("drill.dir", "/x"),
    "targets not a list": _set("targets", {"name": "hub"}),
}


def chart_config(config: dict) -> dict:
    """The same config as chart values: storage entries carry the volume the chart mounts."""
    values = copy.deepcopy(config)
    for entry in values.get("storage", []):
        entry["volume"] = {"persistentVolumeClaim": {"claimName": "registry-data"}}
    return values


def schema_accepts(config: dict) -> bool:
    schema = json.loads(SCHEMA_FILE.read_text())["properties"]["config"]
    return jsonschema.Draft7Validator(schema).is_valid(chart_config(config))


def regwatch_accepts(config: dict) -> bool:
    try:
        Config.model_validate(config)
    except ValidationError:
        return False
    return True


def test_the_good_config_passes_both():
    assert regwatch_accepts(GOOD) and schema_accepts(GOOD)


@pytest.mark.parametrize("mistake", BAD)
def test_schema_and_regwatch_both_refuse(mistake):
    config = copy.deepcopy(GOOD)
    BAD[mistake](config)
    assert (regwatch_accepts(config), schema_accepts(config)) == (False, False)


def test_daemonset_sources_are_file_sources():
    schema = json.loads(SCHEMA_FILE.read_text())
    sources = schema["properties"]["logs"]["properties"]["daemonset"]["properties"]["sources"]
    validator = jsonschema.Draft7Validator(sources)
    assert validator.is_valid([{"name": "registry", "path": "/var/log/containers/registry-*.log",
                                "format": "distribution"}])
    assert not validator.is_valid([{"name": "registry"}])
    assert not validator.is_valid([{"name": "elk", "elasticsearch": {"url": "https://es:9200"}}])


def test_a_config_type_the_generator_does_not_know_fails_generation():
    from typing import Annotated

    from pydantic import BaseModel, BeforeValidator

    class New(BaseModel):
        when: Annotated[str, BeforeValidator(str.strip)]

    with pytest.raises(helm_schema.SchemaError, match="no JSON schema for the validator str.strip"):
        helm_schema.model_schema(New)
