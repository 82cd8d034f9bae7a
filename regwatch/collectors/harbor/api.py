"""Harbor's REST API (v2.0) as the Harbor collectors use it: pagination, version detection,
bounded concurrency, "not collected" bookkeeping, and typed reading of every answer.

Every Harbor group collector of one target shares one ``HarborAPI``: its semaphore bounds the
requests in flight against that Harbor (``target.concurrency``), whichever groups are running.

An endpoint the Harbor version lacks (404, or known from the version) or the account may not
read (401/403) is *not collected*: ``regwatch_harbor_endpoint_collected{endpoint} 0`` and one
log line when that changes, instead of a failed collection every cycle.

Every byte from Harbor is untrusted. Bodies are bounded by the client; an answer of the wrong
shape (an object where the swagger has a list, a string where it has a number, an
``X-Total-Count`` that is not a count or promises more pages than regwatch reads) is a
``ProtocolError`` naming the request and the field, never a traceback: ``Fields`` reads JSON
objects field by field with the type the swagger declares.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from urllib.parse import quote, urlsplit

from prometheus_client.metrics_core import Metric

from regwatch.budget import ContextPool
from regwatch.client import (AuthFailed, DeadlineExceeded, Forbidden, NotFound, ProtocolError, RateLimited,
                             RegistryClient, RegistryError, ServerError, Unreachable, parse_json)
from regwatch.collectors import Collector
from regwatch.config import TargetConfig
from regwatch.families import gauge

log = logging.getLogger("regwatch.collectors.harbor")

API = "/api/v2.0"
# Harbor answers 422 above 100 (goharbor/harbor swagger: pageSize maximum 100).
PAGE_SIZE = 100
_ACCEPT = {"Accept": "application/json"}
# Harbor caps names at 255 characters; a longer "name" is not Harbor talking and must not become a label.
MAX_TEXT = 1024
_TOTAL = re.compile(r"[0-9]{1,15}")

# Endpoints that appeared in a later Harbor than 2.0 (research notes, harbor-anchors.md §1; the jobservice
# monitor, /schedules and the audit purge checked against goharbor/harbor's tags: v2.7.0 and v2.6.0 are the
# first whose api/v2.0/swagger.yaml has them).
MIN_VERSION: dict[str, tuple[int, int]] = {
    "/health": (2, 3),
    "/statistics": (2, 3),
    "/quotas": (2, 3),
    "/system/purgeaudit": (2, 6),
    "/system/purgeaudit/schedule": (2, 6),
    "/jobservice/queues": (2, 7),
    "/jobservice/pools": (2, 7),
    "/schedules": (2, 7),
    "/schedules/{job_type}/paused": (2, 7),
    "/security/summary": (2, 10),
    "/projects/{project_name_or_id}/artifacts": (2, 12),
    "/auditlog-exts": (2, 13),
}

_VERSION_RE = re.compile(r"v?(\d{1,4})\.(\d{1,4})")


@dataclass(frozen=True)
class Project:
    """What the groups need of one project, from one shared ``/projects`` listing."""

    id: int
    name: str
    public: bool
    repo_count: int
    registry_id: int | None  # the upstream of a proxy-cache project
    retention_id: int | None  # its tag-retention policy


class NotCollected(Exception):
    """The endpoint is missing in this Harbor version or forbidden for the account."""


class NotHarbor(ProtocolError):
    """What answers /api/v2.0/systeminfo is not Harbor; ``detail`` says what it answered."""

    def __init__(self, detail: str, status: int | None = None):
        super().__init__(detail, status=status)
        self.detail = detail


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``v2.15.2-abc123`` -> (2, 15)."""
    match = _VERSION_RE.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def repo_path(name: str) -> str:
    """A repository name as a path segment: Harbor wants ``a/b`` encoded twice (``a%252Fb``)."""
    return quote(quote(name, safe=""), safe="")


def timestamp(text: Any) -> float | None:
    """Unix time of a Harbor date-time (``2024-01-02T03:04:05.123Z``); None for missing, unparseable or
    Go's zero time (``0001-01-01T00:00:00Z``, what Harbor sends for "never")."""
    if not isinstance(text, str) or not text or text.startswith("0001-01-01"):
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Fields:
    """One JSON object of a Harbor answer, read field by field with the type Harbor's swagger declares.

    A missing or null field gives the default; a field of another type raises a ``ProtocolError``
    that names the request and the field (``target h: GET /api/v2.0/quotas: item 3's hard.storage
    is "lots", not a number``).
    """

    __slots__ = ("data", "where", "path")

    def __init__(self, data: Any, where: str, path: str = ""):
        if not isinstance(data, dict):
            raise ProtocolError(f"{where}: {(path or 'the answer').rstrip('.')} is {_kind(data)}, not an object "
                                "as Harbor's API sends; is url a Harbor (and not a proxy or another server)?")
        self.data = data
        self.where = where
        self.path = path

    def _bad(self, key: str, value: Any, expected: str) -> ProtocolError:
        name = self.path + key
        if name.startswith("item "):
            number, _, rest = name.partition(".")
            name = f"{number}'s {rest}"
        return ProtocolError(f"{self.where}: {name} is {_shown(value)}, not {expected} as Harbor's API sends; "
                             "is url a Harbor (and not a proxy or another server)?")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        if len(value) > MAX_TEXT:
            raise self._bad(key, value[:40], f"a string of at most {MAX_TEXT} characters")
        return value

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, value, "a number")
        try:
            return float(value)
        except OverflowError:
            raise self._bad(key, value, "a number regwatch can hold") from None

    def integer(self, key: str, default: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, value, "an integer")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def time(self, key: str) -> float | None:
        """A date-time field as Unix time; None when missing, empty or Go's zero time."""
        value = self.data.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._bad(key, value, "a date-time string")
        if value.startswith("0001-01-01"):
            return None
        when = timestamp(value[:64])
        if when is None:
            raise self._bad(key, value, "a date-time")
        return when

    def obj(self, key: str) -> Fields:
        value = self.data.get(key)
        if value is None:
            return Fields({}, self.where, f"{self.path}{key}.")
        if not isinstance(value, dict):
            raise self._bad(key, value, "an object")
        return Fields(value, self.where, f"{self.path}{key}.")

    def objects(self, key: str) -> list[Fields]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(key, value, "a list")
        return [Fields(item, self.where, f"{self.path}{key}[{i}].") for i, item in enumerate(value)]

    def embedded(self, key: str, limit: int = 64 << 10) -> Fields:
        """A string field that holds a JSON object (GC's ``job_parameters``), parsed and read as ``Fields``."""
        value = self.data.get(key)
        if value is None or value == "":
            return Fields({}, self.where, f"{self.path}{key}.")
        if not isinstance(value, str) or len(value) > limit:
            raise self._bad(key, value, f"a JSON object in a string of at most {limit} characters")
        try:
            data = json.loads(value)
        except (ValueError, RecursionError):
            raise self._bad(key, value, "a JSON object in a string") from None
        if not isinstance(data, dict):
            raise self._bad(key, value, "a JSON object in a string")
        return Fields(data, self.where, f"{self.path}{key}.")


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return _shown(value)
    if isinstance(value, (int, float)):
        return "a number"
    return "an object"


def items_of(data: Any, where: str) -> list[Fields]:
    """A list answer as its objects; anything but a list of objects is a ProtocolError naming ``where``."""
    if not isinstance(data, list):
        raise ProtocolError(f"{where}: the answer is {_kind(data)}, not a list as Harbor's API sends for this "
                            "endpoint; is url a Harbor (and not a proxy or another server)?")
    return [Fields(item, where, f"item {i}.") for i, item in enumerate(data)]


class HarborAPI:
    def __init__(self, target: TargetConfig, client: RegistryClient):
        self.target = target
        self.client = client
        self._slots = threading.BoundedSemaphore(target.concurrency)
        self._lock = threading.Lock()
        self._collected: dict[str, bool] = {}
        self._version: tuple[int, int] | None = None
        self._version_at = 0.0
        self._paused: tuple[float, RegistryError] | None = None
        self._warned: set[str] = set()
        self._projects: tuple[float, list[Project]] | None = None
        self._projects_lock = threading.Lock()

    # ------------------------------------------------------------------ requests

    def where(self, path: str, page: int | None = None) -> str:
        """How an error names a request: ``target h: GET /api/v2.0/quotas`` (``?page=3`` past the first page)."""
        path = urlsplit(path).path  # a next-page link is a whole URL, its path already under /api/v2.0
        shown = path if path.startswith(API + "/") else API + path
        return f"target {self.target.name}: GET {shown}" + (f"?page={page}" if page and page > 1 else "")

    def _request(self, call: Callable[[], Any]) -> Any:
        """``call()`` (one request) within the target's concurrency bound.

        After a 429 the client could not wait out, or a Harbor that is down (unreachable, 5xx after
        the client's retries), every group of the target pauses instead of asking again at once.
        """
        with self._lock:
            paused = self._paused
        if paused is not None and paused[0] > time.monotonic():
            cause = paused[1]
            again = type(cause)(f"{cause} (not asked again for {paused[0] - time.monotonic():.0f}s)",
                                status=cause.status)
            again.reason = cause.reason
            raise again
        with self._slots:
            try:
                return call()
            except RateLimited as exc:
                self._pause(exc, max(self.target.interval / 2, 5.0))
                raise
            except DeadlineExceeded:
                raise  # this collection ran out of its own budget: Harbor is not down for the other groups
            except (Unreachable, ServerError) as exc:
                self._pause(exc, min(self.target.interval / 2, 30.0))
                raise

    def _pause(self, cause: RegistryError, seconds: float) -> None:
        with self._lock:
            self._paused = (time.monotonic() + seconds, cause)

    def _get(self, path: str, params: dict | None = None) -> Any:
        return self._request(lambda: self.client.request("GET", self.client.url + API + path, params=params,
                                                         preemptive_basic=True, headers=_ACCEPT))

    def _answer(self, endpoint: str, call: Callable[[], Any]) -> Any:
        """The first request to ``endpoint`` of a collection: it decides whether the endpoint is collected."""
        self._check_version(endpoint)
        try:
            resp = call()
        except (NotFound, AuthFailed, Forbidden) as exc:
            if "{" in endpoint and isinstance(exc, NotFound):
                raise  # one item vanished (a project deleted meanwhile), not the endpoint
            self.mark(endpoint, False, str(exc), _HINTS[type(exc)])
            raise NotCollected(endpoint) from None
        self.mark(endpoint, True)
        return resp

    def _json(self, resp: Any, path: str, page: int | None = None) -> Any:
        return parse_json(resp.content, self.where(path, page),
                          "is url the Harbor address (not its registry or a proxy login page)?")

    def get(self, path: str, params: dict | None = None, *, endpoint: str | None = None) -> Any:
        """GET ``path`` (under /api/v2.0) and return its JSON, any shape (None for an empty body: go-swagger
        writes nothing for a nil payload, which is how Harbor answers "no schedule"); NotCollected if
        unavailable for us."""
        resp = self._answer(endpoint or path, lambda: self._get(path, params))
        if not resp.content.strip():
            return None
        return self._json(resp, path)

    def obj(self, path: str, params: dict | None = None, *, endpoint: str | None = None) -> Fields:
        """An endpoint that answers one object."""
        return Fields(self.get(path, params, endpoint=endpoint), self.where(path))

    def items(self, path: str, params: dict | None = None, *, endpoint: str | None = None) -> list[Fields]:
        """An endpoint that answers a list of objects in one piece (no pagination: /jobservice/queues)."""
        return items_of(self.get(path, params, endpoint=endpoint), self.where(path))

    def pages(self, path: str, params: dict | None = None, *, endpoint: str | None = None,
              max_pages: int | None = None) -> Iterator[list[Fields]]:
        """Yield each page (its objects) of a Harbor list endpoint, page_size 100.

        The client's pagination reads the first page and follows the relative ``Link: <...>;
        rel="next"`` (same origin only, loop and page-count checked). When the first page has
        ``X-Total-Count``, the pages it promises are fetched concurrently instead, within the
        target's bound, and yielded in order until a short page. ``max_pages`` stops early
        without an error (the audit group's per-collection share).
        """
        endpoint = endpoint or path
        query = dict(params or {}, page=1, page_size=PAGE_SIZE)
        pager = self.client.paginate(self.client.url + API + path, params=query, preemptive_basic=True,
                                     headers=_ACCEPT)
        try:
            first = self._answer(endpoint, lambda: self._request(lambda: next(pager)))
            items = items_of(self._json(first, path), self.where(path))
            yield items
            total = self._total(first, path)
            if total is not None:
                pages = math.ceil(total / PAGE_SIZE)
                if max_pages is None and pages > self.client.max_pages:
                    raise ProtocolError(f"{self.where(path)}: X-Total-Count says {total} items, more than the "
                                        f"{self.client.max_pages} pages of {PAGE_SIZE} regwatch reads from one "
                                        "listing; a Harbor that never stops paging?")
                pages = min(pages, max_pages) if max_pages is not None else pages
                if pages > 1 and len(items) >= PAGE_SIZE:
                    yield from self._fan_out(path, query, pages)
                return
            count = 1
            while max_pages is None or count < max_pages:
                resp = self._request(lambda: next(pager, None))
                if resp is None:
                    return
                count += 1
                yield items_of(self._json(resp, resp.url, count), self.where(resp.url, count))
        finally:
            pager.close()

    def _total(self, resp: Any, path: str) -> int | None:
        value = resp.headers.get("X-Total-Count")
        if value is None:
            return None
        if not _TOTAL.fullmatch(value.strip()):
            raise ProtocolError(f"{self.where(path)}: X-Total-Count {_shown(value)} is not a count of items")
        return int(value)

    def _fan_out(self, path: str, query: dict, pages: int) -> Iterator[list[Fields]]:
        window = self.target.concurrency * 2  # a window at a time: a huge listing is never all in memory
        with ContextPool(max_workers=self.target.concurrency, thread_name_prefix=f"harbor-{self.target.name}") \
                as pool:
            for start in range(2, pages + 1, window):
                numbers = range(start, min(start + window, pages + 1))
                futures = [pool.submit(self._page_items, path, dict(query, page=n)) for n in numbers]
                for future in futures:
                    page = future.result()
                    if page:
                        yield page
                    if len(page) < PAGE_SIZE:  # the listing ended early (items deleted, or the count lied)
                        for rest in futures:
                            rest.cancel()
                        return

    def _page_items(self, path: str, query: dict) -> list[Fields]:
        page = query["page"]
        return items_of(self._json(self._get(path, query), path, page), self.where(path, page))

    def page(self, path: str, number: int, params: dict | None = None, *, endpoint: str | None = None,
             page_size: int = PAGE_SIZE) -> tuple[list[Fields], int | None]:
        """One page and the total (``X-Total-Count``) of a list endpoint, for the incremental groups."""
        query = dict(params or {}, page=number, page_size=page_size)
        resp = self._answer(endpoint or path, lambda: self._get(path, query))
        return items_of(self._json(resp, path, number), self.where(path, number)), self._total(resp, path)

    def projects(self) -> list[Project]:
        """Every project the account sees, listed once per interval and shared by the groups that need it
        (projects, members, retention, preheat, artifacts): one listing of 10,000 projects, not five."""
        with self._projects_lock:  # one listing at a time; the others wait for it and share it
            cached = self._projects
            if cached is not None and time.monotonic() - cached[0] < self.target.interval:
                return cached[1]
            listing = []
            for page in self.pages("/projects"):
                for p in page:
                    metadata = p.obj("metadata")
                    retention = metadata.text("retention_id")
                    listing.append(Project(
                        p.integer("project_id", 0), p.text("name"), metadata.text("public", "false").lower() == "true",
                        p.integer("repo_count", 0), p.integer("registry_id") or None,
                        int(retention) if retention.isascii() and retention.isdigit() and len(retention) <= 18
                        else None))
            self._projects = (time.monotonic(), listing)
            return listing

    def list_all(self, path: str, params: dict | None = None, *, endpoint: str | None = None) -> list[Fields]:
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

    def systeminfo(self) -> Fields:
        """/systeminfo, which every Harbor answers (anonymous callers too); NotHarbor if what answers is not one."""
        try:
            resp = self._get("/systeminfo")
        except NotFound:
            raise NotHarbor("answered 404", status=404) from None
        try:
            data = json.loads(resp.content)
        except (ValueError, RecursionError):
            kind = resp.headers.get("Content-Type", "").split(";")[0].strip()[:40] or "no content type"
            raise NotHarbor(f"answered {kind}, not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("auth_mode"), str):
            raise NotHarbor("answered JSON without Harbor's auth_mode")
        info = Fields(data, self.where("/systeminfo"))
        version = parse_version(info.text("harbor_version"))
        with self._lock:
            self._version = version
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
                                       f"(it came in {need[0]}.{need[1]})", "")
            raise NotCollected(endpoint)

    def mark(self, endpoint: str, collected: bool, why: str = "", hint: str = "") -> None:
        with self._lock:
            before = self._collected.get(endpoint)
            self._collected[endpoint] = collected
        if before is collected:
            return
        if not collected:
            log.warning("Harbor endpoint not collected", extra={
                "target": self.target.name, "endpoint": API + endpoint, "err": why,
                **({"hint": hint} if hint else {})})
        elif before is False:
            log.info("Harbor endpoint collected again", extra={"target": self.target.name,
                                                               "endpoint": API + endpoint})

    def warn_once(self, key: str, message: str, **extra: str) -> None:
        """One log line per distinct ``key`` (a bad cron of one schedule), not one per collection."""
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message, extra={"target": self.target.name, **extra})

    def collected_family(self, endpoints: Iterable[str]) -> Metric:
        with self._lock:
            rows = [([self.target.name, e], 1.0 if self._collected[e] else 0.0)
                    for e in endpoints if e in self._collected]
        return gauge("regwatch_harbor_endpoint_collected",
                     "1 if the Harbor API endpoint answered the last collection, 0 if this Harbor version lacks "
                     "it or the account may not read it (so its metrics are absent; cached).",
                     ["target", "endpoint"], rows)

    def close(self) -> None:
        self.client.close()


_HINTS = {
    NotFound: "this Harbor version lacks the endpoint; nothing to do unless you expected it",
    AuthFailed: "Harbor did not accept the credentials for it; check username and the password file",
    Forbidden: "grant the account the read permission for it (a system robot with the permissions in "
               "docs/harbor.md)",
}


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
        for family in families:
            seen: set[tuple] = set()
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key in seen:
                    # Harbor's names are unique; twice the same one would make the whole /metrics unscrapable.
                    raise ProtocolError(f"target {self.target.name}: Harbor listed the same item twice "
                                        f"({sample.name}{{{', '.join(f'{k}={v!r}' for k, v in key[1])}}}); "
                                        "this group's metrics are withheld until it answers consistently")
                seen.add(key)
        return families

    def gather(self) -> Iterable[Metric]:  # pragma: no cover - interface
        raise NotImplementedError

    def optional(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, or None if its endpoint is not collected."""
        try:
            return fn(*args, **kwargs)
        except NotCollected:
            return None
