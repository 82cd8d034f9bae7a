"""The regwatch config file: strict schema, defaults in one place, every problem reported at once.

Loading is two passes. Pydantic checks shape and types (unknown keys are errors); a second
pass checks what needs the whole file or the outside world (duplicate names, secret files and
environment variables). Both produce ``Problem``s with a key path such as
``targets[0].password_file``. A problem message never contains a secret value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

DEFAULT_LISTEN = "0.0.0.0:9732"

# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any) -> float:
    """Parse a Prometheus-style duration (``30s``, ``1h30m``, ``500ms``) into seconds."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        raise ValueError(f"duration {value!r} needs a unit, e.g. {value}s")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; use a number and a unit (ms, s, m, h, d), e.g. 30s")
    if total <= 0:
        raise ValueError("duration must be greater than zero")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a URL such as http://127.0.0.1:5000")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://registry.example.com")
    if parts.username or parts.password:
        # Never let a credential ride in a URL: it would end up in logs and labels.
        raise ValueError("must not contain credentials; use username with password_file or password_env")
    return value.rstrip("/")


Url = Annotated[str, BeforeValidator(_check_url)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, hide_input_in_errors=True)


# --------------------------------------------------------------------------- secrets


class SecretRefs(Strict):
    """Where a secret comes from. A literal secret in the file is not allowed."""

    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    def secret(self, kind: str) -> str | None:
        """The resolved value of ``kind`` (password, token, api_key), or None."""
        return self._secrets.get(kind)


_SECRET_KINDS = ("password", "token", "api_key")


def _resolve_secrets(model: SecretRefs, path: str, problems: list[Problem]) -> None:
    for kind in _SECRET_KINDS:
        file_key, env_key = f"{kind}_file", f"{kind}_env"
        file_value = getattr(model, file_key, None)
        env_value = getattr(model, env_key, None)
        if file_value is not None and env_value is not None:
            problems.append(Problem(f"{path}{file_key}", f"set only one of {file_key} and {env_key}"))
            continue
        if file_value is not None:
            try:
                model._secrets[kind] = Path(file_value).read_text().strip()
            except OSError as exc:
                problems.append(
                    Problem(f"{path}{file_key}", f"cannot read secret file {file_value}: {exc.strerror or exc}")
                )
        elif env_value is not None:
            if env_value not in os.environ:
                problems.append(Problem(f"{path}{env_key}", f"environment variable {env_value} is not set"))
            else:
                model._secrets[kind] = os.environ[env_value]


# --------------------------------------------------------------------------- sections


class TLSConfig(Strict):
    ca_file: Path | None = None
    insecure_skip_verify: bool = False


class ProbeConfig(Strict):
    image: str = Field(pattern=r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?$")
    interval: Duration = 30.0
    timeout: Duration = 10.0
    # "manifest" resolves the tag only (cheap, for frequent probing); "full" also pulls config and layers.
    mode: Literal["manifest", "full"] = "full"
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    platform: str = Field(default="linux/amd64", pattern=r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
    # Pull through this endpoint (pull-through cache, Harbor proxy project, P2P proxy) instead of the target URL.
    mirror: Url | None = None
    reuse_connections: bool = False


HARBOR_GROUPS = ("health", "projects", "storage", "replication", "gc", "scans", "jobservice", "robots",
                 "members", "signatures", "audit")


class HarborConfig(Strict):
    """Harbor-specific options (regwatch/collectors/harbor, docs/harbor.md)."""

    # Metric groups not to collect at all (each group is its own collector job).
    skip: list[Literal[HARBOR_GROUPS]] = Field(default_factory=list)  # type: ignore[valid-type]
    # Interval of the groups that need one call per project or repository (members, signatures).
    detail_interval: Duration = 300.0
    # Per-project/per-repository calls made per collection at most; the rest wait for the next one,
    # so a 10,000-project Harbor is visited a slice at a time instead of all at once.
    detail_calls_per_cycle: int = Field(default=200, ge=1, le=100000)
    # A collection of one group may take this long before it counts as failed (many pages at 20 ms each).
    collection_timeout: Duration = 300.0
    # Where the audit-log high-water mark is kept across restarts (no double counting); memory only if unset.
    audit_state_file: Path | None = None
    # On a fresh start with no state: count only audit events newer than this (not the whole history).
    audit_lookback: Duration = 3600.0


class NexusConfig(Strict):
    """Nexus-specific options (regwatch/collectors/nexus.py, docs/nexus-artifactory.md)."""

    # Docker repository name -> its Docker connector URL (http(s)://host:port, the port or
    # subdomain connector configured on that repository), read through the registry v2 API.
    docker_connectors: dict[str, Url] = Field(default_factory=dict)


class ArtifactoryConfig(Strict):
    """Artifactory-specific options (regwatch/collectors/artifactory.py, docs/nexus-artifactory.md)."""

    # Docker repository keys read through /api/docker/<key>/v2/; empty: every local Docker
    # repository listed by /api/repositories.
    docker_repositories: list[str] = Field(default_factory=list)


class TargetConfig(SecretRefs):
    name: Name
    kind: Literal["distribution", "harbor", "nexus", "artifactory"]
    url: Url
    debug_url: Url | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    token_file: Path | None = None
    token_env: str | None = None
    api_key_file: Path | None = None
    api_key_env: str | None = None
    tls: TLSConfig = Field(default_factory=TLSConfig)
    interval: Duration = 60.0
    timeout: Duration = 10.0
    probes: list[ProbeConfig] = Field(default_factory=list)
    # Page size for _catalog and tags/list; Harbor answers 422 above 100.
    page_size: int = Field(default=100, ge=1, le=10000)
    # Requests in flight at once against this target.
    concurrency: int = Field(default=4, ge=1, le=64)
    # Per-repository series are unbounded: off unless asked for.
    per_repository_metrics: bool = False
    # Options of kind: harbor targets (ignored by other kinds).
    harbor: HarborConfig = Field(default_factory=lambda: HarborConfig())
    # Options of kind: nexus / kind: artifactory targets (ignored by other kinds).
    nexus: NexusConfig = Field(default_factory=lambda: NexusConfig())
    artifactory: ArtifactoryConfig = Field(default_factory=lambda: ArtifactoryConfig())


class StorageConfig(Strict):
    name: Name
    path: Path
    interval: Duration = 30.0


class ElasticsearchConfig(SecretRefs):
    url: Url
    index: str = "logs-*,filebeat-*"
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    api_key_file: Path | None = None
    api_key_env: str | None = None
    tls: TLSConfig = Field(default_factory=TLSConfig)
    # Extra query clauses (Elasticsearch query DSL) that select attempts and failures; ECS defaults otherwise.
    attempts_query: dict[str, Any] | None = None
    failures_query: dict[str, Any] | None = None
    timestamp_field: str = "@timestamp"
    overlap: Duration = 300.0
    timeout: Duration = 10.0
    # One collection reads at most max_pages pages per query and stops at deadline; what is left is
    # read by the next collection (a cluster that pages forever cannot keep the collector busy).
    max_pages: int = Field(default=100, ge=1, le=10_000)
    deadline: Duration = 60.0
    # Which official client major talks to the cluster: "auto" reads the version from GET / (needs the
    # monitor cluster privilege); 8 uses the 8.x client (elasticsearch8 or elasticsearch<9), 9 the 9.x one.
    client_major: Literal["auto", 8, 9] = "auto"


class AuthLogConfig(Strict):
    name: Name
    path: str | None = None
    format: Literal["distribution", "harbor-core", "harbor-proxy", "nginx", "auto"] = "auto"
    positions_file: Path | None = None
    start_at: Literal["end", "beginning"] = "end"
    elasticsearch: ElasticsearchConfig | None = None
    # Elasticsearch: how often to query. Files are followed as they are written; their counters
    # reach /metrics within a second whatever this says.
    interval: Duration = 15.0
    # Per-user / per-client breakdown is unbounded cardinality: off unless a top-N is given.
    top_n: int = Field(default=0, ge=0, le=100)
    # Where the per-client label comes from: "logged" is the address the server logged (Distribution
    # and Harbor core take it from X-Forwarded-For, which any client can set); "connection" is the
    # connection's own peer, which only access logs (nginx, harbor-proxy) carry.
    client_address: Literal["logged", "connection"] = "logged"


class DrillConfig(Strict):
    textfile_dir: Path | None = None
    # serve exposes the last drill's metrics when pointed at the directory holding report.json.
    report_dir: Path | None = None


class Config(Strict):
    listen: str = Field(default=DEFAULT_LISTEN, pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):\d{1,5}$")
    targets: list[TargetConfig] = Field(default_factory=list)
    storage: list[StorageConfig] = Field(default_factory=list)
    auth_logs: list[AuthLogConfig] = Field(default_factory=list)
    drill: DrillConfig = Field(default_factory=DrillConfig)

    def target(self, name: str) -> TargetConfig | None:
        return next((t for t in self.targets if t.name == name), None)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The config is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the config:\n{lines}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: dict) -> str:
    kind = err["type"]
    key = err["loc"][-1] if err["loc"] else ""
    if kind == "extra_forbidden":
        if isinstance(key, str) and key in _SECRET_KINDS:
            return f"literal secrets are not allowed; use {key}_file or {key}_env"
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch":
        return "has characters or a shape that is not allowed here"
    if kind == "literal_error":
        return err["msg"].replace("Input should be", "must be")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg.replace("Input should be", "must be")


def _duplicate_names(data: dict) -> list[Problem]:
    problems: list[Problem] = []
    for section in ("targets", "storage", "auth_logs"):
        items = data.get(section)
        if not isinstance(items, list):
            continue
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            if name in first:
                problems.append(Problem(f"{section}[{i}].name", f"duplicate name {name!r} (also {section}[{first[name]}])"))
            else:
                first[name] = i
    return problems


def _raw_secret_checks(data: dict) -> list[Problem]:
    """Secret problems found on the raw data, so they are reported even when the shape is wrong too."""
    problems: list[Problem] = []
    holders: list[tuple[str, Any]] = [(f"targets[{i}].", t) for i, t in enumerate(data.get("targets") or [])
                                      if isinstance(data.get("targets"), list)]
    for i, source in enumerate(data.get("auth_logs") or [] if isinstance(data.get("auth_logs"), list) else []):
        if isinstance(source, dict) and isinstance(source.get("elasticsearch"), dict):
            holders.append((f"auth_logs[{i}].elasticsearch.", source["elasticsearch"]))
    for path, raw in holders:
        if not isinstance(raw, dict):
            continue
        probe = SecretRefs.model_construct()
        for kind in _SECRET_KINDS:
            for suffix in ("_file", "_env"):
                object.__setattr__(probe, kind + suffix, raw.get(kind + suffix))
        _resolve_secrets(probe, path, problems)
    return problems


def _semantic_checks(config: Config, data: dict) -> list[Problem]:
    problems = _duplicate_names(data)
    for i, target in enumerate(config.targets):
        _resolve_secrets(target, f"targets[{i}].", problems)
        if target.tls.ca_file is not None and not target.tls.ca_file.is_file():
            problems.append(Problem(f"targets[{i}].tls.ca_file", f"no such file: {target.tls.ca_file}"))
        if (target.password_file or target.password_env) and not target.username:
            problems.append(Problem(f"targets[{i}].username", "a password is set but no username"))
        # The same image may be probed directly and through a mirror: those are different series (endpoint label).
        probes = [(p.image, p.mirror) for p in target.probes]
        for j, (image, mirror) in enumerate(probes):
            if probes.index((image, mirror)) != j:
                via = f" through {mirror}" if mirror else ""
                problems.append(Problem(f"targets[{i}].probes[{j}].image", f"duplicate probe image {image!r}{via}"))
    for i, source in enumerate(config.auth_logs):
        if (source.path is None) == (source.elasticsearch is None):
            problems.append(Problem(f"auth_logs[{i}]", "set exactly one of path and elasticsearch"))
        if source.elasticsearch is not None:
            _resolve_secrets(source.elasticsearch, f"auth_logs[{i}].elasticsearch.", problems)
    return problems


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML data; raises ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", "the config must be a YAML mapping (key: value) at the top level")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [Problem(_loc_to_path(e["loc"]), _message(e)) for e in exc.errors()]
        seen = {p.path for p in problems}
        extra = [p for p in _duplicate_names(data) + _raw_secret_checks(data) if p.path not in seen]
        raise ConfigError(source, problems + extra) from None
    problems = _semantic_checks(config, data)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a config file; raises ConfigError (with every problem) on any mistake."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read config file: {exc.strerror or exc}")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", f"invalid YAML: {where}{problem}")]) from None
    return parse_config(data, source)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
