"""The ``proxycache`` collector: the caches of a Docker Distribution registry, read on its debug address.

**The pull-through cache** (``proxy.remoteurl``). Two sources, the better one first:

- **Native counters** (Distribution 3, ``registry/proxy/proxymetrics.go``): the debug ``/metrics``
  (``http.debug.prometheus.enabled``) has ``registry_proxy_{requests,hits,misses,pulled_bytes,pushed_bytes}_total
  {type="blob"|"manifest"}``, counted right: one request per client request, a miss for each fetch from the
  upstream, ``pulled_bytes`` the bytes fetched from it, ``pushed_bytes`` the bytes served to clients (a HEAD
  is counted with its object's size, though no body is sent). regwatch takes them as they are.
- **The expvar** at ``/debug/vars``, key ``registry.proxy.{blobs,manifests}``, which Distribution 2.8
  counts in ways that do not mean what their names say. The test with two real registries
  (tests/test_proxycache.py) measured this, and ``registry/proxy`` in distribution v2.8.2 explains it:

  - *Manifests.* ``Requests`` and ``Hits`` both count every manifest served (GET and HEAD), so ``Hits``
    equals ``Requests``. ``Misses`` counts manifests fetched from the upstream, which is right. So
    hits = Requests - Misses; ``BytesPulled`` and ``BytesPushed`` are right.
  - *Blobs.* ``Misses`` and ``BytesPulled`` never move: ``BlobPull`` is never called. ``Requests`` counts
    one push per blob served from the cache, and **two** per blob fetched from the upstream: one copy to
    the client and one into the cache's storage (so ``BytesPushed`` is inflated too). Alone, the expvar
    cannot split hits from misses. The registry's own Prometheus metrics on the same debug address
    (``registry_http_requests_total{handler="blob"}``) count the requests clients made. The difference
    between the two is the misses, less the blob requests still in flight
    (``registry_http_in_flight_requests{handler="blob"}``): a hit is counted as pushed when it starts
    streaming, but is a finished request only when the download ends. Blob bytes are not exported.

  Distribution 3's expvar counts right too (one push per request, ``Misses`` from ``BlobPull``): once the
  blob ``Misses`` counter moves, which 2.8's never does, regwatch takes the expvar as it is.

``regwatch_proxy_cache_info{counters}`` says which source the figures came from. What regwatch exports is
what a user means: ``requests`` are the client requests the cache answered, ``misses`` are those it had
to fetch from the upstream, and ``hits`` are the rest. The counters come from the registry, so they reset
when it restarts, and ``rate()`` handles that as it does for any counter; regwatch never lets a derived
value go backwards while the registry keeps running.

**The blob descriptor cache** (``storage.cache.blobdescriptor``: inmemory or redis), which saves a storage
lookup per blob: 2.8 counts it as ``registry_storage_cache_total{type="Request"|"Hit"|"Miss"}``, 3.x as
``registry_storage_cache_{requests,hits,errors}_total`` (a miss is a request that was not a hit; an error
is a lookup the cache itself failed, a Redis that is down). regwatch exports both the same way, on any
registry with the debug /metrics, proxy or not.

Example exposition::

    # HELP regwatch_proxy_cache_requests_total Requests a pull-through cache answered (client requests; cached).
    # TYPE regwatch_proxy_cache_requests_total counter
    regwatch_proxy_cache_requests_total{object="blob",target="mirror"} 12.0
    regwatch_proxy_cache_hits_total{object="blob",target="mirror"} 8.0
    regwatch_proxy_cache_misses_total{object="blob",target="mirror"} 4.0
    regwatch_proxy_cache_upstream_bytes_total{object="blob",target="mirror"} 40960.0
    regwatch_proxy_cache_served_bytes_total{object="blob",target="mirror"} 122880.0
    regwatch_proxy_cache_info{counters="native",target="mirror"} 1.0
    regwatch_blob_descriptor_cache_requests_total{target="mirror"} 30.0
    regwatch_blob_descriptor_cache_hits_total{target="mirror"} 26.0
    regwatch_blob_descriptor_cache_misses_total{target="mirror"} 4.0
    regwatch_blob_descriptor_cache_errors_total{target="mirror"} 0.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from regwatch.client import NotFound, RegistryError
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.config import Config
from regwatch.families import counter, gauge

log = logging.getLogger("regwatch.collectors.proxycache")

OBJECTS = ("blob", "manifest")
# The debug /metrics of a registry is a few hundred KiB at most.
METRICS_LIMIT = 4 << 20


class ProxyCacheError(RegistryError):
    reason = "protocol"


@dataclass(frozen=True)
class Counts:
    """One object's figures, as exported; None where the source has no true value."""

    requests: float
    hits: float
    misses: float
    upstream_bytes: float | None = None
    served_bytes: float | None = None


def _samples(metrics_text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a text exposition that can be a count (finite, not negative); none if the text is not an
    exposition (an HTML error page, a truncated body), rather than the part read before the parser gave up."""
    try:
        return [(sample.name, sample.labels, float(sample.value))
                for family in text_string_to_metric_families(metrics_text) for sample in family.samples
                if math.isfinite(sample.value) and sample.value >= 0]
    except (ValueError, TypeError, IndexError, KeyError):
        return []


def native_counters(metrics_text: str) -> dict[str, Counts] | None:
    """object -> Counts from Distribution 3's ``registry_proxy_*_total{type}``; None if the registry has none."""
    raw: dict[str, dict[str, float]] = {obj: {} for obj in OBJECTS}
    for name, labels, value in _samples(metrics_text):
        if name.startswith("registry_proxy_") and name.endswith("_total") and labels.get("type") in OBJECTS:
            raw[labels["type"]][name.removeprefix("registry_proxy_").removesuffix("_total")] = value
    if not all({"requests", "hits", "misses"} <= set(raw[obj]) for obj in OBJECTS):
        return None
    return {obj: Counts(r["requests"], r["hits"], r["misses"], r.get("pulled_bytes"), r.get("pushed_bytes"))
            for obj, r in raw.items()}


def descriptor_cache(metrics_text: str) -> dict[str, float] | None:
    """{requests, hits, misses[, errors]} of the blob descriptor cache, from either version's metric names."""
    v2: dict[str, float] = {}
    v3: dict[str, float] = {}
    for name, labels, value in _samples(metrics_text):
        if name == "registry_storage_cache_total" and labels.get("type") in ("Request", "Hit", "Miss"):
            v2[labels["type"]] = v2.get(labels["type"], 0.0) + value
        elif name in ("registry_storage_cache_requests_total", "registry_storage_cache_hits_total",
                      "registry_storage_cache_errors_total"):
            v3[name.removeprefix("registry_storage_cache_").removesuffix("_total")] = value
    if {"requests", "hits"} <= set(v3):
        out = {"requests": v3["requests"], "hits": v3["hits"], "misses": max(0.0, v3["requests"] - v3["hits"])}
        if "errors" in v3:
            out["errors"] = v3["errors"]
        return out
    if "Request" in v2:
        # A labelled counter appears once it moves: a registry that has only missed has no Hit yet.
        return {"requests": v2["Request"], "hits": v2.get("Hit", 0.0), "misses": v2.get("Miss", 0.0)}
    return None


def blob_client_requests(metrics_text: str) -> tuple[float, float] | None:
    """(blob GET/HEAD requests answered with 2xx/3xx, blob requests in flight) from the registry's debug
    /metrics; None if it has no request counts (Prometheus metrics not enabled)."""
    total = None
    in_flight = 0.0
    for name, labels, value in _samples(metrics_text):
        if name == "registry_http_in_flight_requests" and labels.get("handler") == "blob":
            in_flight += value
        elif (name == "registry_http_requests_total" and labels.get("handler") == "blob"
              and labels.get("method") in ("get", "head") and labels.get("code", "")[:1] in ("2", "3")):
            total = (total or 0.0) + value
    return None if total is None else (total, in_flight)


def derive(expvar: dict, blob_requests: float | None, blob_in_flight: float = 0.0) -> dict[str, Counts]:
    """object -> Counts from the expvar, what a user means by them (see the module docstring).

    A blob request still streaming has already been pushed once (a hit is counted before its
    body is sent) but is not yet among the finished requests: ``blob_in_flight`` takes those
    out, so a long download from the cache is not taken for a miss. The estimate errs low,
    and a counter that is low for one read catches up at the next.
    """
    out = {}
    manifests = expvar["manifests"]
    m_requests, m_misses = float(manifests["Requests"]), float(manifests["Misses"])
    out["manifest"] = Counts(m_requests, max(0.0, m_requests - m_misses), m_misses,
                             _number(manifests.get("BytesPulled")), _number(manifests.get("BytesPushed")))
    blobs = expvar["blobs"]
    if float(blobs.get("Misses", 0)) > 0:
        # Distribution 3 counts blob misses itself (and pushes once per request); 2.8 never does.
        b_requests, b_misses = float(blobs["Requests"]), float(blobs["Misses"])
        out["blob"] = Counts(b_requests, max(0.0, b_requests - b_misses), b_misses,
                             _number(blobs.get("BytesPulled")), _number(blobs.get("BytesPushed")))
    elif blob_requests is not None:
        pushes = float(blobs["Requests"])
        b_misses = max(0.0, pushes - blob_requests - blob_in_flight)
        out["blob"] = Counts(blob_requests, max(0.0, blob_requests - b_misses), b_misses)
    return out


def _valid_expvar(proxy: object) -> dict | None:
    """The ``registry.proxy`` expvar if it has the counters derive() reads, as numbers; else None."""
    if not isinstance(proxy, dict):
        return None
    blobs, manifests = proxy.get("blobs"), proxy.get("manifests")
    if not isinstance(blobs, dict) or not isinstance(manifests, dict):
        return None
    needed = [manifests.get("Requests"), manifests.get("Misses"), blobs.get("Requests"), blobs.get("Misses", 0)]
    if any(_number(value) is None for value in needed):
        return None
    return {"blobs": blobs, "manifests": manifests}


def _number(value: object) -> float | None:
    """A JSON count as a float; None for anything else (a string, a negative number, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _monotonic(new: Counts, last: Counts | None) -> Counts:
    if last is None:
        return new
    return Counts(*(now if now is None or before is None else max(now, before)
                    for now, before in zip(astuple(new), astuple(last), strict=True)))


class ProxyCacheCollector(Collector):
    name = "proxycache"

    def __init__(self, ctx: TargetContext):
        self.target = ctx.target
        self.client = ctx.client("debug")
        # Proxy mode is known once the cache has served something; then zeros are true zeros.
        self.active = False
        # Last exported values and what they came from, to keep counters monotonic.
        self._last: dict[str, Counts] = {}
        self._last_source = -1.0
        self._last_kind = ""
        self._warned_no_metrics = False

    def _expvar(self) -> dict | None:
        resp = self.client.request("GET", "/debug/vars", ok=(200, 404))
        if resp.status_code == 404:
            return None
        try:
            return _valid_expvar(resp.json()["registry"]["proxy"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return None

    def _metrics(self) -> str:
        try:
            return self.client.request("GET", "/metrics", limit=METRICS_LIMIT).text
        except NotFound:
            return ""  # http.debug.prometheus not enabled

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        # The expvar is read first: requests that finish before /metrics is read make the 2.8 blob misses err
        # low, never high.
        expvar = self._expvar()
        text = self._metrics()
        native = native_counters(text)
        if native is not None:
            kind, values = "native", native
            moved = sum(counts.requests for counts in native.values())
        elif expvar is not None:
            # The expvar's own pushes, not the derived blob requests: /metrics counts blob requests on any
            # registry, proxy or not.
            moved = float(expvar["blobs"]["Requests"]) + float(expvar["manifests"]["Requests"])
            # A registry that never proxied gets no advice about metrics it needs only as a proxy.
            blob_requests = self._blob_requests(text) if moved > 0 or self.active else None
            kind, values = "expvar", derive(expvar, *(blob_requests or (None,)))
        else:
            raise ProxyCacheError(f"target {name}: {self.target.debug_url} has neither registry_proxy_* counters on "
                                  "/metrics nor registry.proxy in /debug/vars: is debug_url the debug address of a "
                                  "Docker Distribution registry (http.debug.addr)?")
        yield from self._proxy_families(kind, values, moved)
        cache = descriptor_cache(text)
        docs = {"requests": "Lookups in the registry's blob descriptor cache (storage.cache.blobdescriptor; cached).",
                "hits": "Blob descriptor cache lookups answered from the cache (cached).",
                "misses": "Blob descriptor cache lookups that went to storage (requests - hits; cached).",
                "errors": "Blob descriptor cache lookups the cache itself failed, e.g. Redis down (Distribution 3 "
                          "only; cached)."}
        for key, doc in docs.items():
            if cache is not None and key in cache:
                yield counter(f"regwatch_blob_descriptor_cache_{key}", doc, ["target"], [([name], cache[key])])

    def _proxy_families(self, kind: str, values: dict[str, Counts], moved: float) -> Iterable[Metric]:
        """``moved``: the source's own request count, for telling a proxy from a registry that is none, and a
        restart from a running registry."""
        self.active = self.active or moved > 0
        if not self.active:
            return  # not a proxy, or one that has served nothing yet: no series rather than false zeros
        if moved < self._last_source or kind != self._last_kind:
            self._last = {}  # the registry restarted (or was upgraded): its counters, and ours, start again
        self._last_source, self._last_kind = moved, kind
        values = {obj: _monotonic(counts, self._last.get(obj)) for obj, counts in values.items()}
        self._last = dict(values)
        name = self.target.name
        labels = ["target", "object"]
        present = [obj for obj in OBJECTS if obj in values]
        yield counter("regwatch_proxy_cache_requests", "Requests a pull-through cache answered (client requests; "
                      "cached).", labels, [([name, obj], values[obj].requests) for obj in present])
        yield counter("regwatch_proxy_cache_hits", "Requests the pull-through cache served from its own storage "
                      "(cached).", labels, [([name, obj], values[obj].hits) for obj in present])
        yield counter("regwatch_proxy_cache_misses", "Requests the pull-through cache had to fetch from the upstream "
                      "(cached).", labels, [([name, obj], values[obj].misses) for obj in present])
        yield counter("regwatch_proxy_cache_upstream_bytes", "Bytes the pull-through cache fetched from the upstream "
                      "(cached; where the registry counts them right).", labels,
                      [([name, obj], values[obj].upstream_bytes) for obj in present])
        yield counter("regwatch_proxy_cache_served_bytes", "Bytes the pull-through cache counted as sent to clients "
                      "(a HEAD counts its object's size; cached; where the registry counts them right).", labels,
                      [([name, obj], values[obj].served_bytes) for obj in present])
        yield gauge("regwatch_proxy_cache_info", "Which counters of the registry the proxy cache figures come from: "
                    "native (Distribution 3's registry_proxy_*) or expvar (/debug/vars, corrected for 2.8).",
                    ["target", "counters"], [([name, kind], 1)])

    def _blob_requests(self, text: str) -> tuple[float, float] | None:
        count = blob_client_requests(text)
        if count is None and not self._warned_no_metrics:
            self._warned_no_metrics = True
            log.warning("blob hit/miss counts need the registry's Prometheus metrics on its debug address; "
                        "set http.debug.prometheus.enabled: true in the registry's config (manifest counts "
                        "are exported without it)", extra={"target": self.target.name})
        return count


@job_factory("proxycache", help="Pull-through and blob descriptor caches of Distribution registries (debug_url).")
def proxycache_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("distribution"):
        if ctx.target.debug_url is not None:
            yield ctx.job(ProxyCacheCollector(ctx))
