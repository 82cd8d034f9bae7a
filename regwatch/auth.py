"""Registry authentication: which request gets which credential, challenges, tokens.

Credentials belong to an origin (scheme, host, port): the registry's own. An ``Authenticator``
attaches Authorization (Basic, Bearer, a static token, an API key) only to requests for that
origin, answers only challenges that origin sent, and sends the credentials to a token realm
only when the registry's own challenge named it, and never over plain http from an https
registry (unless TLS verification is explicitly off). A ``Link`` page, an upload ``Location``,
a redirect to blob storage or a challenge from any other origin gets nothing.

It is independent of the transport: the client (requests) and the probe (timed raw sockets)
hand it a ``fetch`` function for the token request, so both use the same challenge and token
code and the probe still times the auth phase itself.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from regwatch.credentials import NONE, Credentials
from regwatch.failures import AuthFailed, InsecureAuth, ProtocolError, status_error

# A token server's answer is a small JSON object (a JWT is a few KiB).
TOKEN_LIMIT = 1 << 20
# Longest token lifetime regwatch believes; renews earlier anyway.
_MAX_LIFETIME = 24 * 3600.0
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case: "basic" or "bearer"
    params: dict[str, str]


def parse_www_authenticate(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."`` (bounded)."""
    if not header:
        return None
    header = header[:8192]
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def origin_text(url: str) -> str:
    scheme, host, port = origin_of(url)
    return f"{scheme}://{host}:{port}"


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def repository_scope(repo: str, actions: str = "pull") -> str:
    return f"repository:{repo}:{actions}"


CATALOG_SCOPE = "registry:catalog:*"

# fetch(method, url, headers, form) -> (status, body); ``form`` is a urlencoded body for POST.
Fetch = Callable[[str, str, dict[str, str], bytes | None], tuple[int, bytes]]


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """The credentials of one registry origin and the challenge it last sent.

    ``api_key_header`` names the header an API key goes in (Artifactory: ``X-JFrog-Art-Api``).
    ``preemptive`` sends Basic without waiting for a challenge (vendor REST APIs). ``cache``
    keeps tokens until they expire (off for probes, which time the token fetch every time).
    """

    def __init__(self, url: str, credentials: Credentials = NONE, *, name: str, fetch: Fetch,
                 tls_verified: bool = True, api_key_header: str | None = None, preemptive: bool = False,
                 cache: bool = True):
        self.origin = origin_of(url)
        self.credentials = credentials
        self.name = name
        self.fetch = fetch
        self.tls_verified = tls_verified
        self.api_key_header = api_key_header
        self.preemptive = preemptive
        self.cache = cache
        self.challenge: Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()

    def same_origin(self, url: str) -> bool:
        return origin_of(url) == self.origin

    # ------------------------------------------------------------------ headers

    def headers_for(self, url: str, scope: str | None = None) -> dict[str, str]:
        """The auth headers a request for ``url`` gets: none unless ``url`` is the registry's own origin."""
        if not self.same_origin(url):
            return {}
        creds = self.credentials
        if creds.api_key and self.api_key_header:
            return {self.api_key_header: creds.api_key}
        if creds.token:
            return {"Authorization": f"Bearer {creds.token}"}
        challenge = self.challenge
        if challenge is None:
            return self._basic() if self.preemptive else {}
        if challenge.scheme == "basic":
            return self._basic()
        if challenge.scheme == "bearer":
            token = self._bearer_token(challenge, scope)
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    def _basic(self) -> dict[str, str]:
        creds = self.credentials
        if creds.username is None or creds.identity_token:
            return {}
        return {"Authorization": basic_header(creds.username, creds.password or "")}

    def answer(self, url: str, www_authenticate: str, had_auth: bool) -> bool:
        """A 401 from ``url`` carried ``www_authenticate``: remember the challenge if it is the registry's
        own; True if a retry with (new) credentials is worth making."""
        if not self.same_origin(url):
            return False  # a challenge from another origin is ignored: it never gets our credentials
        challenge = parse_www_authenticate(www_authenticate)
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        changed = challenge != self.challenge
        self.challenge = challenge
        if self.credentials.token or (self.credentials.api_key and self.api_key_header):
            return False  # a static credential was already sent; a challenge does not change it
        return changed or not had_auth

    # ------------------------------------------------------------------ tokens

    def _bearer_token(self, challenge: Challenge, scope: str | None) -> str | None:
        realm = challenge.params.get("realm", "")
        realm_parts = urlsplit(realm)
        if realm_parts.scheme not in ("http", "https") or not realm_parts.hostname:
            raise ProtocolError(f"target {self.name}: the registry's Bearer challenge names no usable token realm "
                                f"({realm[:100]!r})")
        if realm_parts.username or realm_parts.password:
            raise ProtocolError(f"target {self.name}: the registry's token realm carries credentials in its URL; "
                                "regwatch does not use it")
        if self.origin[0] == "https" and realm_parts.scheme == "http" and self.tls_verified:
            raise InsecureAuth(
                f"target {self.name}: the registry (https) names a plain-http token realm "
                f"{realm_parts.scheme}://{realm_parts.netloc}; regwatch will not send credentials there in clear "
                "text. Fix the registry's auth.token.realm to https, or (only if you accept that risk) turn TLS "
                "verification off for this target")
        scope = scope or challenge.params.get("scope")
        key = f"{realm}|{challenge.params.get('service', '')}|{scope or ''}"
        if self.cache:
            with self._lock:
                cached = self._tokens.get(key)
                if cached and cached.expires_at > time.monotonic():
                    return cached.value
        params = {}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        if scope:
            params["scope"] = scope
        creds = self.credentials
        what = f"target {self.name}: the token server {realm_parts.scheme}://{realm_parts.netloc}"
        if creds.identity_token:
            # docker login's identity token is an OAuth2 refresh token (distribution docs/spec/auth/oauth.md).
            form = urlencode({"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                              "client_id": "regwatch", **params}).encode()
            status, body = self.fetch("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"}, form)
        else:
            sep = "&" if "?" in realm else "?"
            url = f"{realm}{sep}{urlencode(params)}" if params else realm
            status, body = self.fetch("GET", url, self._basic(), None)
        if status in (401, 403):
            raise self.rejected(status, what, by="")
        if status != 200:
            raise status_error(status, what, body)
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict):
            raise ProtocolError(f"{what} answered without a JSON object; is the realm a token server?")
        value = answer.get("token") or answer.get("access_token")
        if not isinstance(value, str) or not value or len(value) > TOKEN_LIMIT or not value.isprintable():
            raise ProtocolError(f"{what} answered without a usable token")
        try:
            lifetime = min(max(float(answer.get("expires_in") or 60), 1.0), _MAX_LIFETIME)
        except (TypeError, ValueError):
            lifetime = 60.0
        if self.cache:
            # Renew a little early so a token never expires in flight.
            with self._lock:
                self._tokens[key] = _Token(value, time.monotonic() + max(lifetime - 10, lifetime * 0.5))
        return value

    # ------------------------------------------------------------------ messages

    def rejected(self, status: int, what: str, by: str = "the registry") -> AuthFailed:
        """The error for a 401/403 that refused the credentials (or their absence). ``what`` names the request
        (``target hub: GET /v2/``); ``by`` who refused (empty when ``what`` already names it)."""
        creds = self.credentials
        subject = f"{what}: {by}" if by else what
        if creds.anonymous:
            host = self.origin[1] + ("" if self.origin[2] in (80, 443) else f":{self.origin[2]}")
            return AuthFailed(f"{subject} needs credentials (HTTP {status}); {creds.missing_hint(host)}",
                              status=status)
        return AuthFailed(f"{subject} rejected {creds.who()} (HTTP {status}); check the username and password "
                          "(or token)", status=status)

