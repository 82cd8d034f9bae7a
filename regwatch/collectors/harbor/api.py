"""Harbor's REST API (v2.0) as the Harbor collectors use it: one pagination helper, version
detection, bounded concurrency, and "not collected" bookkeeping.

Every Harbor group collector of one target shares one ``HarborAPI``: its semaphore bounds the
requests in flight against that Harbor (``target.concurrency``), whichever groups are running.

An endpoint the Harbor version lacks (404, or known from the version) or the account may not
read (401/403) is *not collected*: ``regwatch_harbor_endpoint_collected{endpoint} 0`` and one
log line when that changes, instead of a failed collection every cycle.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, urljoin

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.budget import ContextPool
from regwatch.client import (AuthFailed, Forbidden, NotFound, ProtocolError, RateLimited, RegistryClient,
                             RegistryError, ServerError, Unreachable)
from regwatch.collectors import Collector
from regwatch.config import TargetConfig

log = logging.getLogger("regwatch.collectors.harbor")

API = "/api/v2.0"
# Harbor answers 422 above 100 (goharbor/harbor swagger: pageSize maximum 100).
PAGE_SIZE = 100

# Endpoints that appeared in a later Harbor than 2.0 (research notes, harbor-anchors.md §1).
MIN_VERSION: dict[str, tuple[int, int]] = {
    "/health": (2, 3),
    "/statistics": (2, 3),
    "/quotas": (2, 3),
    "/jobservice/queues": (2, 8),
    "/jobservice/pools": (2, 8),
    "/security/summary": (2, 10),
    "/auditlog-exts": (2, 13),
}

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)")


class NotCollected(Exception):
    """The endpoint is missing in this Harbor version or forbidden for the account."""


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``v2.15.2-abc123`` -> (2, 15)."""
    match = _VERSION_RE.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def repo_path(name: str) -> str:
    """A repository name as a path segment: Harbor wants ``a/b`` encoded twice (``a%252Fb``)."""
    return quote(quote(name, safe=""), safe="")


def gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


class HarborAPI:
    def __init__(self, target: TargetConfig, client: RegistryClient | None = None):
        self.target = target
        self.client = client or RegistryClient.for_target(target)
        self._slots = threading.BoundedSemaphore(target.concurrency)
        self._lock = threading.Lock()
        self._collected: dict[str, bool] = {}
        self._version: tuple[int, int] | None = None
        self._version_at = 0.0
        self._paused: tuple[float, RegistryError] | None = None
        self.requests = 0

    # ------------------------------------------------------------------ requests

    def _get(self, path: str, params: dict | None = None) -> Any:
        """One GET within the target's concurrency bound.

        After a 429 the client could not wait out, or a Harbor that is down (unreachable, 5xx after
        the client's retries), every group of the target pauses instead of asking again at once.
        """
        with self._lock:
            paused = self._paused
        if paused is not None and paused[0] > time.monotonic():
            cause = paused[1]
            raise type(cause)(f"{cause} (not asked again for {paused[0] - time.monotonic():.0f}s)",
                              status=cause.status)
        url = path if path.startswith(("http://", "https://")) else self.client.url + API + path
        with self._slots:
            self.requests += 1
            try:
                return self.client.request("GET", url, params=params, preemptive_basic=True,
                                           headers={"Accept": "application/json"})
            except RateLimited as exc:
                self._pause(exc, max(self.target.interval / 2, 5.0))
                raise
            except (Unreachable, ServerError) as exc:
                self._pause(exc, min(self.target.interval / 2, 30.0))
                raise

    def _pause(self, cause: RegistryError, seconds: float) -> None:
        with self._lock:
            self._paused = (time.monotonic() + seconds, cause)

    def get(self, path: str, params: dict | None = None, *, endpoint: str | None = None) -> Any:
        """GET ``path`` (under /api/v2.0) and return its JSON; NotCollected if unavailable for us."""
        endpoint = endpoint or path
        self._check_version(endpoint)
        try:
            resp = self._get(path, params)
        except (NotFound, AuthFailed, Forbidden) as exc:
            if "{" in endpoint and isinstance(exc, NotFound):
                raise  # one item vanished (a project deleted meanwhile), not the endpoint
            self.mark(endpoint, False, _why(exc))
            raise NotCollected(endpoint) from None
        self.mark(endpoint, True)
        return _json(resp, self.target.name)

    def pages(self, path: str, params: dict | None = None, *, endpoint: str | None = None,
              max_pages: int | None = None) -> Iterator[list]:
        """Yield each page (a list) of a Harbor list endpoint, page_size 100.

        The first page's ``X-Total-Count`` says how many pages follow; those are fetched
        concurrently within the target's bound and yielded in order. Without the header the
        relative ``Link: <...>; rel="next"`` is followed one page at a time.
        """
        endpoint = endpoint or path
        self._check_version(endpoint)
        query = dict(params or {}, page=1, page_size=PAGE_SIZE)
        try:
            first = self._get(path, query)
        except (NotFound, AuthFailed, Forbidden) as exc:
            self.mark(endpoint, False, _why(exc))
            raise NotCollected(endpoint) from None
        self.mark(endpoint, True)
        items = _json_list(first, self.target.name)
        yield items
        total = first.headers.get("X-Total-Count", "")
        if total.isdigit():
            pages = math.ceil(int(total) / PAGE_SIZE)
            if max_pages is not None:
                pages = min(pages, max_pages)
            if pages <= 1 or len(items) < PAGE_SIZE:
                return
            rest = [dict(query, page=n) for n in range(2, pages + 1)]
            with ContextPool(max_workers=self.target.concurrency,
                                    thread_name_prefix=f"harbor-{self.target.name}") as pool:
                # Submit a window at a time so a huge listing does not hold every page in memory.
                window = self.target.concurrency * 2
                for start in range(0, len(rest), window):
                    futures = [pool.submit(self._page, path, q) for q in rest[start:start + window]]
                    for future in futures:
                        page = future.result()
                        if page:
                            yield page
            return
        response, seen, count = first, set(), 1
        while True:
            nxt = response.links.get("next", {}).get("url")
            if not nxt or (max_pages is not None and count >= max_pages):
                return
            url = urljoin(response.url, nxt)
            if url in seen:
                raise ProtocolError(f"target {self.target.name}: Harbor pagination loops at {endpoint}")
            seen.add(url)
            response = self._get(url)
            count += 1
            yield _json_list(response, self.target.name)

    def _page(self, path: str, query: dict) -> list:
        return _json_list(self._get(path, query), self.target.name)

    def page(self, path: str, number: int, params: dict | None = None, *, endpoint: str | None = None,
             page_size: int = PAGE_SIZE) -> tuple[list, int | None]:
        """One page and the total (``X-Total-Count``) of a list endpoint, for the incremental groups."""
        endpoint = endpoint or path
        self._check_version(endpoint)
        try:
            resp = self._get(path, dict(params or {}, page=number, page_size=page_size))
        except (NotFound, AuthFailed, Forbidden) as exc:
            if "{" in endpoint and isinstance(exc, NotFound):
                raise
            self.mark(endpoint, False, _why(exc))
            raise NotCollected(endpoint) from None
        self.mark(endpoint, True)
        total = resp.headers.get("X-Total-Count", "")
        return _json_list(resp, self.target.name), int(total) if total.isdigit() else None

    def list_all(self, path: str, params: dict | None = None, *, endpoint: str | None = None) -> list:
        """Every item of a (small) list endpoint."""
        return [item for page in self.pages(path, params, endpoint=endpoint) for item in page]

    # ------------------------------------------------------------------ version and availability

    def version(self) -> tuple[int, int] | None:
        """The Harbor version from /systeminfo (re-read at most once per interval)."""
        with self._lock:
            fresh = time.monotonic() - self._version_at < self.target.interval
            if fresh:
                return self._version
        self.systeminfo()
        return self._version

    def systeminfo(self) -> dict:
        info = _json(self._get("/systeminfo"), self.target.name)
        with self._lock:
            self._version = parse_version(info.get("harbor_version"))
            self._version_at = time.monotonic()
        return info

    def has(self, endpoint: str) -> bool:
        """False if the Harbor version is known to lack ``endpoint``."""
        need = MIN_VERSION.get(endpoint)
        have = self._version
        return need is None or have is None or have >= need

    def _check_version(self, endpoint: str) -> None:
        if not self.has(endpoint):
            need = MIN_VERSION[endpoint]
            self.mark(endpoint, False, f"Harbor {self._version[0]}.{self._version[1]} has no such endpoint "
                                       f"(it came in {need[0]}.{need[1]})")
            raise NotCollected(endpoint)

    def mark(self, endpoint: str, collected: bool, why: str = "") -> None:
        with self._lock:
            before = self._collected.get(endpoint)
            self._collected[endpoint] = collected
        if before is collected:
            return
        if not collected:
            log.warning("Harbor endpoint not collected", extra={
                "target": self.target.name, "endpoint": API + endpoint, "err": why,
                "hint": "grant the account the permission (a system robot with read access), or ignore this "
                        "if your Harbor version lacks the endpoint"})
        elif before is False:
            log.info("Harbor endpoint collected again", extra={"target": self.target.name,
                                                               "endpoint": API + endpoint})

    def collected_family(self, endpoints: Iterable[str]) -> Metric:
        with self._lock:
            rows = [([self.target.name, e], 1.0 if self._collected[e] else 0.0)
                    for e in endpoints if e in self._collected]
        return gauge("regwatch_harbor_endpoint_collected",
                     "1 if the Harbor API endpoint answered the last collection, 0 if this Harbor version lacks "
                     "it or the account may not read it (so its metrics are absent).",
                     ["target", "endpoint"], rows)

    def close(self) -> None:
        self.client.close()


class HarborGroup(Collector):
    """A Harbor metric group: one collector job with its own success, duration and schedule.

    Subclasses set ``group`` and ``endpoints`` and implement ``gather()``; an endpoint that is
    not collected simply leaves its metrics out.
    """

    group = ""
    endpoints: tuple[str, ...] = ()

    def __init__(self, api: HarborAPI):
        self.api = api
        self.target = api.target
        self.name = f"harbor_{self.group}"

    def collect(self) -> Iterable[Metric]:
        families = list(self.gather())
        families.append(self.api.collected_family(self.endpoints))
        return families

    def gather(self) -> Iterable[Metric]:  # pragma: no cover - interface
        raise NotImplementedError

    def optional(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, or None if its endpoint is not collected."""
        try:
            return fn(*args, **kwargs)
        except NotCollected:
            return None


def _why(exc: Exception) -> str:
    return str(exc)


def _json(resp: Any, name: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise ProtocolError(f"target {name}: Harbor answered {resp.url.split('?')[0]} without JSON; "
                            "is the url the Harbor address (not its registry or a proxy login page)?") from None


def _json_list(resp: Any, name: str) -> list:
    data = _json(resp, name)
    if not isinstance(data, list):
        raise ProtocolError(f"target {name}: Harbor list endpoint {resp.url.split('?')[0]} did not answer a list")
    return data


def timestamp(text: str | None) -> float | None:
    """Unix time of a Harbor date-time (``2024-01-02T03:04:05.123Z``); None for missing or Go's zero time."""
    from datetime import datetime, timezone

    if not text or text.startswith("0001-01-01"):
        return None
    value = text.strip().replace("Z", "+00:00")
    # Python before 3.11 rejects nanoseconds: keep at most microseconds.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
