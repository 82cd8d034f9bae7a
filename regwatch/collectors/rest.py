"""What the vendor REST collectors (Nexus, Artifactory) share: a JSON GET whose 401/403 says what to
fix, "the documented field is missing" bookkeeping, the common storage families, and repository and
tag counts through registry-API endpoints (Docker connectors)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from regwatch.client import AuthFailed, Forbidden, ProtocolError, RegistryClient, parse_json
from regwatch.collectors.distribution import count_tags
from regwatch.config import TargetConfig
from regwatch.families import gauge


class MissingFields:
    """Collects the fields a documented payload lacked; ``raise_if_any`` fails the run naming them."""

    def __init__(self, target: str):
        self.target = target
        self.missing: list[str] = []

    def get(self, obj: Any, key: str, where: str) -> Any:
        if isinstance(obj, dict) and obj.get(key) is not None:
            return obj[key]
        self.missing.append(f"{where}: {key}")
        return None

    def raise_if_any(self, vendor: str) -> None:
        if self.missing:
            raise ProtocolError(
                f"target {self.target}: the {vendor} answer lacks documented field(s) "
                f"{'; '.join(self.missing[:5])}{' ...' if len(self.missing) > 5 else ''}: no value exported for "
                f"them; check that the URL points at {vendor} and its version is supported (docs/nexus-artifactory.md)")


def get_json(client: RegistryClient, path: str, target: TargetConfig, vendor: str, auth_hint: str,
             forbidden_hint: str = "give the account read permission on it") -> Any:
    """GET a REST endpoint (Basic credentials sent up front); re-raise 401/403 with what to do next."""
    try:
        resp = client.request("GET", path, preemptive_basic=True)
    except AuthFailed:
        raise AuthFailed(f"target {target.name}: {vendor} rejected the credentials on GET {path} (HTTP 401); "
                         f"{auth_hint}", status=401) from None
    except Forbidden as exc:
        raise Forbidden(f"target {target.name}: {vendor} denied GET {path} (HTTP 403); {forbidden_hint} "
                        f"({exc})", status=403) from None
    return parse_json(resp.content, f"target {target.name}: GET {path}", hint=f"check that the target url points at "
                                                                             f"{vendor}")


def storage_families(target: str, stores: list[tuple[str, float | None, float | None, float | None]]
                     ) -> Iterable[Metric]:
    """``regwatch_storage_*{target,store}`` from (store, capacity, used, available); None = no sample."""
    labels = ["target", "store"]
    yield gauge("regwatch_storage_capacity_bytes", "Capacity of the registry-reported store.", labels,
                [([target, s], c) for s, c, _, _ in stores])
    yield gauge("regwatch_storage_used_bytes", "Bytes used in the registry-reported store.", labels,
                [([target, s], u) for s, _, u, _ in stores])
    yield gauge("regwatch_storage_available_bytes", "Bytes still free for the registry-reported store.", labels,
                [([target, s], a) for s, _, _, a in stores])
    yield gauge("regwatch_storage_used_ratio", "Used share of the registry-reported store's capacity, 0..1.", labels,
                [([target, s], u / c) for s, c, u, _ in stores if c and u is not None])


def docker_totals(target: TargetConfig, clients: dict[str, RegistryClient], where: str) -> Iterable[Metric]:
    """Repositories and tags over several registry-API endpoints, each counted as a Distribution target is."""
    repositories = tags = 0
    for repo, client in clients.items():
        try:
            repos, counts = count_tags(client, target.page_size, target.concurrency)
        except AuthFailed:
            raise AuthFailed(f"target {target.name}: the registry API of {where} {repo} rejected the credentials "
                             f"(HTTP 401); check username and password_file/token_file", status=401) from None
        repositories += len(repos)
        tags += sum(counts)
    yield gauge("regwatch_registry_repositories", "Repositories listed by the registry API's _catalog.",
                ["target"], [([target.name], repositories)])
    yield gauge("regwatch_registry_tags", "Tags over all repositories, from tags/list.",
                ["target"], [([target.name], tags)])
