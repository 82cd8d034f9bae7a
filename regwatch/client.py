"""The one HTTP client regwatch uses to talk to registries (and to vendor REST APIs).

It owns authentication (``regwatch.auth``: credentials bound to the registry's origin, Bearer
tokens from the realm the registry named, cached until they expire), retries with backoff,
``Retry-After`` in both its forms, pacing by ``RateLimit-Remaining`` and a requests-per-second
cap, TLS options, ``Link`` pagination and redirects. Nothing else imports ``requests``.

Every peer is untrusted:

- Credentials go only to the target's own origin (scheme, host, port). A redirect, a ``Link``
  page or an upload ``Location`` elsewhere gets none; a cross-origin ``Link`` or upload
  ``Location`` is refused; a challenge from another origin is ignored.
- Every body is read with a cap (``MANIFEST_LIMIT``, ``JSON_LIMIT``, ``ERROR_LIMIT``); an
  overrun is ``TooLarge``, never memory.
- Every exchange has an overall deadline (connect to last byte), not only a per-read
  timeout: a watchdog shuts the socket when it passes, so a body that trickles a byte every
  second cannot hold a collection. The collection's own deadline (``regwatch.budget.Run``)
  caps every exchange and every wait.

Errors are ``RegistryError`` subclasses (``regwatch.failures``) whose message names the
target, the request and the peer (``host:port``), says what to do next, and never holds a
credential or a header value.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from regwatch.auth import CATALOG_SCOPE, Authenticator, Challenge, origin_of, parse_www_authenticate, \
    repository_scope
from regwatch.budget import Budget, current_run
from regwatch.config import DISTRIBUTION_MAX_PAGE
from regwatch.credentials import NONE, Credentials, from_target
from regwatch.failures import (AuthFailed, DeadlineExceeded, Forbidden, InsecureAuth, NotFound, ProtocolError,
                               RateLimited, RegistryError, ServerError, Timeout, TLSError, TooLarge, Unreachable,
                               classify_connection, status_error)
from regwatch.oci import BadName, check_digest, check_reference, check_repository, is_repository, is_tag
from regwatch.tls import warn_verification_off

log = logging.getLogger("regwatch.client")

__all__ = [
    "AuthFailed", "CATALOG_SCOPE", "Challenge", "DeadlineExceeded", "Forbidden", "INDEX_MEDIA_TYPES", "InsecureAuth",
    "MANIFEST_ACCEPT", "MEDIA_DOCKER_LIST", "MEDIA_DOCKER_MANIFEST", "MEDIA_OCI_INDEX", "MEDIA_OCI_MANIFEST",
    "Manifest", "NotFound", "ProtocolError", "RateLimit", "RateLimited", "RegistryClient", "RegistryError",
    "ServerError", "TLSError", "Timeout", "TooLarge", "USER_AGENT", "Unreachable", "parse_www_authenticate",
    "parse_json", "read_body", "repository_scope",
]

# Media types a client asks for, in order of preference, as container runtimes do.
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join([MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST])
INDEX_MEDIA_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})

USER_AGENT = "regwatch"
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5

# Body caps. Distribution and containerd refuse manifests over 4 MiB; a JSON page of 1000
# repositories is a few hundred KiB; an error body is a line or two.
MANIFEST_LIMIT = 4 << 20
JSON_LIMIT = 8 << 20
ERROR_LIMIT = 64 << 10
# A listing longer than this many pages is a registry that never stops paging.
MAX_PAGES = 10_000
# A blob download may run this much longer than the exchange timeout per byte of its size:
# 1/MIN_BLOB_RATE seconds per byte, i.e. it must average at least MIN_BLOB_RATE bytes/s.
MIN_BLOB_RATE = 256 * 1024
_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- the deadline watchdog


class _Guard:
    """The deadline of one exchange. The connection urllib3 uses for it is attached as soon as it is
    taken from the pool; when the deadline passes, the watchdog shuts its socket down, which wakes
    a read blocked in the kernel."""

    __slots__ = ("deadline", "conn", "expired", "done", "__weakref__")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.conn: Any = None
        self.expired = False
        self.done = False

    def extend_to(self, deadline: float) -> None:
        self.deadline = deadline
        _WATCHDOG.add(self)

    def fire(self) -> None:
        if self.done:
            return
        self.expired = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            with suppress(OSError):  # closed already: the deadline only needs it cut
                sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self.done = True
        self.conn = None


class _Watchdog:
    """One daemon thread for every exchange in flight; it sleeps until the nearest deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Guard]] = []
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, guard: _Guard) -> None:
        with self._cond:
            heapq.heappush(self._heap, (guard.deadline, next(self._ids), guard))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="regwatch-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(30.0)
                    continue
                deadline, _, guard = self._heap[0]
                now = time.monotonic()
                if guard.deadline > deadline:  # extended: file it again under its new deadline
                    heapq.heappop(self._heap)
                    heapq.heappush(self._heap, (guard.deadline, next(self._ids), guard))
                    continue
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
            guard.fire()


_WATCHDOG = _Watchdog()
_local = threading.local()


class _GuardedPoolMixin:
    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        guard = getattr(_local, "guard", None)
        if guard is not None:
            guard.conn = conn
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _GuardedHTTPPool(_GuardedPoolMixin, HTTPConnectionPool):
    pass


class _GuardedHTTPSPool(_GuardedPoolMixin, HTTPSConnectionPool):
    pass


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True)
class RateLimit:
    """What the last response said about the registry's rate limit (Docker Hub's ``ratelimit-*``
    headers, or the IETF ``RateLimit-*`` fields)."""

    limit: float | None
    remaining: float | None
    window: float | None
    reset: float | None  # seconds until the window resets, if the registry says
    source: str | None   # docker-ratelimit-source: who the limit is counted against
    at: float            # monotonic time of the response


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _number_and_window(value: str | None) -> tuple[float | None, float | None]:
    """``76;w=21600`` -> (76.0, 21600.0); ``76`` -> (76.0, None)."""
    if not value:
        return None, None
    head, *params = value[:200].split(";")
    number = _finite(head.strip().split(",")[0])
    window = None
    for param in params:
        key, _, val = param.strip().partition("=")
        if key.strip().lower() == "w":
            window = _finite(val)
    return number, window


def _finite(text: str) -> float | None:
    """A count or a number of seconds as a peer sends it: finite and not negative, else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_ratelimit(headers: Any) -> RateLimit | None:
    limit, window = _number_and_window(headers.get("RateLimit-Limit"))
    remaining, window2 = _number_and_window(headers.get("RateLimit-Remaining"))
    window = window if window is not None else window2
    if limit is None and remaining is None and window is None:
        return None
    reset, _ = _number_and_window(headers.get("RateLimit-Reset"))
    source = headers.get("Docker-RateLimit-Source")
    if source is not None:
        source = source.strip()[:100]
    return RateLimit(limit, remaining, window, reset, source or None, time.monotonic())


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


class RegistryClient:
    """A registry HTTP API v2 client (also used for Harbor/Nexus/Artifactory REST calls).

    ``name`` is the target's name and appears in error messages and logs. ``credentials`` are
    sent only to ``url``'s origin. ``api_key_header`` names the header an API key goes in;
    ``preemptive_basic`` sends Basic credentials without waiting for a challenge (REST APIs).
    ``max_rps`` caps requests per second to this registry. ``pace_ratelimit`` spreads requests over what is
    left of the registry's rate limit when it runs low; off for a client whose requests do not count against
    that limit (manifest HEADs that read an upstream's pull limit).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        credentials: Credentials | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
        budget: Budget | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        pool_size: int = 10,
        v2_prefix: str = "/v2",
        api_key_header: str | None = None,
        preemptive_basic: bool = False,
        max_rps: float | None = None,
        max_pages: int = MAX_PAGES,
        pace_ratelimit: bool = True,
    ):
        parts = urlsplit(url)
        if parts.username or parts.password:
            raise ValueError("a registry URL must not carry credentials (user:password@); use the config, "
                             "REGWATCH_USERNAME/REGWATCH_PASSWORD or docker login")
        self.url = url.rstrip("/")
        self.name = name or parts.netloc
        if credentials is None:
            credentials = Credentials(username=username, password=password, token=token,
                                      source="the caller") if (username or token) else NONE
        self.credentials = credentials
        budget = budget or Budget()
        overrides = {k: v for k, v in (("timeout", timeout), ("retries", retries), ("backoff", backoff))
                     if v is not None}
        if overrides:
            from dataclasses import replace
            budget = replace(budget, **overrides)
        self.budget = budget
        self.v2_prefix = v2_prefix.rstrip("/")
        self.insecure = insecure_skip_verify
        self.max_rps = max_rps
        self.max_pages = max_pages
        self.pace_ratelimit = pace_ratelimit
        self.page_limit: dict[str, int] = {}
        # Names a catalog or tags list offered that the distribution-spec grammar refuses (first 100), for reports.
        self.refused_names: list[str] = []
        self.last_ratelimit: RateLimit | None = None
        self._pace_lock = threading.Lock()
        self._next_slot = 0.0
        self.auth = Authenticator(self.url, credentials, name=self.name, fetch=self._fetch_token,
                                  tls_verified=not insecure_skip_verify, api_key_header=api_key_header,
                                  preemptive=preemptive_basic)
        self.session = requests.Session()
        adapter = _Adapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.trust_env = False
        if insecure_skip_verify:
            warn_verification_off(f"target {self.name}",
                                  "set tls.ca_file (or --ca-file) instead of tls.insecure_skip_verify (or --insecure)")
            self.session.verify = False
        elif ca_file:
            self.session.verify = str(ca_file)

    @property
    def timeout(self) -> float:
        return self.budget.timeout

    @property
    def retries(self) -> int:
        return self.budget.retries

    @classmethod
    def for_target(cls, target: Any, *, url: str | None = None, credentials: Credentials | None = None,
                   **kwargs: Any) -> RegistryClient:
        """A client from a ``TargetConfig`` (``url``: another endpoint of it, e.g. a Nexus Docker connector)."""
        kwargs.setdefault("pool_size", max(target.concurrency, 2))
        if "budget" not in kwargs:
            kwargs.setdefault("timeout", target.timeout)
        return cls(
            url or target.url,
            name=target.name,
            credentials=credentials if credentials is not None else from_target(target),
            ca_file=str(target.tls.ca_file) if target.tls.ca_file else None,
            insecure_skip_verify=target.tls.insecure_skip_verify,
            **kwargs,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ low level

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.url + path_or_url

    def _describe(self, method: str, url: str) -> str:
        parts = urlsplit(url)
        where = parts.path if self.auth.same_origin(url) else f"{parts.scheme}://{parts.netloc}{parts.path}"
        return f"target {self.name}: {method} {where}"

    def _peer(self, url: str) -> tuple[str, int]:
        _, host, port = origin_of(url)
        return host, port

    def _pace(self) -> None:
        """Wait for this request's slot: ``max_rps``, and the registry's remaining rate limit when it is low."""
        interval = 1.0 / self.max_rps if self.max_rps else 0.0
        rl = self.last_ratelimit if self.pace_ratelimit else None
        if rl is not None and rl.remaining is not None and rl.limit:
            low = max(1.0, rl.limit * 0.1)
            if rl.remaining <= low:
                # Spread what is left over what is left of the window, so the limit is not run into.
                left = rl.reset if rl.reset is not None else rl.window
                if left:
                    interval = max(interval, left / max(rl.remaining, 1.0))
        if not interval:
            return
        with self._pace_lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + interval
        wait = start - now
        if wait > 0:
            run = current_run()
            remaining = run.remaining() if run is not None else None
            room = min(x for x in (remaining, self.budget.retry_after_cap) if x is not None)
            if wait > room:
                with self._pace_lock:
                    self._next_slot -= interval  # this request does not take its slot
                left = rl.reset if rl is not None and rl.reset is not None else wait
                raise RateLimited(f"target {self.name}: staying within the registry's rate limit (remaining "
                                  f"{_count(rl.remaining if rl else None)}) needs a {wait:.0f}s wait before the next "
                                  f"request, longer than regwatch waits ({room:.0f}s); the limit resets in about "
                                  f"{left:.0f}s", status=None, reset_at=time.time() + left)
            self.budget.sleep(wait)

    def _exchange(self, method: str, url: str, headers: dict[str, str], *, data: Any = None,
                  params: dict | None = None, timeout: float | None = None) -> requests.Response:
        """One HTTP exchange: no retries, no redirects followed, the body not read yet (the guard stays
        armed until ``read_body``/``iter_body`` finishes or the response is closed)."""
        run = current_run()
        timeout = self.budget.timeout if timeout is None else timeout
        if run is not None:
            remaining = run.remaining()
            if remaining is not None:
                if remaining <= 0:
                    raise DeadlineExceeded(f"{self._describe(method, url)}: the collection ran out of its "
                                           f"{run.seconds:g}s budget before this request; {self._budget_hint()}")
                timeout = min(timeout, remaining)
        # A little past the socket's own timeout: a peer that sends nothing is the socket timeout's (a clearer
        # message); the guard is for one that keeps sending a trickle, which resets that timeout each time.
        guard = _Guard(time.monotonic() + timeout + 0.25)
        _WATCHDOG.add(guard)
        waiting = run.waiting_on(f"{method} {self._describe(method, url).split(': ', 1)[1]} "
                                 f"({self.name})") if run is not None else nullcontext()
        _local.guard = guard
        try:
            with waiting:
                resp = self.session.request(method, url, headers=headers, data=data, params=params,
                                            timeout=timeout, stream=True, allow_redirects=False)
        except (requests.exceptions.InvalidHeader, ValueError, UnicodeError):
            guard.finish()
            # The message of these names the header value, which may be a secret: never pass it on.
            raise ProtocolError(f"{self._describe(method, url)}: a header regwatch would send contains a character "
                                "HTTP does not allow (a newline or control character in a password, token or API "
                                "key file?); fix the secret (its value is not shown)") from None
        except requests.exceptions.RequestException as exc:
            guard.finish()
            raise self._connection_error(exc, method, url, guard, timeout) from None
        except BaseException:
            guard.finish()  # e.g. a request body (a file being uploaded) that raised while it was read
            raise
        finally:
            _local.guard = None
        resp._regwatch_guard = guard  # type: ignore[attr-defined]
        resp._regwatch_describe = self._describe(method, url)  # type: ignore[attr-defined]
        resp._regwatch_timeout = timeout  # type: ignore[attr-defined]
        return resp

    def _connection_error(self, exc: BaseException, method: str, url: str, guard: _Guard | None,
                          timeout: float) -> RegistryError:
        host, port = self._peer(url)
        what = self._describe(method, url)
        if guard is not None and guard.expired:
            return Timeout(f"{what}: {host}:{port} did not finish answering within {timeout:g}s (a slow or "
                           "trickling answer); the registry or a proxy in front of it is overloaded",
                           reason="timeout")
        phase = "read" if isinstance(exc, requests.exceptions.ReadTimeout) else "connect"
        failure = classify_connection(exc, host, port, timeout=timeout, phase=phase)
        cls = {"timeout": Timeout}.get(failure.reason, TLSError if failure.reason.startswith("tls") else Unreachable)
        return cls(f"{what}: {failure.message}", reason=failure.reason)

    def _budget_hint(self) -> str:
        return "raise the target's timeout, or look at why the registry is slow"

    def _send(self, method: str, url: str, headers: dict[str, str], *, data: Any = None,
              params: dict | None = None, timeout: float | None = None) -> requests.Response:
        """One request with retries on connection errors, timeouts, 429 and 502-504 (idempotent methods only),
        waiting the backoff or the peer's Retry-After, within the run's deadline."""
        idempotent = method in ("GET", "HEAD") or (method == "DELETE")
        attempt = 0
        while True:
            self._pace()
            try:
                resp = self._exchange(method, url, headers, data=data, params=params, timeout=timeout)
            except (Unreachable, Timeout) as exc:
                if isinstance(exc, DeadlineExceeded) or not idempotent or attempt >= self.budget.retries \
                        or exc.reason.startswith("tls") or exc.reason == "dns":
                    raise
                attempt += 1
                self._wait(self.budget.retry_wait(attempt, None), exc)
                continue
            rl = parse_ratelimit(resp.headers)
            if rl is not None:
                self.last_ratelimit = rl
            if resp.status_code in _RETRY_STATUSES and idempotent and attempt < self.budget.retries:
                after = retry_after_seconds(resp.headers.get("Retry-After"))
                if after is not None and after > self.budget.retry_after_cap:
                    return resp  # longer than regwatch waits: the caller reports when the limit resets
                wait = self.budget.retry_wait(attempt + 1, after)
                run = current_run()
                remaining = run.remaining() if run is not None else None
                if remaining is not None and wait >= remaining:
                    return resp
                attempt += 1
                resp.close()
                resp._regwatch_guard.finish()  # type: ignore[attr-defined]
                self._wait(wait, None)
                continue
            return resp

    def _wait(self, seconds: float, cause: RegistryError | None) -> None:
        run = current_run()
        remaining = run.remaining() if run is not None else None
        if remaining is not None and seconds >= remaining:
            if cause is not None:
                raise cause
            return
        if seconds > 0:
            self.budget.sleep(seconds)

    def _fetch_token(self, method: str, url: str, headers: dict[str, str], form: bytes | None) -> tuple[int, bytes]:
        """The Authenticator's transport: one token request, body bounded, no redirects followed."""
        from regwatch.auth import TOKEN_LIMIT

        if form is not None:
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        resp = self._send(method, url, headers, data=form)
        body = read_body(resp, TOKEN_LIMIT if resp.status_code == 200 else ERROR_LIMIT, strict=resp.status_code == 200)
        return resp.status_code, body

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        params: dict | None = None,
        data: Any = None,
        stream: bool = False,
        limit: int = JSON_LIMIT,
        follow_redirects: bool = True,
        timeout: float | None = None,
        preemptive_basic: bool = False,
    ) -> requests.Response:
        """Send a request, answering the registry's auth challenge once and following redirects (GET/HEAD);
        raise a RegistryError unless the final status is in ``ok``.

        ``scope`` is the token scope the request needs (e.g. ``repository:app:pull``). Unless ``stream``, the
        body is read now, at most ``limit`` bytes (``resp.content``/``resp.json()`` then work as usual); with
        ``stream`` the caller reads it with ``iter_body`` and closes it.
        """
        url = self._url(path)
        extra = dict(headers or {})
        for _ in range(_MAX_REDIRECTS + 1):
            sent = {**extra, **self._auth_headers(url, scope, preemptive_basic)}
            resp = self._send(method, url, sent, data=data, params=params, timeout=timeout)
            challenged = resp.status_code == 401 and self.auth.same_origin(url) \
                and not (preemptive_basic and "Authorization" in sent)
            if challenged and self.auth.answer(url, resp.headers.get("WWW-Authenticate", ""), "Authorization" in sent):
                retry = {**extra, **self._auth_headers(url, scope, preemptive_basic)}
                if "Authorization" in retry:
                    _discard(resp)
                    resp = self._send(method, url, retry, data=data, params=params, timeout=timeout)
            if follow_redirects and method in ("GET", "HEAD") and resp.status_code in _REDIRECTS \
                    and resp.headers.get("Location"):
                location = urljoin(url, resp.headers["Location"])
                _discard(resp)
                if urlsplit(location).scheme not in ("http", "https"):
                    raise ProtocolError(f"{self._describe(method, url)}: redirected to a non-HTTP URL; refused")
                url, params = location, None
                continue
            break
        else:
            _discard(resp)
            raise ProtocolError(f"{self._describe(method, url)}: more than {_MAX_REDIRECTS} redirects")
        if resp.status_code in ok:
            if not stream:
                try:
                    resp._content = read_body(resp, limit)  # type: ignore[attr-defined]
                except RegistryError:
                    raise
            return resp
        body = read_body(resp, ERROR_LIMIT, strict=False)
        raise self._status_failure(resp, method, url, body)

    def _auth_headers(self, url: str, scope: str | None, preemptive_basic: bool) -> dict[str, str]:
        if preemptive_basic and self.auth.same_origin(url) and self.auth.challenge is None \
                and not self.credentials.token and not self.credentials.api_key:
            return self.auth._basic()
        return self.auth.headers_for(url, scope)

    def _status_failure(self, resp: requests.Response, method: str, url: str, body: bytes) -> RegistryError:
        what = self._describe(method, url)
        status = resp.status_code
        if status in (401, 403) and self.auth.same_origin(url) and (status == 401 or self.credentials.anonymous):
            return self.auth.rejected(status, what) if status == 401 else status_error(status, what, body)
        if status == 429:
            after = retry_after_seconds(resp.headers.get("Retry-After"))
            rl = parse_ratelimit(resp.headers)
            if after is None and rl is not None and rl.reset is not None:
                after = rl.reset
            return status_error(status, what, body, reset_at=time.time() + after if after is not None else None)
        return status_error(status, what, body)

    def paginate(self, path: str, *, params: dict | None = None, scope: str | None = None,
                 preemptive_basic: bool = False, headers: dict[str, str] | None = None) -> Iterator[requests.Response]:
        """Yield each page of a list endpoint, following ``Link: <...>; rel="next"``.

        A next link on another origin is refused (it would have no credentials and the registry has no
        business sending one); so is a loop, and a listing longer than ``max_pages``.
        """
        url: str | None = self._url(path)
        seen: set[str] = set()
        pages = 0
        while url:
            pages += 1
            if pages > self.max_pages:
                raise ProtocolError(f"target {self.name}: {urlsplit(self._url(path)).path} has more than "
                                    f"{self.max_pages} pages; regwatch stops there (a registry that never stops "
                                    "paging?)")
            resp = self._page(url, params, scope, preemptive_basic, headers)
            params = None  # the next link carries the query
            yield resp
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(resp.url, nxt) if nxt else None
            if url is None:
                break
            if not self.auth.same_origin(url):
                parts = urlsplit(url)
                raise ProtocolError(f"target {self.name}: the next-page link of {urlsplit(resp.url).path} points at "
                                    f"another origin ({parts.scheme}://{parts.netloc}); regwatch does not follow it")
            if url in seen:
                raise ProtocolError(f"target {self.name}: pagination loops at {urlsplit(url).path}")
            seen.add(url)

    def _page(self, url: str, params: dict | None, scope: str | None, preemptive_basic: bool,
              headers: dict[str, str] | None) -> requests.Response:
        """One page. A 400 PAGINATION_NUMBER_INVALID (n above the registry's catalog.maxentries or tags.maxtags)
        is retried with 1000 (Distribution's default maximum), then with half as many until the registry accepts
        it; the accepted size is remembered for the endpoint."""
        endpoint = urlsplit(url).path.rsplit("/", 1)[-1]
        if params and "n" in params and endpoint in self.page_limit:
            params = dict(params, n=min(int(params["n"]), self.page_limit[endpoint]))
        asked = int(params["n"]) if params and "n" in params else None
        size = asked
        while True:
            try:
                resp = self.request("GET", url, params=params if size is None else dict(params, n=size),
                                    scope=scope, preemptive_basic=preemptive_basic, headers=headers)
            except ProtocolError as exc:
                if exc.status != 400 or exc.code != "PAGINATION_NUMBER_INVALID" or size is None:
                    raise
                smaller = DISTRIBUTION_MAX_PAGE if size > DISTRIBUTION_MAX_PAGE else size // 2
                if smaller < 1:
                    raise ProtocolError(f"{exc}; the registry refuses every page size down to 1: check its "
                                        "catalog.maxentries / tags.maxtags", status=400, code=exc.code) from None
                size = smaller
                continue
            if size != asked:
                self.page_limit[endpoint] = size
                log.info("registry refuses the page size; using what it accepts", extra={
                    "target": self.name, "endpoint": endpoint, "asked": asked, "using": size})
            return resp

    def get_json(self, path: str, *, scope: str | None = None, params: dict | None = None,
                 headers: dict[str, str] | None = None, preemptive_basic: bool = False, limit: int = JSON_LIMIT,
                 ok: tuple[int, ...] = (200,)) -> Any:
        """GET ``path`` and parse its JSON body (at most ``limit`` bytes)."""
        resp = self.request("GET", path, scope=scope, params=params, headers=headers,
                            preemptive_basic=preemptive_basic, limit=limit, ok=ok)
        return parse_json(resp.content, f"target {self.name}: {urlsplit(resp.url).path}")

    # ------------------------------------------------------------------ registry API v2

    def ping(self) -> requests.Response:
        """GET /v2/: proves the API answers and the credentials work."""
        try:
            resp = self.request("GET", f"{self.v2_prefix}/")
        except NotFound:
            raise NotFound(f"target {self.name}: GET {self.v2_prefix}/ answered 404: nothing serves the registry API "
                           f"there; is url ({self.url}) the registry's base URL (not its debug port, a web UI or a "
                           "path)?", status=404) from None
        except ProtocolError as exc:
            if exc.status == 400 and self.url.startswith("http://"):
                # What a TLS port says to a plain-HTTP request (Go's net/http, nginx).
                raise ProtocolError(f"{exc}; if the registry serves TLS on that port, use https:// in url",
                                    status=400) from None
            raise
        version = resp.headers.get("Docker-Distribution-API-Version", "")
        if version and not version.startswith("registry/2.0"):
            raise ProtocolError(f"target {self.name}: unexpected API version {version[:40]!r}")
        return resp

    def catalog(self, page_size: int = 100) -> Iterator[str]:
        for resp in self.paginate(f"{self.v2_prefix}/_catalog", params={"n": page_size}, scope=CATALOG_SCOPE):
            names = _json_object(resp, self.name).get("repositories") or []
            if not isinstance(names, list):
                raise ProtocolError(f"target {self.name}: _catalog's repositories is not a list")
            for repo in names:
                if not is_repository(repo):
                    self._refuse(f"repository {repr(repo)[:80]}")
                    continue
                yield repo

    def tags(self, repo: str, page_size: int = 100) -> list[str]:
        check_repository(repo)
        out: list[str] = []
        for resp in self.paginate(f"{self.v2_prefix}/{repo}/tags/list", params={"n": page_size},
                                  scope=repository_scope(repo)):
            tags = _json_object(resp, self.name).get("tags") or []
            if not isinstance(tags, list):
                raise ProtocolError(f"target {self.name}: tags/list of {repo} is not a list")
            for tag in tags:
                if is_tag(tag):
                    out.append(tag)
                else:
                    self._refuse(f"tag {repr(tag)[:80]} of {repo}")
        return out

    def _refuse(self, what: str) -> None:
        log.warning("registry listed a name the distribution-spec does not allow; skipped",
                    extra={"target": self.name, "skipped": what})
        if len(self.refused_names) < 100:
            self.refused_names.append(what)

    def get_manifest(self, repo: str, ref: str, accept: str = MANIFEST_ACCEPT) -> Manifest:
        from regwatch.digest import sha256_digest

        _check_names(repo, ref)
        resp = self.request("GET", f"{self.v2_prefix}/{repo}/manifests/{ref}", scope=repository_scope(repo),
                            headers={"Accept": accept}, limit=MANIFEST_LIMIT)
        body = resp.content
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()[:200]
        if not media_type or media_type in ("application/json", "text/plain"):
            try:
                declared = json.loads(body).get("mediaType")
            except (ValueError, AttributeError, RecursionError):
                declared = None
            media_type = declared if isinstance(declared, str) else media_type
        return Manifest(body, media_type, sha256_digest(body))

    def head_manifest(self, repo: str, ref: str, accept: str = MANIFEST_ACCEPT) -> str | None:
        """The manifest digest the registry serves for ``ref``, or None if it has none."""
        _check_names(repo, ref)
        resp = self.request("HEAD", f"{self.v2_prefix}/{repo}/manifests/{ref}", scope=repository_scope(repo),
                            headers={"Accept": accept}, ok=(200, 404))
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("Docker-Content-Digest")
        return digest if digest and _valid_digest(digest) else None

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict] | None:
        """The OCI 1.1 referrers of ``digest`` (distribution-spec v1.1 "Listing Referrers"): the index's
        descriptors, or None when the registry has no referrers API (404), so the caller falls back to the
        tag schema."""
        check_repository(repo)
        check_digest(digest)
        params = {"artifactType": artifact_type} if artifact_type else None
        out: list[dict] = []
        try:
            for resp in self.paginate(f"{self.v2_prefix}/{repo}/referrers/{digest}", params=params,
                                      scope=repository_scope(repo), headers={"Accept": MEDIA_OCI_INDEX}):
                media = resp.headers.get("Content-Type", "").split(";")[0].strip()
                if media and media != MEDIA_OCI_INDEX:
                    return None  # something else answered that path (a web UI, a catch-all route)
                index = _json_object(resp, self.name)
                manifests = index.get("manifests") or []
                if not isinstance(manifests, list):
                    raise ProtocolError(f"target {self.name}: the referrers index of {repo}@{digest} has no list "
                                        "of manifests")
                out.extend(m for m in manifests if isinstance(m, dict))
        except NotFound:
            return None
        return out

    def blob_exists(self, repo: str, digest: str, scope: str | None = None) -> bool:
        _check_names(repo, digest)
        resp = self.request("HEAD", f"{self.v2_prefix}/{repo}/blobs/{digest}",
                            scope=scope or repository_scope(repo), ok=(200, 404))
        return resp.status_code == 200

    def get_blob(self, repo: str, digest: str, size: int | None = None) -> requests.Response:
        """A streaming response for a blob; redirects to object storage are followed (without credentials).
        With ``size`` the exchange may take as long as the blob needs at MIN_BLOB_RATE. Caller reads it
        with ``iter_body`` and closes it."""
        _check_names(repo, digest)
        resp = self.request("GET", f"{self.v2_prefix}/{repo}/blobs/{digest}", scope=repository_scope(repo),
                            stream=True)
        if size:
            guard: _Guard = resp._regwatch_guard  # type: ignore[attr-defined]
            guard.extend_to(guard.deadline + size / MIN_BLOB_RATE)
        return resp

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if the registry mounted it (201)."""
        _check_names(repo, digest)
        check_repository(from_repo)
        resp = self.request(
            "POST", f"{self.v2_prefix}/{repo}/blobs/uploads/",
            params={"mount": digest, "from": from_repo},
            scope=f"{repository_scope(repo, 'pull,push')} {repository_scope(from_repo)}",
            ok=(201, 202), headers={"Content-Length": "0"})
        if resp.status_code == 202:
            self._cancel_upload(resp, repo)
        return resp.status_code == 201

    def _upload_location(self, resp: requests.Response, repo: str) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise ProtocolError(f"target {self.name}: the upload for {repo} answered without a Location")
        url = urljoin(resp.url, location)
        if not self.auth.same_origin(url):
            parts = urlsplit(url)
            raise ProtocolError(f"target {self.name}: the registry's upload Location for {repo} points at another "
                                f"origin ({parts.scheme}://{parts.netloc}); regwatch sends blob data and credentials "
                                "only to the registry itself")
        return url

    def _cancel_upload(self, resp: requests.Response, repo: str) -> None:
        try:
            location = self._upload_location(resp, repo)
            self.request("DELETE", location, scope=repository_scope(repo, "pull,push"), ok=(204, 404, 405))
        except RegistryError:
            pass

    def push_blob(self, repo: str, digest: str, data: Any, size: int | None = None,
                  chunk_size: int | None = None) -> None:
        """Upload a blob: monolithic (POST then PUT ?digest=), or chunked PATCHes when ``chunk_size`` is set.

        ``data`` is bytes or a binary file object positioned at the start.
        """
        _check_names(repo, digest)
        scope = repository_scope(repo, "pull,push")
        resp = self.request("POST", f"{self.v2_prefix}/{repo}/blobs/uploads/", scope=scope, ok=(202,),
                            headers={"Content-Length": "0"})
        location = self._upload_location(resp, repo)
        transfer_timeout = self.budget.timeout + (size or 0) / MIN_BLOB_RATE
        if chunk_size:
            offset = 0
            while True:
                chunk = data[offset:offset + chunk_size] if isinstance(data, (bytes, bytearray)) \
                    else data.read(chunk_size)
                if not chunk:
                    break
                end = offset + len(chunk) - 1
                resp = self.request("PATCH", location, scope=scope, ok=(202,), data=chunk, headers={
                    "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(chunk))}, timeout=self.budget.timeout + len(chunk) / MIN_BLOB_RATE)
                location = self._upload_location(resp, repo)
                offset = end + 1
            body: Any = b""
        else:
            body = data
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None and not chunk_size:
            headers["Content-Length"] = str(size)
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={quote(digest)}", scope=scope, ok=(201,), data=body,
                     headers=headers, timeout=transfer_timeout)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        _check_names(repo, ref)
        resp = self.request("PUT", f"{self.v2_prefix}/{repo}/manifests/{ref}",
                            scope=repository_scope(repo, "pull,push"), ok=(201,), data=body,
                            headers={"Content-Type": media_type})
        digest = resp.headers.get("Docker-Content-Digest", "")
        return digest if _valid_digest(digest) else ""


# --------------------------------------------------------------------------- bodies


def _discard(resp: requests.Response) -> None:
    """Drop a response we will not read (its connection goes back to the pool if the body is small)."""
    try:
        resp.close()
    finally:
        guard = getattr(resp, "_regwatch_guard", None)
        if guard is not None:
            guard.finish()


def iter_body(resp: requests.Response, limit: int) -> Iterator[bytes]:
    """The body in chunks, at most ``limit`` bytes (``TooLarge`` past it), within the exchange's deadline."""
    guard: _Guard | None = getattr(resp, "_regwatch_guard", None)
    what = getattr(resp, "_regwatch_describe", "response")
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        _discard(resp)
        raise TooLarge(f"{what}: the answer is {int(declared)} bytes, over regwatch's limit of {limit} bytes for it")
    got = 0
    try:
        for chunk in resp.iter_content(_CHUNK):
            got += len(chunk)
            if got > limit:
                raise TooLarge(f"{what}: the answer goes on past regwatch's limit of {limit} bytes for it; refused")
            yield chunk
    except requests.exceptions.RequestException as exc:
        if guard is not None and guard.expired:
            timeout = getattr(resp, "_regwatch_timeout", 0.0)
            raise Timeout(f"{what}: the answer did not arrive in full within {timeout:g}s (a slow or trickling "
                          "answer); the registry or a proxy in front of it is overloaded") from None
        host, port = origin_of(resp.url)[1:]
        failure = classify_connection(exc, host, port, phase="read")
        raise Unreachable(f"{what}: {failure.message}", reason=failure.reason) from None
    finally:
        _discard(resp)


def read_body(resp: requests.Response, limit: int, *, strict: bool = True) -> bytes:
    """The whole body, at most ``limit`` bytes. ``strict=False`` (error bodies) returns what fits instead of
    raising, and swallows a broken connection: the status is the news."""
    if not strict:
        chunks: list[bytes] = []
        got = 0
        try:
            for chunk in iter_body(resp, 1 << 62):
                chunks.append(chunk[: max(0, limit - got)])
                got += len(chunk)
                if got >= limit:
                    break
        except RegistryError:
            pass
        finally:
            _discard(resp)
        return b"".join(chunks)
    return b"".join(iter_body(resp, limit))


def parse_json(body: bytes, what: str, hint: str = "") -> Any:
    """``body`` as JSON; ``what`` names the request for the error, ``hint`` says what to check."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{what} did not answer with JSON{'; ' + hint if hint else ''}") from None


def _json_object(resp: requests.Response, name: str) -> dict:
    data = parse_json(resp.content, f"target {name}: {urlsplit(resp.url).path}")
    if not isinstance(data, dict):
        raise ProtocolError(f"target {name}: {urlsplit(resp.url).path} answered with unexpected JSON (not an object)")
    return data


def _check_names(repo: str, ref: str) -> None:
    try:
        check_repository(repo)
        check_reference(ref)
    except BadName as exc:
        raise ProtocolError(str(exc)) from None


def _valid_digest(digest: str) -> bool:
    from regwatch.oci import is_digest

    return is_digest(digest)


urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
