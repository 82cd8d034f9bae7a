"""The ``artifactory`` collectors: a JFrog Artifactory seen through its REST API (``kind: artifactory``).

The target ``url`` is Artifactory's base, e.g. ``https://jfrog.example.com/artifactory``.
Credentials: an access token (``token_file``/``token_env``, sent as ``Authorization: Bearer``),
an API key (``api_key_file``/``api_key_env``, sent as ``X-JFrog-Art-Api``) or ``username`` with
``password_file`` (Basic). Three jobs per target:

- ``artifactory`` (primary, decides ``regwatch_target_up``): ``GET /api/system/ping`` answers ``OK``.
- ``artifactory_storage``: ``GET /api/storageinfo`` (admin only). The file store's sizes are
  strings such as ``"32.22 GB (15.77%)"``: parsed with binary units (KB = 1024 bytes, as
  Artifactory prints them), so they are precise to the printed two decimals only::

      regwatch_storage_capacity_bytes{store="filestore",target="jfrog"} 2.1934e+11
      regwatch_storage_used_bytes{store="filestore",target="jfrog"} 3.4596e+10
      regwatch_storage_available_bytes{store="filestore",target="jfrog"} 1.8474e+11
      regwatch_storage_used_ratio{store="filestore",target="jfrog"} 0.1577
      regwatch_artifactory_binaries_bytes{target="jfrog"} 3.7366e+09
      regwatch_artifactory_artifacts_bytes{target="jfrog"} 6.4177e+10
      regwatch_artifactory_binaries{target="jfrog"} 125726.0
      regwatch_artifactory_repository_used_bytes{repository="docker-local",target="jfrog"} 3.6138261e+07
      regwatch_artifactory_repository_files{repository="docker-local",target="jfrog"} 11.0

  Per-repository series are bounded to Docker repositories (``packageType`` Docker, not the
  ``TOTAL`` row); ``usedSpaceInBytes`` is used where Artifactory gives it, else ``usedSpace``.
- ``artifactory_docker``: repositories and tags of each Docker repository through
  ``/api/docker/<repo>/v2/`` (``regwatch_registry_repositories``/``regwatch_registry_tags``,
  summed); the repositories are ``artifactory.docker_repositories`` or, if empty, every local
  Docker repository listed by ``GET /api/repositories?type=local&packageType=docker``.

A documented field that is missing or unparseable is never exported as 0: the run fails with a
log line naming the endpoint and the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from regwatch.client import AuthFailed, NotFound, ProtocolError, RegistryClient
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.collectors.rest import MissingFields, docker_totals, get_json, storage_families
from regwatch.config import Config
from regwatch.families import gauge

UNITS = {"bytes": 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4, "pb": 1024 ** 5}
_SIZE_RE = re.compile(r"^\s*(\d[\d,]*(?:\.\d+)?)\s*([A-Za-z]+)\s*(?:\([^)]*\))?\s*$")
STORE = "filestore"


def parse_size(text: Any) -> float | None:
    """``"32.22 GB (15.77%)"`` -> 32.22 * 1024**3; None if it is not such a string."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not match or match.group(2).lower() not in UNITS:
        return None
    return float(match.group(1).replace(",", "")) * UNITS[match.group(2).lower()]


def parse_count(text: Any) -> float | None:
    """``"125,726"`` or 125726 -> 125726.0."""
    if isinstance(text, int) and not isinstance(text, bool):
        return float(text)
    if isinstance(text, str) and re.fullmatch(r"\d[\d,]*", text.strip()):
        return float(text.strip().replace(",", ""))
    return None


API_KEY_HEADER = "X-JFrog-Art-Api"


def _auth_hint(ctx: TargetContext) -> str:
    """The advice for a 401, by the credential the target has."""
    creds = ctx.credentials
    if creds.token:
        return "check token_file/token_env: the access token is expired, revoked or lacks the scope"
    if creds.api_key:
        return "check api_key_file/api_key_env (JFrog deprecated API keys; prefer an access token)"
    if creds.username:
        return "check username and password_file/password_env of the target"
    return "set token_file (an access token) or username and password_file: anonymous access is refused"


def _client(ctx: TargetContext, endpoint: str = "api", **options: object) -> RegistryClient:
    # An API key goes in Artifactory's own header; the client sends it only to Artifactory's origin.
    return ctx.client(endpoint, api_key_header=API_KEY_HEADER, **options)


class ArtifactoryCollector(Collector):
    """Primary job: Artifactory answers its ping."""

    name = "artifactory"

    def __init__(self, ctx: TargetContext):
        self.ctx = ctx
        self.target = ctx.target
        self.client = _client(ctx)

    def collect(self) -> Iterable[Metric]:
        try:
            resp = self.client.request("GET", "/api/system/ping", preemptive_basic=True, limit=64 * 1024)
        except AuthFailed:
            raise AuthFailed(f"target {self.target.name}: Artifactory rejected the credentials on GET "
                             f"/api/system/ping (HTTP 401); {_auth_hint(self.ctx)}", status=401) from None
        except NotFound:
            raise self.ctx.wrong_kind(
                f"target {self.target.name}: no Artifactory API at {self.target.url} (GET /api/system/ping answered "
                "404); check kind and url (Artifactory's base, …/artifactory)") from None
        if resp.text.strip() != "OK":
            raise self.ctx.wrong_kind(
                f"target {self.target.name}: GET /api/system/ping answered {resp.text.strip()[:80]!r}, not OK; "
                "check kind and url (Artifactory's base, …/artifactory)")
        self.ctx.right_kind()
        return ()


class ArtifactoryStorageCollector(Collector):
    name = "artifactory_storage"

    def __init__(self, ctx: TargetContext):
        self.ctx = ctx
        self.target = ctx.target
        self.client = _client(ctx)

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        info = get_json(self.client, "/api/storageinfo", self.target, "Artifactory", _auth_hint(self.ctx),
                        "it needs an admin user or an admin-scoped access token")
        if not isinstance(info, dict):
            raise ProtocolError(f"target {name}: GET /api/storageinfo answered unexpected JSON; "
                                "check that the url is Artifactory's base (…/artifactory)")
        missing = MissingFields(name)

        def size(obj: Any, key: str, where: str, parse=parse_size) -> float | None:
            raw = missing.get(obj, key, where)
            value = parse(raw) if raw is not None else None
            if raw is not None and value is None:
                missing.missing.append(f"{where}: {key} (unparseable {str(raw)[:40]!r})")
            return value

        files = missing.get(info, "fileStoreSummary", "/api/storageinfo")
        binaries = missing.get(info, "binariesSummary", "/api/storageinfo")
        where = "/api/storageinfo fileStoreSummary"
        total, used, free = (size(files, key, where) for key in ("totalSpace", "usedSpace", "freeSpace"))
        where = "/api/storageinfo binariesSummary"
        bin_size, art_size = size(binaries, "binariesSize", where), size(binaries, "artifactsSize", where)
        bin_count = size(binaries, "binariesCount", where, parse_count)
        used_bytes, file_counts = [], []
        for repo in missing.get(info, "repositoriesSummaryList", "/api/storageinfo") or []:
            if not isinstance(repo, dict) or str(repo.get("packageType", "")).lower() != "docker":
                continue
            key = repo.get("repoKey", "?")
            where = f"/api/storageinfo repositoriesSummaryList [{key}]"
            used_repo = (float(repo["usedSpaceInBytes"]) if isinstance(repo.get("usedSpaceInBytes"), int)
                         else size(repo, "usedSpace", where))
            count = size(repo, "filesCount", where, parse_count)
            if used_repo is not None:
                used_bytes.append(([name, key], used_repo))
            if count is not None:
                file_counts.append(([name, key], count))
        missing.raise_if_any("Artifactory")
        yield from storage_families(name, [(STORE, total, used, free)])
        yield gauge("regwatch_artifactory_binaries_bytes", "Size of the distinct binaries Artifactory stores "
                    "(after deduplication).", ["target"], [([name], bin_size)])
        yield gauge("regwatch_artifactory_artifacts_bytes", "Size of all artifacts as if not deduplicated.",
                    ["target"], [([name], art_size)])
        yield gauge("regwatch_artifactory_binaries", "Distinct binaries Artifactory stores.",
                    ["target"], [([name], bin_count)])
        yield gauge("regwatch_artifactory_repository_used_bytes", "Space used by the Docker repository.",
                    ["target", "repository"], used_bytes)
        yield gauge("regwatch_artifactory_repository_files", "Files in the Docker repository.",
                    ["target", "repository"], file_counts)


class ArtifactoryDockerCollector(Collector):
    name = "artifactory_docker"

    def __init__(self, ctx: TargetContext):
        self.ctx = ctx
        self.target = ctx.target
        self.client = _client(ctx)

    def _client(self, repo: str) -> RegistryClient:
        return _client(self.ctx, f"docker:{repo}", v2_prefix=f"/api/docker/{repo}/v2")

    def collect(self) -> Iterable[Metric]:
        repos = list(self.target.artifactory.docker_repositories)
        if not repos:
            listed = get_json(self.client, "/api/repositories?type=local&packageType=docker", self.target,
                              "Artifactory", _auth_hint(self.ctx))
            missing = MissingFields(self.target.name)
            for item in listed if isinstance(listed, list) else []:
                key = missing.get(item, "key", "/api/repositories")
                if key is not None:
                    repos.append(str(key))
            missing.raise_if_any("Artifactory")
        yield from docker_totals(self.target, {repo: self._client(repo) for repo in sorted(repos)},
                                 "Artifactory Docker repository")


@job_factory("artifactory", help="Ping, storage summary and Docker repositories of Artifactory targets.")
def artifactory_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("artifactory"):
        yield ctx.job(ArtifactoryCollector(ctx), primary=True)
        yield ctx.job(ArtifactoryStorageCollector(ctx))
        yield ctx.job(ArtifactoryDockerCollector(ctx), collection=ctx.fan_out_budget())
