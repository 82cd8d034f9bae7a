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
      regwatch_nexus_proxy_repository_info{remote_url="https://index.docker.io",repository="hub",target="nexus"} 1.0
      regwatch_nexus_proxy_repository_blocked{repository="hub",target="nexus"} 0.0
      regwatch_nexus_proxy_repository_online{repository="hub",target="nexus"} 1.0

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
from urllib.parse import quote

from prometheus_client.metrics_core import Metric

from regwatch.client import Forbidden, NotFound, ProtocolError
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.collectors.rest import MissingFields, docker_totals, get_json, storage_families
from regwatch.config import Config, TargetConfig
from regwatch.families import gauge

log = logging.getLogger("regwatch.collectors.nexus")

REST = "/service/rest/v1"
# A blob store reporting at least this much free space has no real limit (Nexus's S3 blob store
# reports a policy value; Long.MAX_VALUE when none): no capacity or ratio is exported for it.
UNLIMITED = 2 ** 62


def _auth_hint(target: TargetConfig) -> str:
    return ("check username and password_file/password_env of the target (a Nexus user with the "
            "nx-metrics-all and nx-blobstores-read privileges)" if target.username else
            "set username and password_file: this endpoint needs a Nexus user")


class NexusCollector(Collector):
    """Primary job: is Nexus available, and which of its status checks fail."""

    name = "nexus"

    def __init__(self, ctx: TargetContext):
        self.ctx = ctx
        self.target = ctx.target
        self.client = ctx.client()
        self._forbidden_logged = False

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            resp = self.client.request("GET", f"{REST}/status", ok=(200, 503), preemptive_basic=True, limit=64 << 10)
        except NotFound:
            raise self.ctx.wrong_kind(
                f"target {name}: no Nexus REST API at {self.target.url}{REST} (GET {REST}/status answered 404); "
                "check kind and url (Nexus's base URL, not a Docker connector port)") from None
        self.ctx.right_kind()
        if resp.status_code == 503:
            raise ProtocolError(f"target {name}: GET {REST}/status answered 503: Nexus reports itself unavailable "
                                "(starting, or its database/blob stores are down); see Nexus's nexus.log")
        try:
            checks = get_json(self.client, f"{REST}/status/check", self.target, "Nexus", _auth_hint(self.target),
                              "give the user the nx-metrics-all privilege")
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



class NexusStorageCollector(Collector):
    """Blob stores and Docker repositories."""

    name = "nexus_storage"

    def __init__(self, ctx: TargetContext):
        self.target = ctx.target
        self.client = ctx.client()

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        hint = _auth_hint(self.target)
        missing = MissingFields(name)
        stores_json = get_json(self.client, f"{REST}/blobstores", self.target, "Nexus", hint,
                               "give the user the nx-blobstores-read privilege")
        repos_json = get_json(self.client, f"{REST}/repositories", self.target, "Nexus", hint,
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
            item = get_json(self.client, path, self.target, "Nexus", _auth_hint(self.target))
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



class NexusDockerCollector(Collector):
    """Repositories and tags through the Docker connectors of the configured Docker repositories."""

    name = "nexus_docker"

    def __init__(self, ctx: TargetContext):
        self.target = ctx.target
        self.clients = {repo: ctx.client(f"docker:{repo}", url=url)
                        for repo, url in sorted(ctx.target.nexus.docker_connectors.items())}

    def collect(self) -> Iterable[Metric]:
        yield from docker_totals(self.target, self.clients, "Nexus Docker connector of")


@job_factory("nexus", help="Status, status checks, blob stores, repositories and Docker counts of Nexus targets.")
def nexus_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("nexus"):
        yield ctx.job(NexusCollector(ctx), primary=True)
        # One call per blob store, repository and proxy: a fan-out on the collection budget.
        yield ctx.job(NexusStorageCollector(ctx), collection=ctx.fan_out_budget())
        if ctx.target.nexus.docker_connectors:
            yield ctx.job(NexusDockerCollector(ctx), collection=ctx.fan_out_budget())
