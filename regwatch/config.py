"""The regwatch config file: strict schema, defaults in one place, every problem reported at once.

Loading is two passes. Pydantic checks shape and types (unknown keys are errors; targets are a
discriminated union on ``kind``, each kind with its own options block); a second pass checks what
needs the whole file or the outside world (names that would collide on a label, shared state files,
secret files and environment variables, CA files). Both produce ``Problem``s with a key path such as
``targets[0].password_file`` and a message in plain words (``_message`` has words for every pydantic
error type a config can reach; tests/test_config_messages.py walks every key to prove it). A problem
message never contains a secret value. What is not wrong but will not work here yet (a storage path
that does not exist) is a warning (``Config.warnings``), not a problem.

URLs given on the command line go through ``check_cli_url``, the same userinfo rule as the config's.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo

from regwatch.oci import BadName
from regwatch.oci import split_image as oci_split_image

DEFAULT_LISTEN = "0.0.0.0:9732"

# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any) -> float:
    """Parse a Prometheus-style duration (``30s``, ``1h30m``, ``500ms``) into seconds."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError("must be a duration greater than zero, such as 30s")
        raise ValueError(f"duration {value!r} needs a unit, e.g. {value}s")
    text = value.strip()
    if not text:
        raise ValueError("is empty; give a duration such as 30s, 5m or 1h")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
        raise ValueError(f"{shown} is not a duration; use a number and a unit (ms, s, m, h, d), e.g. 30s")
    if total <= 0:
        raise ValueError("duration must be greater than zero")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _authority(value: str) -> str:
    """The host part of a URL or of an image reference as typed (``host:5000/repo``): before the first /."""
    rest = value.split("://", 1)[1] if "://" in value else value
    return rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]


def _has_userinfo(value: str) -> bool:
    """user[:password]@ anywhere it could be: in the host part, or after a / that a password may hold (RFC
    3986 forbids it there, so the / ends the host). Only an @digest at the end is an image reference."""
    if "@" not in value:
        return False
    tail = value.rsplit("@", 1)[1]
    return not (tail.startswith(("sha256:", "sha512:")) and "@" not in _authority(value.rsplit("@", 1)[0] + "/"))


class CredentialsInURL(ValueError):
    """A URL or image reference with user:password@ in it; the message names no part of the credentials."""


def check_cli_url(value: str, option: str | None = None) -> str:
    """Refuse a URL or image reference given on the command line (``--source``, ``--dest``, ``--against``,
    ``--pushgateway``, probe ``REF``) that carries credentials: they would end up in logs, reports, the
    process list and shell history. Returns ``value`` unchanged otherwise (a target name passes too)."""
    if not isinstance(value, str) or not _has_userinfo(value):
        return value
    authority = _authority(value)
    host = authority.rsplit("@", 1)[1] if "@" in authority else None
    scheme, rest = value.split("://", 1) if "://" in value else ("", value)
    where = f"{option}: " if option else ""
    write = (f"write {scheme + '://' if scheme else ''}{rest[len(authority) - len(host):]}" if host
             else "write the URL without user:password@")
    raise CredentialsInURL(
        f"{where}credentials in a URL are refused (they would show in logs, reports and the process list); "
        f"{write} and give the credentials with REGWATCH_USERNAME and REGWATCH_PASSWORD, "
        f"a target's username and password_file in --config, or docker login {host or 'HOST'}")


def _check_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a URL such as http://127.0.0.1:5000")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://registry.example.com")
    if _has_userinfo(value):
        # Never let a credential ride in a URL: it would end up in logs and labels.
        raise ValueError("must not contain credentials; use username with password_file or password_env")
    return value.rstrip("/")


Url = Annotated[str, BeforeValidator(_check_url)]


def _check_registry_url(value: Any) -> str:
    """A registry's base URL: what /v2/ is appended to. Pasting the API root gives /v2/v2/ later."""
    url = _check_url(value)
    parts = urlsplit(url)
    if parts.path.endswith("/v2"):
        base = parts._replace(path=parts.path[:-len("/v2")], query="", fragment="").geturl()
        raise ValueError(f"ends in /v2, but url is the registry's base URL (regwatch adds /v2/ itself): "
                         f"use {base}")
    return url


RegistryUrl = Annotated[str, BeforeValidator(_check_registry_url)]


def split_image(image: Any) -> tuple[str, str]:
    """``repo:tag`` / ``repo@digest`` / ``repo`` -> (repository, tag or digest; ``latest`` when none is
    given), checked against the distribution-spec grammar (regwatch/oci.py)."""
    if not isinstance(image, str) or not image:
        raise ValueError("must be an image such as library/alpine:3.20 (repository, then :tag or @digest)")
    try:
        return oci_split_image(image)
    except BadName as exc:
        raise ValueError(f"{exc}; write the image as repository:tag or repository@digest, "
                         "e.g. library/alpine:3.20") from None


def _check_image(value: Any) -> str:
    split_image(value)
    return value


Image = Annotated[str, BeforeValidator(_check_image)]


def _check_path(value: Any) -> Any:
    # Path("") is ".", the working directory: an empty path is a mistake, not a place.
    if value == "":
        raise ValueError("is empty; give a path, or leave the key out")
    return value


FilePath = Annotated[Path, BeforeValidator(_check_path)]
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


# A secret is a password, token or key: far below this. A bigger file is the wrong file (or /dev/zero).
MAX_SECRET_BYTES = 64 * 1024

_CONTROL_NAMES = {"\n": "a line feed (newline)", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL byte"}


def _control_character(secret: str) -> str | None:
    """The first control character of ``secret``, in words (never the secret), or None. An HTTP header
    cannot carry one, and requests would put the header value (the secret) into its error text."""
    for char in secret:
        if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
            return _CONTROL_NAMES.get(char, f"the control character U+{ord(char):04X}")
    return None


def _read_secret_file(path: Path) -> str:
    """The secret in ``path``: one trailing line end (echo, editors, kubectl) is not part of it. Raises
    ValueError with a message that never holds the secret."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"secret file {path} is larger than {MAX_SECRET_BYTES // 1024} KiB; point it at the file "
                         "that holds only the secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"secret file {path} is empty")
    bad = _control_character(text)
    if bad:
        raise ValueError(f"the secret in {path} holds {bad}, which no HTTP header can carry; remove it "
                         "(one line end at the end of the file is fine)")
    return text


def _read_secret_env(name: str) -> str:
    if name not in os.environ:
        raise ValueError(f"environment variable {name} is not set")
    text = os.environ[name]
    if not text:
        raise ValueError(f"environment variable {name} is empty")
    bad = _control_character(text)
    if bad:
        raise ValueError(f"environment variable {name} holds {bad}, which no HTTP header can carry; remove it")
    return text


def _resolve_secrets(model: SecretRefs, path: str, problems: list[Problem]) -> None:
    for kind in _SECRET_KINDS:
        file_key, env_key = f"{kind}_file", f"{kind}_env"
        file_value = getattr(model, file_key, None)
        env_value = getattr(model, env_key, None)
        if file_value is not None and env_value is not None:
            problems.append(Problem(f"{path}{file_key}", f"set only one of {file_key} and {env_key}"))
            continue
        try:
            if file_value is not None:
                model._secrets[kind] = _read_secret_file(Path(file_value))
            elif env_value is not None:
                model._secrets[kind] = _read_secret_env(env_value)
        except ValueError as exc:
            problems.append(Problem(f"{path}{file_key if file_value is not None else env_key}", str(exc)))


# --------------------------------------------------------------------------- sections


class TLSConfig(Strict):
    ca_file: FilePath | None = None
    insecure_skip_verify: bool = False


class ProbeConfig(Strict):
    image: Image
    interval: Duration = 30.0
    timeout: Duration = 10.0
    # "manifest" resolves the tag only (cheap, for frequent probing); "full" also pulls config and layers.
    mode: Literal["manifest", "full"] = "full"
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    platform: str = Field(default="linux/amd64", pattern=r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")
    # Pull through this endpoint (pull-through cache, Harbor proxy project, P2P proxy) instead of the target URL.
    mirror: RegistryUrl | None = None
    reuse_connections: bool = False


HARBOR_GROUPS = ("health", "projects", "storage", "replication", "gc", "scans", "jobservice", "robots",
                 "members", "signatures", "audit", "retention", "preheat", "artifacts")


class HarborConfig(Strict):
    """Harbor-specific options (regwatch/collectors/harbor, docs/harbor.md)."""

    # Metric groups not to collect at all (each group is its own collector job).
    skip: list[Literal[HARBOR_GROUPS]] = Field(default_factory=list)  # type: ignore[valid-type]
    # Interval of the groups that need one call per project or repository (members, signatures, retention,
    # preheat, artifacts).
    detail_interval: Duration = 300.0
    # Per-project/per-repository calls made per collection at most; the rest wait for the next one,
    # so a 10,000-project Harbor is visited a slice at a time instead of all at once.
    detail_calls_per_cycle: int = Field(default=200, ge=1, le=100000)
    # A collection of one group may take this long before it counts as failed (many pages at 20 ms each).
    collection_timeout: Duration = 300.0
    # Where the audit-log high-water mark is kept across restarts (no double counting); memory only if unset.
    audit_state_file: FilePath | None = None
    # On a fresh start with no state: count only audit events newer than this (not the whole history).
    audit_lookback: Duration = 3600.0


class NexusConfig(Strict):
    """Nexus-specific options (regwatch/collectors/nexus.py, docs/nexus-artifactory.md)."""

    # Docker repository name -> its Docker connector URL (http(s)://host:port, the port or
    # subdomain connector configured on that repository), read through the registry v2 API.
    docker_connectors: dict[str, RegistryUrl] = Field(default_factory=dict)


class ArtifactoryConfig(Strict):
    """Artifactory-specific options (regwatch/collectors/artifactory.py, docs/nexus-artifactory.md)."""

    # Docker repository keys read through /api/docker/<key>/v2/; empty: every local Docker
    # repository listed by /api/repositories.
    docker_repositories: list[str] = Field(default_factory=list)


# Distribution answers 400 PAGINATION_NUMBER_INVALID above catalog.maxentries (default 1000; 3.1.0 also
# above tags.maxtags): the default stays under it, and the client falls back to it when a larger
# configured page_size is refused.
DISTRIBUTION_MAX_PAGE = 1000


class UpstreamConfig(Strict):
    """kind: upstream options: the manifest regwatch HEADs to read the upstream's pull rate limit."""

    # repository[:tag] or repository@digest on the upstream, e.g. library/alpine:latest (a HEAD of a
    # manifest does not count against Docker Hub's pull limit; a GET would).
    image: Image

    @property
    def repository(self) -> str:
        return split_image(self.image)[0]

    @property
    def reference(self) -> str:
        """The tag (``latest`` when none is given) or digest to HEAD."""
        return split_image(self.image)[1]


TARGET_KINDS = ("distribution", "harbor", "nexus", "artifactory", "upstream")
# The options block each kind may carry; a block on another kind is an error.
KIND_BLOCKS = {"harbor": "harbor", "nexus": "nexus", "artifactory": "artifactory", "upstream": "upstream"}


class TargetConfig(SecretRefs):
    """What every target has, whatever its kind; each kind below adds its own options block."""

    name: Name
    kind: str
    url: RegistryUrl
    debug_url: Url | None = None
    username: str | None = None
    password_file: FilePath | None = None
    password_env: str | None = None
    token_file: FilePath | None = None
    token_env: str | None = None
    api_key_file: FilePath | None = None
    api_key_env: str | None = None
    tls: TLSConfig = Field(default_factory=TLSConfig)
    interval: Duration = 60.0
    timeout: Duration = 10.0
    probes: list[ProbeConfig] = Field(default_factory=list)
    # Page size for _catalog, tags/list and list APIs. Harbor answers 422 above 100; Distribution
    # 400 above 1000 (DISTRIBUTION_MAX_PAGE), where the client falls back to the registry's limit.
    page_size: int = Field(default=100, ge=1, le=10000)
    # Requests in flight at once against this target.
    concurrency: int = Field(default=4, ge=1, le=64)
    # Per-repository series are unbounded: off unless asked for.
    per_repository_metrics: bool = False


class DistributionTarget(TargetConfig):
    """A Docker Distribution (registry:2, registry:3) or any plain OCI registry."""

    kind: Literal["distribution"]


class HarborTarget(TargetConfig):
    kind: Literal["harbor"]
    harbor: HarborConfig = Field(default_factory=lambda: HarborConfig())


class NexusTarget(TargetConfig):
    kind: Literal["nexus"]
    nexus: NexusConfig = Field(default_factory=lambda: NexusConfig())


class ArtifactoryTarget(TargetConfig):
    kind: Literal["artifactory"]
    artifactory: ArtifactoryConfig = Field(default_factory=lambda: ArtifactoryConfig())


class UpstreamTarget(TargetConfig):
    """An upstream registry (Docker Hub, say) whose pull rate limit is read with HEAD requests only.
    Its credentials are the account the pull-through cache uses upstream: the limit is per account."""

    kind: Literal["upstream"]
    upstream: UpstreamConfig


KIND_MODELS: dict[str, type[TargetConfig]] = {
    "distribution": DistributionTarget, "harbor": HarborTarget, "nexus": NexusTarget,
    "artifactory": ArtifactoryTarget, "upstream": UpstreamTarget}
AnyTarget = Annotated[DistributionTarget | HarborTarget | NexusTarget | ArtifactoryTarget | UpstreamTarget,
                      Field(discriminator="kind")]


class StorageConfig(Strict):
    name: Name
    path: FilePath
    interval: Duration = 30.0


class ElasticsearchConfig(SecretRefs):
    url: Url
    index: str = "logs-*,filebeat-*"
    username: str | None = None
    password_file: FilePath | None = None
    password_env: str | None = None
    api_key_file: FilePath | None = None
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
    positions_file: FilePath | None = None
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
    textfile_dir: FilePath | None = None
    # serve exposes the last drill's metrics when pointed at the directory holding report.json.
    report_dir: FilePath | None = None


_LISTEN_RE = re.compile(r"(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})")


def parse_listen(value: Any) -> str:
    """``listen`` and ``serve --listen``: a port (``9732``), ``:PORT`` (every address) or ``HOST:PORT``
    (``127.0.0.1:9732``, ``[::1]:9732``). A bare port becomes ``:PORT``."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _LISTEN_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(2)) > 65535:
        raise ValueError("must be a port or HOST:PORT, e.g. 9732, :9732 or 127.0.0.1:9732")
    host, port = match.group(1), match.group(2)
    return f"{host or ''}:{int(port)}"


Listen = Annotated[str, BeforeValidator(parse_listen)]


class Config(Strict):
    listen: Listen = DEFAULT_LISTEN
    targets: list[AnyTarget] = Field(default_factory=list)
    storage: list[StorageConfig] = Field(default_factory=list)
    auth_logs: list[AuthLogConfig] = Field(default_factory=list)
    drill: DrillConfig = Field(default_factory=DrillConfig)

    _warnings: list[Problem] = PrivateAttr(default_factory=list)

    def target(self, name: str) -> TargetConfig | None:
        return next((t for t in self.targets if t.name == name), None)

    @property
    def warnings(self) -> list[Problem]:
        """What is not wrong with the config but will not work here yet (a storage path that does not exist)."""
        return list(self._warnings)


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
        count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{source}: {count} in the config:\n{lines}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            break  # construct_mapping below reports "found unhashable key" with its line
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _unwrap(tp: Any) -> Any:
    """Strip ``X | None`` and plain ``Annotated`` wrappers; keep a discriminated union's ``Annotated``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            args = get_args(tp)
            if any(isinstance(meta, FieldInfo) and meta.discriminator for meta in args[1:]):
                return tp
            tp = args[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def kind_of(model: type[BaseModel]) -> str | None:
    """The ``kind`` a target model stands for (None for the common TargetConfig)."""
    field = model.model_fields.get("kind")
    args = get_args(field.annotation) if field is not None else ()
    return args[0] if args and isinstance(args[0], str) else None


@dataclass(frozen=True)
class _Where:
    path: str  # as the user writes it: targets[0].tls.ca_file (a union's tag is not shown)
    owner: type[BaseModel] | None  # the model the last key belongs to
    field: FieldInfo | None  # that key's field, if the model has it


def _walk(loc: tuple) -> _Where:
    """Follow a pydantic error location through the model, for the key path and the keys valid there."""
    tp: Any = Config
    path = ""
    owner: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for part in loc:
        tp = _unwrap(tp)
        owner, field = None, None
        origin = get_origin(tp)
        if _is_model(tp):
            owner = tp
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            path += ("." if path else "") + str(part)
            tp = (Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation) \
                if field is not None else None
        elif origin is Annotated:  # a discriminated union: this part is the tag, not a key
            members = get_args(get_args(tp)[0])
            tp = next((m for m in members if kind_of(m) == part), None)
        elif origin is list:
            path += f"[{part}]"
            tp = get_args(tp)[0]
        elif origin is dict:
            path += f".{part}"
            tp = get_args(tp)[1]
        else:
            path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
            tp = None
    return _Where(path, owner, field)


def _plural(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# Words people reach for that difflib cannot relate to the key they mean.
_SYNONYMS = {"type": "kind", "user": "username", "login": "username", "host": "url", "address": "url",
             "endpoint": "url", "registry": "url", "server": "url", "insecure": "tls", "verify": "tls",
             "ca": "tls", "cacert": "tls", "every": "interval", "period": "interval", "file": "path",
             "volume": "path", "mount": "path", "image": "probes"}


def _suggest(key: str, owner: type[BaseModel]) -> str | None:
    """The key the user probably meant: the same key one level down, a synonym, or a close spelling."""
    for name, field in owner.model_fields.items():
        inner = _unwrap(field.annotation)
        if _is_model(inner) and key in inner.model_fields:
            return f"{name}.{key}"
    valid = list(owner.model_fields)
    if key in _SYNONYMS and _SYNONYMS[key] in valid:
        return _SYNONYMS[key]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(key: Any, owner: type[BaseModel] | None) -> str:
    if isinstance(key, str) and key in _SECRET_KINDS:
        return f"literal secrets are not allowed; use {key}_file or {key}_env"
    kind = kind_of(owner) if owner is not None else None
    if kind is not None and key in KIND_BLOCKS.values():
        owners = [k for k, block in KIND_BLOCKS.items() if block == key]
        return f"unknown key for kind: {kind} ({key} options belong to kind: {_plural(owners)})"
    hint = _suggest(key, owner) if isinstance(key, str) and owner is not None else None
    return f"unknown key; did you mean {hint}?" if hint else "unknown key"


def _got(value: Any) -> str:
    """What the user wrote, by YAML type only: a value may be a secret, so it is never shown."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "something else"


# Why a key's pattern did not match, in words (string_pattern_mismatch names only the regex).
_PATTERN_WORDS = {
    "name": "must start with a letter or digit and hold only letters, digits, _ . : and - (at most 100)",
    "platform": "must be os/architecture or os/architecture/variant, e.g. linux/amd64 or linux/arm64/v8",
}

_KINDS_WORDS = _plural(list(TARGET_KINDS))


def _message(err: dict, where: _Where) -> str:
    """One pydantic error in plain words. Every error type a config can produce has its own line here
    (tests/test_config_messages.py walks every key with every YAML type to prove it)."""
    kind, ctx, loc = err["type"], err.get("ctx") or {}, err["loc"]
    key = loc[-1] if loc else ""
    got = _got(err.get("input"))
    if kind == "extra_forbidden":
        return _unknown_key(key, where.owner)
    if kind == "missing":
        if key == "upstream":
            return "required for kind: upstream: the manifest to HEAD, e.g. upstream: {image: library/alpine:latest}"
        return "required key is missing"
    if kind == "union_tag_not_found":
        return f"required key is missing; set it to {_KINDS_WORDS}"
    if kind == "union_tag_invalid":
        close = difflib.get_close_matches(str(ctx.get("tag")), TARGET_KINDS, n=1, cutoff=0.6)
        return f"must be {_KINDS_WORDS}" + (f"; did you mean {close[0]}?" if close else "")
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error") or err["msg"].removeprefix("Value error, "))
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(key, "has characters that are not allowed here")
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_too_short":
        return f"must be at least {ctx['min_length']} characters"
    if kind == "string_type":
        return f"must be text, got {got}"
    if kind == "int_from_float":
        return "must be a whole number, got a fraction"
    if kind in ("int_type", "int_parsing", "int_parsing_size"):
        return f"must be a whole number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "list_type":
        return f"must be a list (one '- ' entry per item), got {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (key: value lines), got {got}"
    if kind == "path_type":
        return f"must be a file path, got {got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "less_than":
        return f"must be less than {ctx['lt']}"
    return UNMAPPED + kind


# A pydantic error type this module has no words for; the message test fails on it.
UNMAPPED = "is not valid here: "


def _problems_of(exc: ValidationError, data: dict) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        where = _walk(err["loc"])
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            problems.append(Problem(f"{where.path}.kind", _message(err, where)))
            problems.extend(_common_target_problems(err["loc"], err.get("input")))
        else:
            problems.append(Problem(where.path, _message(err, where)))
    return problems


def _common_target_problems(loc: tuple, item: Any) -> list[Problem]:
    """A target whose kind is missing or wrong still gets every other key checked (all problems at once):
    the keys every kind has are checked as if it were a distribution target, its options blocks are not."""
    if not isinstance(item, dict):
        return []
    rest = {k: v for k, v in item.items() if k not in KIND_BLOCKS.values() and k != "kind"}
    try:
        DistributionTarget.model_validate({**rest, "kind": "distribution"})
    except ValidationError as exc:
        return [Problem(_walk((*loc, "distribution", *e["loc"])).path,
                        _message(e, _walk((*loc, "distribution", *e["loc"])))) for e in exc.errors()]
    return []


def _raw_checks(data: dict) -> list[Problem]:
    """Problems found on the raw data, so they are listed whether or not the shape is right too."""
    problems = _duplicate_names(data)
    sources = data.get("auth_logs")
    for i, source in enumerate(sources if isinstance(sources, list) else []):
        if isinstance(source, dict) and (source.get("path") is None) == (source.get("elasticsearch") is None):
            problems.append(Problem(f"auth_logs[{i}]", "set exactly one of path and elasticsearch"))
    return problems


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
                problems.append(Problem(f"{section}[{i}].name",
                                        f"duplicate name {name!r} (also {section}[{first[name]}])"))
            else:
                first[name] = i
    return problems


def _raw_secret_checks(data: dict) -> list[Problem]:
    """Secret problems found on the raw data, so they are reported even when the shape is wrong too."""
    problems: list[Problem] = []
    targets, sources = data.get("targets"), data.get("auth_logs")
    holders: list[tuple[str, Any]] = [(f"targets[{i}].", t) for i, t in
                                      enumerate(targets if isinstance(targets, list) else [])]
    for i, source in enumerate(sources if isinstance(sources, list) else []):
        if isinstance(source, dict) and isinstance(source.get("elasticsearch"), dict):
            holders.append((f"auth_logs[{i}].elasticsearch.", source["elasticsearch"]))
    for path, raw in holders:
        if not isinstance(raw, dict):
            continue
        probe = SecretRefs.model_construct()
        for kind in _SECRET_KINDS:
            for suffix in ("_file", "_env"):
                value = raw.get(kind + suffix)  # a value of the wrong type is pydantic's problem already
                object.__setattr__(probe, kind + suffix, value if isinstance(value, str) and value else None)
        _resolve_secrets(probe, path, problems)
    return problems


def _label_collisions(config: Config) -> list[Problem]:
    """Names that would land in the same label of the same metric. Each section's names are unique on
    their own (_duplicate_names); across sections, the one shared label is ``source`` of regwatch_auth_*:
    an auth_logs entry's name, and a Harbor target's name when its audit group runs (collectors/harbor/
    audit.py). Targets, volumes and auth sources also share the ``target`` label of the framework's
    regwatch_collector_* series, but there each job also has its own ``collector`` label value
    (storage, authlogs, drill, and the kinds' own), so equal names give distinct series."""
    problems: list[Problem] = []
    harbor_sources = {t.name: i for i, t in enumerate(config.targets)
                      if isinstance(t, HarborTarget) and "audit" not in t.harbor.skip}
    for i, source in enumerate(config.auth_logs):
        if source.name in harbor_sources:
            j = harbor_sources[source.name]
            problems.append(Problem(
                f"auth_logs[{i}].name",
                f"{source.name!r} is also the name of Harbor target targets[{j}], whose audit log is counted as "
                f"regwatch_auth_requests_total{{source=\"{source.name}\"}} too: the series would be duplicated "
                f"and the failure ratio wrong; rename one of them (or set targets[{j}].harbor.skip: [audit])"))
    return problems


def _shared_connectors(config: Config) -> list[Problem]:
    """A Nexus Docker connector serves one repository: two names for one connector URL would count its
    repositories and tags twice in regwatch_registry_*{target}."""
    problems: list[Problem] = []
    for i, target in enumerate(config.targets):
        if not isinstance(target, NexusTarget):
            continue
        first: dict[str, str] = {}
        for repo, url in target.nexus.docker_connectors.items():
            if url in first:
                problems.append(Problem(f"targets[{i}].nexus.docker_connectors.{repo}",
                                        f"{url} is also the connector of {first[url]}; a connector serves one "
                                        "repository, and its counts would be added twice: keep one of them"))
            else:
                first[url] = repo
    return problems


def _shared_state_files(config: Config) -> list[Problem]:
    """Two sources keeping their state in one file would overwrite each other's (and count twice after a
    restart): every positions_file and audit_state_file is its own."""
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    files = [(f"auth_logs[{i}].positions_file", s.positions_file) for i, s in enumerate(config.auth_logs)]
    files += [(f"targets[{i}].harbor.audit_state_file", t.harbor.audit_state_file)
              for i, t in enumerate(config.targets) if isinstance(t, HarborTarget)]
    for key, path in files:
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in owners:
            problems.append(Problem(key, f"{path} is also {owners[real]}; each source keeps its own state there "
                                         "and they would overwrite each other: give each its own file"))
        else:
            owners[real] = key
    return problems


def _storage_warnings(config: Config) -> list[Problem]:
    """A storage path that does not exist here is a warning, not an error: check-config often runs where
    the volume is not mounted (CI, a laptop), a volume may be mounted after regwatch starts, and serve
    must keep watching everything else: the volume shows as regwatch_collector_success 0 until it appears."""
    return [Problem(f"storage[{i}].path",
                    f"{v.path} does not exist here; serve will report volume {v.name!r} as failed "
                    f"(regwatch_collector_success{{target=\"{v.name}\",collector=\"storage\"}} 0) until it does")
            for i, v in enumerate(config.storage) if not os.path.exists(v.path)]


NOTHING_TO_WATCH = ("nothing to watch: add a target (targets:), a storage volume (storage:) or an auth-failure "
                    "source (auth_logs:); docs/configuration.md has an example of each")


def nothing_to_watch(config: Config) -> Problem | None:
    """The problem of a config that gives ``serve`` nothing to do (check-config and serve refuse it; drill and
    probe read a config only for its targets, so theirs may hold nothing else)."""
    if config.targets or config.storage or config.auth_logs or config.drill.report_dir:
        return None
    return Problem("", NOTHING_TO_WATCH)


def _tls_problems(tls: TLSConfig, path: str) -> list[Problem]:
    if tls.ca_file is None:
        return []
    try:
        if tls.ca_file.is_file():
            return []
        why = "no such file" if not tls.ca_file.exists() else "not a file"
    except OSError as exc:  # a name too long, a loop of links
        why = f"cannot read it ({exc.strerror or exc})"
    return [Problem(f"{path}.ca_file", f"{why}: {tls.ca_file}; give the CA bundle (PEM) that signed the "
                                       "server's certificate")]


def _semantic_checks(config: Config, data: dict) -> list[Problem]:
    problems = (_raw_checks(data) + _label_collisions(config) + _shared_state_files(config)
                + _shared_connectors(config))
    for i, target in enumerate(config.targets):
        _resolve_secrets(target, f"targets[{i}].", problems)
        problems += _tls_problems(target.tls, f"targets[{i}].tls")
        if isinstance(target, UpstreamTarget) and target.probes:
            problems.append(Problem(f"targets[{i}].probes", "an upstream target is read with HEAD requests only; a "
                                    "probe pulls (GET) and would spend the pull limit it watches: probe through "
                                    "the pull-through cache's own target instead"))
        if (target.password_file or target.password_env) and not target.username:
            problems.append(Problem(f"targets[{i}].username", "a password is set but no username"))
        # The same image may be probed directly and through a mirror: those are different series (endpoint label).
        probes = [(p.image, p.mirror) for p in target.probes]
        for j, (image, mirror) in enumerate(probes):
            if probes.index((image, mirror)) != j:
                via = f" through {mirror}" if mirror else ""
                problems.append(Problem(f"targets[{i}].probes[{j}].image", f"duplicate probe image {image!r}{via}"))
    for i, source in enumerate(config.auth_logs):
        if source.elasticsearch is not None:
            _resolve_secrets(source.elasticsearch, f"auth_logs[{i}].elasticsearch.", problems)
            problems += _tls_problems(source.elasticsearch.tls, f"auth_logs[{i}].elasticsearch.tls")
    return problems


def parse_config(data: Any, source: str = "<config>", *, watching: bool = False) -> Config:
    """Validate already-parsed YAML data; raises ConfigError listing every problem. ``watching``: the
    config is serve's, so one that watches nothing is a problem too."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", "the config must be a YAML mapping (key: value) at the top level")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = _problems_of(exc, data)
        seen = {p.path for p in problems}
        extra = [p for p in _raw_checks(data) + _raw_secret_checks(data) if p.path not in seen]
        raise ConfigError(source, problems + extra) from None
    problems = _semantic_checks(config, data)
    if watching and (empty := nothing_to_watch(config)) is not None:
        problems.append(empty)
    if problems:
        raise ConfigError(source, problems)
    config._warnings = _storage_warnings(config)
    return config


def load_config(path: str | os.PathLike, *, watching: bool = False) -> Config:
    """Read and validate a config file; raises ConfigError (with every problem) on any mistake."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read config file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [Problem("", f"the config file is not UTF-8 text (byte {exc.start} is not); "
                                               "save it as UTF-8")]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", f"invalid YAML: {where}{problem}")]) from None
    return parse_config(data, source, watching=watching)


def split_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a ``listen`` value; every address when no host is given."""
    host, _, port = parse_listen(listen).rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - listen's documented meaning: no host, every address
