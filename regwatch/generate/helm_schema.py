"""The config part of the Helm chart's ``values.schema.json``, written from regwatch's pydantic model.

``make generate`` runs ``python -m regwatch.generate.helm_schema helm/regwatch/values.schema.json``:
it replaces ``properties.config`` (and ``logs.daemonset.sources``, which are ``auth_logs`` entries)
and keeps every other part of the file as it is. tests/test_helm_schema.py fails when the committed
file differs from this output, and checks that the schema and regwatch agree on sample configs.

What the chart adds to the model: ``passwordSecret``/``tokenSecret``/``apiKeySecret`` (an existing
Secret the chart mounts, turned into ``*_file`` by templates/_helpers.tpl) beside each ``*_file``
key, and ``volume`` on storage entries. What it leaves out: ``listen`` (the chart sets it from
``containerPort``). Targets are one object whose ``kind`` decides which options block it may
carry (``if``/``then`` per kind), as the model's discriminated union does.

The schema is draft-07 with everything inline, which Helm 3 (gojsonschema) and Helm 4
(santhosh-tekuri/jsonschema) both read.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from regwatch import config as model
from regwatch.atomic import write_atomic
from regwatch.oci import DIGEST_RE, REPOSITORY_RE, TAG_RE

SCHEMA_FILE = Path("helm/regwatch/values.schema.json")

DURATION = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d|w|y))+$"}
# http(s), a host, no userinfo (no @ before the first /).
URL = {"type": "string", "pattern": "^https?://[^/@?#]+([/?#].*)?$"}
# A registry's base URL: also not its /v2 API root (regwatch adds /v2/ itself).
REGISTRY_URL = {**URL, "not": {"pattern": "/v2/?$"}}
IMAGE = {"type": "string",
         "pattern": f"^{REPOSITORY_RE.pattern}(:{TAG_RE.pattern}|@({DIGEST_RE.pattern}))?$"}

# What a BeforeValidator of the model checks, as JSON schema. A validator missing here is an error
# at generation time, so a new config type cannot slip into the chart unchecked.
VALIDATOR_SCHEMAS: dict[Any, dict] = {
    model.parse_duration: DURATION,
    model._check_path: {"type": "string", "minLength": 1},
    model._check_url: URL,
    model._check_registry_url: REGISTRY_URL,
    model._check_image: IMAGE,
}

SECRET_REF = {
    "type": "object", "additionalProperties": False,
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                   "key": {"type": "string", "minLength": 1}},
    "required": ["name", "key"],
    "description": "An existing Secret and the key holding the value; mounted as a file.",
}
# templates/_helpers.tpl "regwatch.secretKinds": the chart key beside each *_file key.
SECRET_REFS = {"password_file": "passwordSecret", "token_file": "tokenSecret", "api_key_file": "apiKeySecret"}

STORAGE_VOLUME = {"type": "object", "minProperties": 1,
                  "description": "A Kubernetes volume source, mounted read-only at path."}


class SchemaError(Exception):
    """The model has a type this generator cannot express; extend VALIDATOR_SCHEMAS or type_schema."""


def _describe(cls: type) -> str | None:
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else None


def _constraints(schema: dict, metadata: list) -> dict:
    """Field constraints (annotated_types' Ge, Le, MaxLen..., pydantic's pattern) as JSON schema keywords."""
    integer, string = schema.get("type") == "integer", schema.get("type") == "string"
    for meta in metadata:
        if isinstance(meta, BeforeValidator):
            if meta.func not in VALIDATOR_SCHEMAS:
                raise SchemaError(f"no JSON schema for the validator {meta.func.__qualname__}")
            schema.clear()
            schema.update(VALIDATOR_SCHEMAS[meta.func])
            continue
        found = {name: getattr(meta, name) for name in ("ge", "gt", "le", "lt", "max_length", "min_length", "pattern")
                 if getattr(meta, name, None) is not None}
        if not found:
            raise SchemaError(f"no JSON schema for the constraint {meta!r}")
        for name, value in found.items():
            if name == "ge":
                schema["minimum"] = value
            elif name == "gt":
                schema.update({"minimum": value + 1} if integer else {"exclusiveMinimum": value})
            elif name == "le":
                schema["maximum"] = value
            elif name == "lt":
                schema.update({"maximum": value - 1} if integer else {"exclusiveMaximum": value})
            elif name == "max_length":
                schema["maxLength" if string else "maxItems"] = value
            elif name == "min_length":
                schema["minLength" if string else "minItems"] = value
            else:
                schema["pattern"] = value
    return schema


def type_schema(tp: Any, metadata: list | None = None) -> dict:
    """The JSON schema of one annotation of the model (with its field constraints)."""
    metadata = list(metadata or [])
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *extra = get_args(tp)
        union = [m for m in extra if isinstance(m, FieldInfo) and m.discriminator]
        if union:
            return targets_schema(get_args(inner))
        field_meta: list = []
        for m in extra:
            field_meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
        return type_schema(inner, field_meta + metadata)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:  # X | None: the chart writes no nulls
            return type_schema(args[0], metadata)
        raise SchemaError(f"no JSON schema for the union {tp}")
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is list:
        return _constraints({"type": "array", "items": type_schema(get_args(tp)[0])}, metadata)
    if origin is dict:
        value = get_args(tp)[1]
        schema: dict = {"type": "object"}
        if value is not Any:
            schema["additionalProperties"] = type_schema(value)
        return schema
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_schema(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return _constraints({"type": "integer"}, metadata)
    if tp is float:
        return _constraints({"type": "number"}, metadata)
    if tp is str:
        return _constraints({"type": "string"}, metadata)
    if tp is Path:
        return _constraints({"type": "string"}, metadata)
    raise SchemaError(f"no JSON schema for {tp!r}")


def field_schema(field: FieldInfo) -> dict:
    return type_schema(field.annotation, field.metadata)


def _properties(cls: type[BaseModel], skip: tuple[str, ...] = ()) -> dict:
    props: dict = {}
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        props[name] = field_schema(field)
        if name in SECRET_REFS:
            props[SECRET_REFS[name]] = dict(SECRET_REF)
    return props


def model_schema(cls: type[BaseModel], skip: tuple[str, ...] = ()) -> dict:
    schema: dict = {"type": "object", "additionalProperties": False}
    description = _describe(cls)
    if description:
        schema["description"] = description
    schema["properties"] = _properties(cls, skip)
    required = [name for name, f in cls.model_fields.items() if f.is_required() and name not in skip]
    if required:
        schema["required"] = required
    return schema


def targets_schema(members: tuple[type[BaseModel], ...]) -> dict:
    """One object for every kind: the common keys, every kind's block, and per kind which blocks it may
    carry (the model's discriminated union on ``kind``)."""
    kinds = [model.kind_of(m) for m in members]
    schema = model_schema(model.TargetConfig)
    schema["description"] = ("A registry to watch. kind decides the collector and the one options block "
                             "the target may carry (harbor, nexus, artifactory or upstream).")
    schema["properties"]["kind"] = {"enum": kinds}
    blocks = {}
    for member in members:
        for name, field in member.model_fields.items():
            if name not in model.TargetConfig.model_fields:
                blocks[name] = (member, field)
    for name, (_, field) in blocks.items():
        schema["properties"][name] = field_schema(field)
    rules = []
    for member, kind in zip(members, kinds, strict=True):
        own = [n for n, (m, _) in blocks.items() if m is member]
        then: dict = {"properties": {n: False for n in blocks if n not in own}}
        required = [n for n in own if member.model_fields[n].is_required()]
        if required:
            then["required"] = required
        rules.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": then})
    schema["allOf"] = rules
    return schema


def config_schema() -> dict:
    """``properties.config`` of values.schema.json."""
    props = _properties(model.Config, skip=("listen",))
    storage = props["storage"]["items"]
    storage["properties"]["path"] = {"type": "string", "pattern": "^/"}  # a mount path in the pod
    storage["properties"]["volume"] = dict(STORAGE_VOLUME)
    storage["required"] = [*storage.get("required", []), "volume"]
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "The regwatch config without secrets (docs/configuration.md); listen comes from "
                           "containerPort."}


def daemonset_sources_schema() -> dict:
    """``logs.daemonset.sources``: auth_logs entries that tail log files on the node. The DaemonSet mounts
    no Secrets and runs on every node, so an Elasticsearch source belongs in config.auth_logs."""
    schema = model_schema(model.AuthLogConfig, skip=("elasticsearch",))
    schema["required"] = [*schema.get("required", []), "path"]
    return {"type": "array", "items": schema}


def render(current: str) -> str:
    """The whole values.schema.json: ``current`` with its config parts replaced."""
    values = json.loads(current)
    values["properties"]["config"] = config_schema()
    daemonset = values["properties"]["logs"]["properties"]["daemonset"]["properties"]
    daemonset["sources"] = daemonset_sources_schema()
    return json.dumps(values, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SCHEMA_FILE
    write_atomic(path, render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
