"""The one HTTP client regwatch uses to talk to registries.

It owns authentication (Basic, and Bearer tokens fetched from the realm of a
``WWW-Authenticate`` challenge and cached until they expire), retries with backoff,
timeouts, TLS options and ``Link`` pagination. Every other module talks to a registry
through it; nothing else imports ``requests``.

Errors are ``RegistryError`` subclasses whose message names the target and the request
path, never a credential.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3

log = logging.getLogger("regwatch.client")

# Media types a client asks for, in order of preference, as container runtimes do.
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join([MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST])
INDEX_MEDIA_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})

USER_AGENT = "regwatch"
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


class RegistryError(Exception):
    """A request to a registry failed. ``reason`` is a short, bounded word for a label."""

    reason = "error"

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class Unreachable(RegistryError):
    reason = "unreachable"


class TLSError(Unreachable):
    reason = "tls"


class Timeout(Unreachable):
    reason = "timeout"


class AuthFailed(RegistryError):
    reason = "auth"


class Forbidden(RegistryError):
    reason = "forbidden"


class NotFound(RegistryError):
    reason = "not_found"


class RateLimited(RegistryError):
    reason = "rate_limited"


class ServerError(RegistryError):
    reason = "server_error"


class ProtocolError(RegistryError):
    reason = "protocol"


# --------------------------------------------------------------------------- challenge parsing

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case: "basic" or "bearer"
    params: dict[str, str]


def parse_www_authenticate(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def repository_scope(repo: str, actions: str = "pull") -> str:
    return f"repository:{repo}:{actions}"


CATALOG_SCOPE = "registry:catalog:*"


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


class RegistryClient:
    """A Docker Registry HTTP API v2 client (also used for Harbor/Nexus/Artifactory REST calls).

    ``name`` is the target's name and appears in error messages and logs.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        insecure_skip_verify: bool = False,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        pool_size: int = 10,
        v2_prefix: str = "/v2",
    ):
        self.url = url.rstrip("/")
        self.name = name or urlsplit(url).netloc
        self._username = username
        self._password = password
        self._static_token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.v2_prefix = v2_prefix.rstrip("/")
        self._challenge: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.trust_env = False
        if insecure_skip_verify:
            log.warning(
                "TLS verification is OFF for target %s: anyone on the path can read its credentials; "
                "set tls.ca_file instead of tls.insecure_skip_verify", self.name)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
            self.session.verify = False
        elif ca_file:
            self.session.verify = str(ca_file)

    @classmethod
    def for_target(cls, target: Any, *, url: str | None = None, **kwargs: Any) -> RegistryClient:
        """Build a client from a ``TargetConfig`` (``url``: another endpoint of it, e.g. a Nexus Docker connector)."""
        kwargs.setdefault("pool_size", max(target.concurrency, 2))
        kwargs.setdefault("timeout", target.timeout)
        return cls(
            url or target.url,
            name=target.name,
            username=target.username,
            password=target.secret("password"),
            token=target.secret("token"),
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
        path = urlsplit(url).path
        return f"target {self.name}: {method} {path}"

    def _send(self, method: str, url: str, headers: dict, **kwargs: Any) -> requests.Response:
        """One HTTP exchange with retries on connection errors, 429 and 502-504 (idempotent methods)."""
        idempotent = method in ("GET", "HEAD")
        attempt = 0
        while True:
            try:
                resp = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
            except requests.exceptions.SSLError as exc:
                raise TLSError(f"{self._describe(method, url)}: TLS error: {_short(exc)}") from None
            except requests.exceptions.Timeout:
                if idempotent and attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise Timeout(f"{self._describe(method, url)}: no answer within {self.timeout:g}s") from None
            except requests.exceptions.ConnectionError as exc:
                if idempotent and attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise Unreachable(f"{self._describe(method, url)}: cannot connect: {_short(exc)}") from None
            if resp.status_code in _RETRY_STATUSES and idempotent and attempt < self.retries:
                attempt += 1
                delay = _retry_after(resp) or self.backoff * 2 ** (attempt - 1)
                resp.close()
                time.sleep(min(delay, 30.0))
                continue
            return resp

    def _auth_header(self, scope: str | None) -> dict[str, str]:
        if self._static_token:
            return {"Authorization": f"Bearer {self._static_token}"}
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return self._basic_header()
        if challenge.scheme == "bearer":
            token = self._bearer_token(challenge, scope)
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    def _basic_header(self) -> dict[str, str]:
        if self._username is None:
            return {}
        basic = requests.auth._basic_auth_str(self._username, self._password or "")
        return {"Authorization": basic}

    def _bearer_token(self, challenge: Challenge, scope: str | None) -> str | None:
        realm = challenge.params.get("realm")
        if not realm:
            raise ProtocolError(f"target {self.name}: Bearer challenge without a realm")
        key = f"{realm}|{challenge.params.get('service', '')}|{scope or ''}"
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached.expires_at > time.monotonic():
                return cached.value
        params = {}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        if scope:
            params["scope"] = scope
        headers = self._basic_header()
        resp = self._send("GET", realm, headers, params=params)
        if resp.status_code in (401, 403):
            raise AuthFailed(
                f"target {self.name}: the token server rejected the credentials of user "
                f"{self._username or '(anonymous)'} (HTTP {resp.status_code}); check username and password",
                status=resp.status_code)
        if resp.status_code != 200:
            raise _status_error(resp, f"target {self.name}: token server {urlsplit(realm).path}")
        try:
            body = resp.json()
        except ValueError:
            raise ProtocolError(f"target {self.name}: token server answered with no JSON") from None
        value = body.get("token") or body.get("access_token")
        if not value:
            raise ProtocolError(f"target {self.name}: token server answer has no token")
        lifetime = float(body.get("expires_in") or 60)
        # Renew a little early so a token never expires in flight.
        with self._lock:
            self._tokens[key] = _Token(value, time.monotonic() + max(lifetime - 10, lifetime * 0.5))
        return value

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        preemptive_basic: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request, answering an auth challenge once; raise a RegistryError unless the status is in ``ok``.

        ``scope`` is the token scope the request needs (e.g. ``repository:app:pull``).
        ``preemptive_basic`` sends Basic credentials without waiting for a challenge (REST APIs).
        """
        url = self._url(path)
        all_headers = dict(headers or {})
        all_headers.update(self._basic_header() if preemptive_basic else self._auth_header(scope))
        resp = self._send(method, url, all_headers, **kwargs)
        if resp.status_code == 401 and not preemptive_basic:
            challenge = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
            had_auth = "Authorization" in all_headers
            if challenge and (challenge != self._challenge or not had_auth):
                resp.close()
                self._challenge = challenge
                want = scope or challenge.params.get("scope")
                all_headers.update(self._auth_header(want))
                if "Authorization" in all_headers:
                    resp = self._send(method, url, all_headers, **kwargs)
        if resp.status_code in ok:
            return resp
        resp.close()
        if resp.status_code == 401:
            who = f"user {self._username}" if self._username else "anonymous access"
            raise AuthFailed(f"{self._describe(method, url)}: authentication failed for {who} (HTTP 401); "
                             "check the username and password", status=401)
        raise _status_error(resp, self._describe(method, url))

    def paginate(self, path: str, *, params: dict | None = None, scope: str | None = None,
                 preemptive_basic: bool = False) -> Iterator[requests.Response]:
        """Yield each page of a list endpoint, following ``Link: <...>; rel="next"`` (relative or absolute)."""
        url: str | None = self._url(path)
        seen: set[str] = set()
        while url:
            resp = self.request("GET", url, params=params, scope=scope, preemptive_basic=preemptive_basic)
            params = None  # the next link carries the query
            yield resp
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(resp.url, nxt) if nxt else None
            if url in seen:
                raise ProtocolError(f"target {self.name}: pagination loops at {urlsplit(url).path}")
            if url:
                seen.add(url)

    # ------------------------------------------------------------------ registry API v2

    def ping(self) -> requests.Response:
        """GET /v2/: proves the API answers and the credentials work."""
        resp = self.request("GET", f"{self.v2_prefix}/")
        version = resp.headers.get("Docker-Distribution-API-Version", "")
        if version and not version.startswith("registry/2.0"):
            raise ProtocolError(f"target {self.name}: unexpected API version {version!r}")
        return resp

    def catalog(self, page_size: int = 100) -> Iterator[str]:
        for resp in self.paginate(f"{self.v2_prefix}/_catalog", params={"n": page_size}, scope=CATALOG_SCOPE):
            yield from _json(resp, self.name).get("repositories") or []

    def tags(self, repo: str, page_size: int = 100) -> list[str]:
        out: list[str] = []
        for resp in self.paginate(f"{self.v2_prefix}/{repo}/tags/list", params={"n": page_size},
                                  scope=repository_scope(repo)):
            out.extend(_json(resp, self.name).get("tags") or [])
        return out

    def get_manifest(self, repo: str, ref: str, accept: str = MANIFEST_ACCEPT) -> Manifest:
        from regwatch.digest import sha256_digest

        resp = self.request("GET", f"{self.v2_prefix}/{repo}/manifests/{ref}", scope=repository_scope(repo),
                            headers={"Accept": accept})
        body = resp.content
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "text/plain"):
            media_type = _json_bytes(body).get("mediaType", media_type)
        return Manifest(body, media_type, sha256_digest(body))

    def head_manifest(self, repo: str, ref: str, accept: str = MANIFEST_ACCEPT) -> str | None:
        """The manifest digest the registry serves for ``ref``, or None if it has none."""
        resp = self.request("HEAD", f"{self.v2_prefix}/{repo}/manifests/{ref}", scope=repository_scope(repo),
                            headers={"Accept": accept}, ok=(200, 404))
        if resp.status_code == 404:
            return None
        return resp.headers.get("Docker-Content-Digest")

    def blob_exists(self, repo: str, digest: str, scope: str | None = None) -> bool:
        resp = self.request("HEAD", f"{self.v2_prefix}/{repo}/blobs/{digest}",
                            scope=scope or repository_scope(repo), ok=(200, 404))
        return resp.status_code == 200

    def get_blob(self, repo: str, digest: str) -> requests.Response:
        """A streaming response for a blob; redirects to object storage are followed. Caller closes it."""
        return self.request("GET", f"{self.v2_prefix}/{repo}/blobs/{digest}", scope=repository_scope(repo),
                            stream=True)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if the registry mounted it (201)."""
        resp = self.request(
            "POST", f"{self.v2_prefix}/{repo}/blobs/uploads/",
            params={"mount": digest, "from": from_repo},
            scope=f"{repository_scope(repo, 'pull,push')} {repository_scope(from_repo)}",
            ok=(201, 202), headers={"Content-Length": "0"})
        if resp.status_code == 202:
            self._cancel_upload(resp, repo)
        return resp.status_code == 201

    def _cancel_upload(self, resp: requests.Response, repo: str) -> None:
        location = resp.headers.get("Location")
        if location:
            try:
                self.request("DELETE", urljoin(resp.url, location), scope=repository_scope(repo, "pull,push"),
                             ok=(204, 404, 405))
            except RegistryError:
                pass

    def push_blob(self, repo: str, digest: str, data: Any, size: int | None = None,
                  chunk_size: int | None = None) -> None:
        """Upload a blob: monolithic (POST then PUT ?digest=), or chunked PATCHes when ``chunk_size`` is set.

        ``data`` is bytes or a binary file object positioned at the start.
        """
        scope = repository_scope(repo, "pull,push")
        resp = self.request("POST", f"{self.v2_prefix}/{repo}/blobs/uploads/", scope=scope, ok=(202,),
                            headers={"Content-Length": "0"})
        location = urljoin(resp.url, resp.headers["Location"])
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
                    "Content-Length": str(len(chunk))})
                location = urljoin(resp.url, resp.headers["Location"])
                offset = end + 1
            body: Any = b""
        else:
            body = data
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None and not chunk_size:
            headers["Content-Length"] = str(size)
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={quote(digest)}", scope=scope, ok=(201,), data=body,
                     headers=headers)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"{self.v2_prefix}/{repo}/manifests/{ref}",
                            scope=repository_scope(repo, "pull,push"), ok=(201,), data=body,
                            headers={"Content-Type": media_type})
        return resp.headers.get("Docker-Content-Digest", "")


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value and value.isdigit():
        return float(value)
    return None


def _short(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"\((?:Caused by )?\w+\((?:<[^>]*>)?[,:]? *'?([^')]+)", text)
    if match:
        return match.group(1)[:200]
    return text[:200]


def _status_error(resp: requests.Response, what: str) -> RegistryError:
    code = resp.status_code
    detail = _error_detail(resp)
    message = f"{what}: HTTP {code}{': ' + detail if detail else ''}"
    if code == 403:
        return Forbidden(message + "; the account lacks permission", status=code)
    if code == 404:
        return NotFound(message, status=code)
    if code == 429:
        return RateLimited(message + "; the registry is rate-limiting regwatch", status=code)
    if code >= 500:
        return ServerError(message, status=code)
    return RegistryError(message, status=code)


def _error_detail(resp: requests.Response) -> str:
    """The first message of a registry/Harbor ``{"errors": [...]}`` body, if any."""
    try:
        errors = resp.json().get("errors")
        if errors:
            first = errors[0]
            return str(first.get("message") or first.get("code"))[:200]
    except (ValueError, AttributeError, TypeError):
        pass
    return ""


def _json(resp: requests.Response, name: str) -> dict:
    try:
        data = resp.json()
    except ValueError:
        raise ProtocolError(f"target {name}: {urlsplit(resp.url).path} did not answer with JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"target {name}: {urlsplit(resp.url).path} answered with unexpected JSON")
    return data


def _json_bytes(body: bytes) -> dict:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
