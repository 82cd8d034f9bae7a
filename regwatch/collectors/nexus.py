"""The ``nexus`` collectors: a Sonatype Nexus Repository 3 seen through its REST API (``kind: nexus``).

Three jobs per target, each with its own ``regwatch_collector_success``:

- ``nexus`` (primary, decides ``regwatch_target_up``): ``GET /service/rest/v1/status`` (200 =
  available, 503 = not) and ``GET /service/rest/v1/status/check`` (per-check health)::

      regwatch_nexus_status_check_healthy{check="Blob Stores",target="nexus"} 1.0

- ``nexus_storage``: blob stores (``/service/rest/v1/blobstores``) into the common storage
  metrics, Docker repositories (``/service/rest/v1/repositories``) counted by type::

      regwatch_storage_used_bytes{store="default",target="nexus"} 1.2e+09
      regwatch_storage_available_bytes{store="default",target="nexus"} 8.8e+09
      regwatch_storage_capacity_bytes{store="default",target="nexus"} 1.0e+10
      regwatch_storage_used_ratio{store="default",target="nexus"} 0.12
      regwatch_nexus_blob_store_blobs{store="default",target="nexus"} 4242.0
      regwatch_nexus_repositories{repository_type="hosted",target="nexus"} 2.0
      regwatch_nexus_proxy_repository_info{remote_url="https://registry-1.docker.io",repository="docker-proxy",target="nexus"} 1.0
      regwatch_nexus_proxy_repository_blocked{repository="docker-proxy",target="nexus"} 0.0
      regwatch_nexus_proxy_repository_online{repository="docker-proxy",target="nexus"} 1.0

- ``nexus_docker``: repositories and tags through each configured Docker connector
  (``nexus.docker_connectors``), with the registry v2 API (``regwatch_registry_repositories``,
  ``regwatch_registry_tags``, summed over the connectors).

A field the documented payload should have but does not is never exported as 0: the run fails
(``regwatch_collector_success 0``) with a log line naming the endpoint and the field.
Nexus's own ``/service/metrics/prometheus`` (JVM, Jetty, ...) is not duplicated; see
docs/nexus-artifactory.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.client import AuthFailed, Forbidden, NotFound, ProtocolError, RegistryClient
from regwatch.collectors import Collector, Job, job_factory
from regwatch.collectors.distribution import DistributionCollector
from regwatch.config import Config, TargetConfig

log = logging.getLogger("regwatch.collectors.nexus")

REST = "/service/rest/v1"
# A blob store reporting at least this much free space has no real limit (Nexus's S3 blob store
# reports a policy value; Long.MAX_VALUE when none): no capacity or ratio is exported for it.
UNLIMITED = 2 ** 62


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
             preemptive_basic: bool, forbidden_hint: str = "give the account read permission on it") -> Any:
    """GET a REST endpoint; re-raise 401/403 with what to do next."""
    try:
        resp = client.request("GET", path, preemptive_basic=preemptive_basic)
    except AuthFailed:
        raise AuthFailed(f"target {target.name}: {vendor} rejected the credentials on GET {path} (HTTP 401); "
                         f"{auth_hint}", status=401) from None
    except Forbidden as exc:
        raise Forbidden(f"target {target.name}: {vendor} denied GET {path} (HTTP 403); {forbidden_hint} "
                        f"({exc})", status=403) from None
    try:
        return resp.json()
    except ValueError:
        raise ProtocolError(f"target {target.name}: GET {path} did not answer with JSON; check that the "
                            f"target url points at {vendor}") from None


def gauge(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def storage_families(target: str, stores: list[tuple[str, float | None, float | None, float | None]]
                     ) -> Iterable[Metric]:
    """``regwatch_storage_*{target,store}`` from (store, capacity, used, available); None = no sample."""
    labels = ["target", "store"]
    yield gauge("regwatch_storage_capacity_bytes", "Capacity of the registry-reported store.", labels,
                [([target, s], c) for s, c, _, _ in stores if c is not None])
    yield gauge("regwatch_storage_used_bytes", "Bytes used in the registry-reported store.", labels,
                [([target, s], u) for s, _, u, _ in stores if u is not None])
    yield gauge("regwatch_storage_available_bytes", "Bytes still free for the registry-reported store.", labels,
                [([target, s], a) for s, _, _, a in stores if a is not None])
    yield gauge("regwatch_storage_used_ratio", "Used share of the registry-reported store's capacity, 0..1.", labels,
                [([target, s], u / c) for s, c, u, _ in stores if c and u is not None])


def docker_totals(target: TargetConfig, clients: dict[str, RegistryClient], where: str) -> Iterable[Metric]:
    """Repositories and tags over several registry-API endpoints, each read like a Distribution target."""
    totals = {"regwatch_registry_repositories": 0.0, "regwatch_registry_tags": 0.0}
    for repo, client in clients.items():
        reader = DistributionCollector(target, client=client)
        reader.debug_client = None  # the vendor's debug endpoint is not Distribution's
        try:
            for family in reader.collect():
                if family.name in totals:
                    totals[family.name] += sum(s.value for s in family.samples)
        except AuthFailed:
            raise AuthFailed(f"target {target.name}: the registry API of {where} {repo} rejected the credentials "
                             f"(HTTP 401); check username and password_file/token_file", status=401) from None
    yield gauge("regwatch_registry_repositories", "Repositories listed by the registry API's _catalog.",
                ["target"], [([target.name], totals["regwatch_registry_repositories"])])
    yield gauge("regwatch_registry_tags", "Tags over all repositories, from tags/list.",
                ["target"], [([target.name], totals["regwatch_registry_tags"])])


def job_timeouts(target: TargetConfig) -> tuple[float, float]:
    """(primary, secondary) job timeouts: long enough for the client's own timeout, retries and
    backoff (3 attempts, 0.5 s + 1 s) to end in its error, which names the endpoint, rather than
    in the runner's bare "timed out"."""
    one_request = target.timeout * 3 + 2.0
    return one_request, max(one_request * 2, 30.0)


def _auth_hint(target: TargetConfig) -> str:
    return ("check username and password_file/password_env of the target (a Nexus user with the "
            "nx-metrics-all and nx-blobstores-read privileges)" if target.username else
            "set username and password_file: this endpoint needs a Nexus user")


class NexusCollector(Collector):
    """Primary job: is Nexus available, and which of its status checks fail."""

    name = "nexus"

    def __init__(self, target: TargetConfig, client: RegistryClient | None = None):
        self.target = target
        self.client = client or RegistryClient.for_target(target)
        self._forbidden_logged = False

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        resp = self.client.request("GET", f"{REST}/status", ok=(200, 503), preemptive_basic=True)
        if resp.status_code == 503:
            raise ProtocolError(f"target {name}: GET {REST}/status answered 503: Nexus reports itself unavailable "
                                "(starting, or its database/blob stores are down); see Nexus's nexus.log")
        try:
            checks = get_json(self.client, f"{REST}/status/check", self.target, "Nexus", _auth_hint(self.target),
                              True, "give the user the nx-metrics-all privilege")
        except Forbidden as exc:
            # Nexus is up (status 200) and the login works: a missing privilege is not "target down".
            # No check series at all (not a 0), and one log line until the privilege is granted.
            if not self._forbidden_logged:
                log.warning("Nexus status checks not collected", extra={"target": name, "err": str(exc)})
                self._forbidden_logged = True
            return
        self._forbidden_logged = False
        if not isinstance(checks, dict):
            raise ProtocolError(f"target {name}: GET {REST}/status/check answered with unexpected JSON; "
                                "check that the url points at Nexus Repository 3")
        missing = MissingFields(name)
        samples = []
        for check, result in sorted(checks.items()):
            healthy = missing.get(result, "healthy", f"{REST}/status/check [{check}]")
            if healthy is not None:
                samples.append(([name, check], 1.0 if healthy else 0.0))
                if not healthy:
                    log.warning("Nexus status check failing", extra={
                        "target": name, "check": check, "detail": str(result.get("message"))[:300]})
        missing.raise_if_any("Nexus")
        yield gauge("regwatch_nexus_status_check_healthy", "1 if the Nexus status check is healthy.",
                    ["target", "check"], samples)

    def close(self) -> None:
        self.client.close()


class NexusStorageCollector(Collector):
    """Blob stores and Docker repositories."""

    name = "nexus_storage"

    def __init__(self, target: TargetConfig, client: RegistryClient | None = None):
        self.target = target
        self.client = client or RegistryClient.for_target(target)

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        hint = _auth_hint(self.target)
        missing = MissingFields(name)
        stores_json = get_json(self.client, f"{REST}/blobstores", self.target, "Nexus", hint, True,
                               "give the user the nx-blobstores-read privilege")
        repos_json = get_json(self.client, f"{REST}/repositories", self.target, "Nexus", hint, True,
                              "give the user browse/read on the Docker repositories (nx-repository-view-docker-*-*)")
        if not isinstance(stores_json, list) or not isinstance(repos_json, list):
            raise ProtocolError(f"target {name}: {REST}/blobstores or {REST}/repositories did not answer with a "
                                "JSON list; check that the url points at Nexus Repository 3")
        stores, blobs = [], []
        for item in stores_json:
            store = missing.get(item, "name", f"{REST}/blobstores")
            if store is None:
                continue
            where = f"{REST}/blobstores [{store}]"
            used = missing.get(item, "totalSizeInBytes", where)
            available = missing.get(item, "availableSpaceInBytes", where)
            count = missing.get(item, "blobCount", where)
            if available is not None and available >= UNLIMITED:
                available = None  # no real limit: nothing to fill
            # File blob store: the file system's free space plus what the store holds is what it can grow to.
            capacity = used + available if used is not None and available is not None else None
            stores.append((store, capacity, used, available))
            if count is not None:
                blobs.append(([name, store], float(count)))
        types: dict[str, int] = {"hosted": 0, "proxy": 0, "group": 0}
        proxies: list = []
        blocked: list = []
        for item in repos_json:
            if not isinstance(item, dict) or item.get("format") != "docker":
                continue
            repo = missing.get(item, "name", f"{REST}/repositories")
            kind = missing.get(item, "type", f"{REST}/repositories [{repo}]")
            if kind is None:
                continue
            types[kind] = types.get(kind, 0) + 1
            if kind == "proxy":
                remote = ((item.get("attributes") or {}).get("proxy") or {}).get("remoteUrl")
                if remote:
                    proxies.append(([name, str(repo), str(remote)], 1.0))
                blocked.extend(self._proxy_state(str(repo), missing))
        missing.raise_if_any("Nexus")
        yield from storage_families(name, stores)
        yield gauge("regwatch_nexus_blob_store_blobs", "Blobs in the Nexus blob store.", ["target", "store"], blobs)
        yield gauge("regwatch_nexus_repositories", "Docker repositories of Nexus by type (hosted, proxy, group).",
                    ["target", "repository_type"], [([name, k], float(v)) for k, v in sorted(types.items())])
        yield gauge("regwatch_nexus_proxy_repository_info", "Docker proxy repositories and their remote URL; always 1.",
                    ["target", "repository", "remote_url"], proxies)
        for metric, doc in (("blocked", "1 if the Docker proxy repository's outbound HTTP client is blocked "
                                        "(httpClient.blocked): content not yet cached cannot be fetched."),
                            ("online", "1 if the Docker proxy repository is online.")):
            yield gauge(f"regwatch_nexus_proxy_repository_{metric}", doc, ["target", "repository"],
                        [([name, repo], value) for what, repo, value in blocked if what == metric])

    def _proxy_state(self, repo: str, missing: MissingFields) -> list[tuple[str, str, float]]:
        """httpClient.blocked and online of one Docker proxy (GET /v1/repositories/docker/proxy/<name>, 3.20+)."""
        path = f"{REST}/repositories/docker/proxy/{quote(repo, safe='')}"
        try:
            item = get_json(self.client, path, self.target, "Nexus", _auth_hint(self.target), True)
        except NotFound:
            log.debug("Nexus has no per-repository settings endpoint (older than 3.20?)",
                      extra={"target": self.target.name, "endpoint": path})
            return []
        out = []
        block = missing.get(missing.get(item, "httpClient", path), "blocked", f"{path} httpClient")
        online = missing.get(item, "online", path)
        if block is not None:
            out.append(("blocked", repo, 1.0 if block else 0.0))
        if online is not None:
            out.append(("online", repo, 1.0 if online else 0.0))
        return out

    def close(self) -> None:
        self.client.close()


class NexusDockerCollector(Collector):
    """Repositories and tags through the Docker connectors of the configured Docker repositories."""

    name = "nexus_docker"

    def __init__(self, target: TargetConfig):
        self.target = target
        self.clients = {repo: RegistryClient.for_target(target, url=url)
                        for repo, url in sorted(target.nexus.docker_connectors.items())}

    def collect(self) -> Iterable[Metric]:
        yield from docker_totals(self.target, self.clients, "Nexus Docker connector of")

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@job_factory("nexus", help="Status, status checks, blob stores, repositories and Docker counts of Nexus targets.")
def nexus_jobs(config: Config) -> Iterable[Job]:
    for target in config.targets:
        if target.kind != "nexus":
            continue
        primary, slow = job_timeouts(target)
        yield Job(target.name, NexusCollector(target), target.interval, primary, kind=target.kind)
        yield Job(target.name, NexusStorageCollector(target), target.interval, slow)
        if target.nexus.docker_connectors:
            yield Job(target.name, NexusDockerCollector(target), target.interval, slow)


__all__ = ["NexusCollector", "NexusStorageCollector", "NexusDockerCollector", "storage_families", "get_json",
           "MissingFields", "docker_totals", "gauge", "job_timeouts"]
