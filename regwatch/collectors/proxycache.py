"""The ``proxycache`` collector: hit and miss counts of a Distribution pull-through cache.

A Docker Distribution registry in proxy mode (``proxy.remoteurl``) publishes counters on its
debug address: the expvar JSON at ``/debug/vars``, key ``registry.proxy.{blobs,manifests}``.
Distribution 2.8 counts them in ways that do not mean what their names say. The test with two
real registries (tests/test_proxycache.py) measured this, and ``registry/proxy`` in
distribution v2.8.2 explains it:

- **Manifests.** ``Requests`` and ``Hits`` both count every manifest served (GET and HEAD),
  so ``Hits`` equals ``Requests``. ``Misses`` counts manifests fetched from the upstream,
  which is right. So hits = Requests - Misses.
- **Blobs.** ``Misses`` and ``BytesPulled`` never move: ``BlobPull`` is never called.
  ``Requests`` counts one push per blob served from the cache, and **two** per blob fetched
  from the upstream: one copy to the client and one into the cache's storage. Alone, the
  expvar cannot split hits from misses. The registry's own Prometheus metrics on the same
  debug address (``registry_http_requests_total{handler="blob"}``, which needs
  ``http.debug.prometheus.enabled``) count the requests clients made. The difference
  between the two is the misses, less the blob requests still in flight
  (``registry_http_in_flight_requests{handler="blob"}``): a hit is counted as pushed when it
  starts streaming, but is a finished request only when the download ends.

Distribution 3 counts correctly (one push per request, ``Misses`` from ``BlobPull``): once
the blob ``Misses`` counter moves, which 2.8's never does, regwatch takes the expvar as it is.
Until then both versions give the same figures through the 2.8 formula.

What regwatch exports is what a user means: ``requests`` are the client requests the cache
answered, ``misses`` are those it had to fetch from the upstream, and ``hits`` are the rest.
The counters come from the registry, so they reset when it restarts, and ``rate()``
handles that as it does for any counter. regwatch never lets one of these derived values
go backwards while the registry keeps running.

Example exposition::

    # HELP regwatch_proxy_cache_requests_total Requests a pull-through cache answered (client requests).
    # TYPE regwatch_proxy_cache_requests_total counter
    regwatch_proxy_cache_requests_total{object="blob",target="mirror"} 12.0
    regwatch_proxy_cache_hits_total{object="blob",target="mirror"} 8.0
    regwatch_proxy_cache_misses_total{object="blob",target="mirror"} 4.0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from regwatch.client import RegistryError
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.config import Config

log = logging.getLogger("regwatch.collectors.proxycache")

OBJECTS = ("blob", "manifest")


class ProxyCacheError(RegistryError):
    reason = "protocol"


def blob_client_requests(metrics_text: str) -> tuple[float, float] | None:
    """(blob GET/HEAD requests answered with 2xx/3xx, blob requests in flight) from the registry's debug
    /metrics; None if it has no request counts (Prometheus metrics not enabled)."""
    total = None
    in_flight = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "registry_http_in_flight_requests":
            in_flight += sum(s.value for s in family.samples if s.labels.get("handler") == "blob")
        if family.name != "registry_http_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (sample.name.endswith("_total") and labels.get("handler") == "blob"
                    and labels.get("method") in ("get", "head") and labels.get("code", "")[:1] in ("2", "3")):
                total = (total or 0.0) + sample.value
    return None if total is None else (total, in_flight)


def derive(expvar: dict, blob_requests: float | None,
           blob_in_flight: float = 0.0) -> dict[str, tuple[float, float, float]]:
    """object -> (requests, hits, misses), what a user means by them (see the module docstring).

    A blob request still streaming has already been pushed once (a hit is counted before its
    body is sent) but is not yet among the finished requests: ``blob_in_flight`` takes those
    out, so a long download from the cache is not taken for a miss. The estimate errs low,
    and a counter that is low for one read catches up at the next.
    """
    out = {}
    manifests = expvar["manifests"]
    m_requests, m_misses = float(manifests["Requests"]), float(manifests["Misses"])
    out["manifest"] = (m_requests, max(0.0, m_requests - m_misses), m_misses)
    blobs = expvar["blobs"]
    if float(blobs.get("Misses", 0)) > 0:
        # Distribution 3 counts blob misses itself (and pushes once per request); 2.8 never does.
        b_requests, b_misses = float(blobs["Requests"]), float(blobs["Misses"])
        out["blob"] = (b_requests, max(0.0, b_requests - b_misses), b_misses)
    elif blob_requests is not None:
        pushes = float(blobs["Requests"])
        b_misses = max(0.0, pushes - blob_requests - blob_in_flight)
        out["blob"] = (blob_requests, max(0.0, blob_requests - b_misses), b_misses)
    return out


class ProxyCacheCollector(Collector):
    name = "proxycache"

    def __init__(self, ctx: TargetContext):
        self.target = ctx.target
        self.client = ctx.client("debug")
        # Proxy mode is known once the cache has served something; then zeros are true zeros.
        self.active = False
        # Last exported values and the source counters they came from, to keep counters monotonic.
        self._last: dict[str, tuple[float, float, float]] = {}
        self._last_source = -1.0
        self._warned_no_metrics = False

    def _expvar(self) -> dict | None:
        resp = self.client.request("GET", "/debug/vars")
        try:
            proxy = resp.json()["registry"]["proxy"]
            return {"blobs": proxy["blobs"], "manifests": proxy["manifests"]}
        except (ValueError, KeyError, TypeError):
            return None

    def collect(self) -> Iterable[Metric]:
        expvar = self._expvar()
        if expvar is None:
            raise ProxyCacheError(f"{self.target.debug_url}/debug/vars has no registry.proxy counters: is "
                                  f"{self.target.name}'s debug_url the debug address of a Docker Distribution "
                                  "registry (http.debug.addr)?")
        source_total = float(expvar["blobs"]["Requests"]) + float(expvar["manifests"]["Requests"])
        self.active = self.active or source_total > 0
        if not self.active:
            return  # not a proxy, or one that has served nothing yet: no series rather than false zeros
        # Read after the expvar: requests that finish in between make misses err low, never high.
        blob_requests = self._blob_requests()
        values = derive(expvar, *(blob_requests or (None,)))
        if source_total < self._last_source:
            self._last = {}  # the registry restarted: its counters, and ours, start again
        self._last_source = source_total
        for obj, triple in values.items():
            last = self._last.get(obj, (0.0, 0.0, 0.0))
            values[obj] = tuple(max(a, b) for a, b in zip(triple, last))  # type: ignore[assignment]
        self._last = dict(values)

        families = {
            "requests": CounterMetricFamily("regwatch_proxy_cache_requests",
                                            "Requests a pull-through cache answered (client requests).",
                                            labels=["target", "object"]),
            "hits": CounterMetricFamily("regwatch_proxy_cache_hits",
                                        "Requests the pull-through cache served from its own storage.",
                                        labels=["target", "object"]),
            "misses": CounterMetricFamily("regwatch_proxy_cache_misses",
                                          "Requests the pull-through cache had to fetch from the upstream.",
                                          labels=["target", "object"]),
        }
        for obj in OBJECTS:
            if obj in values:
                requests_, hits, misses = values[obj]
                families["requests"].add_metric([self.target.name, obj], requests_)
                families["hits"].add_metric([self.target.name, obj], hits)
                families["misses"].add_metric([self.target.name, obj], misses)
        yield from families.values()

    def _blob_requests(self) -> tuple[float, float] | None:
        try:
            text = self.client.request("GET", "/metrics").text
        except RegistryError:
            text = ""
        count = blob_client_requests(text)
        if count is None and not self._warned_no_metrics:
            self._warned_no_metrics = True
            log.warning("blob hit/miss counts need the registry's Prometheus metrics on its debug address; "
                        "set http.debug.prometheus.enabled: true in the registry's config (manifest counts "
                        "are exported without it)", extra={"target": self.target.name})
        return count


@job_factory("proxycache", help="Pull-through cache hits and misses of Distribution registries (debug_url).")
def proxycache_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("distribution"):
        if ctx.target.debug_url is not None:
            yield ctx.job(ProxyCacheCollector(ctx))
