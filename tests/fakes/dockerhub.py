"""Docker Hub's pull rate limit, in front of a real registry: the upstream a pull-through cache spends.

Docker Hub cannot be reached from the tests, and its limit is not in any registry that runs here. This
front adds it to a real Debian ``docker-registry`` (2.8.2) that uses token auth with a token server on
another port (``tests/tokenserver.py``), as registry-1.docker.io does with auth.docker.io: the
registry's own challenge names the realm, and the front passes every request, challenge and answer
through unchanged. What it adds follows Docker's documentation of the limit ("Docker Hub usage and
limits", docs.docker.com/docker-hub/usage/, and the 2020 announcement "Checking your current Docker
pull rate limits and status"):

- A pull is a **GET of a manifest** (``/v2/<name>/manifests/<reference>``); each one counts against the
  puller's limit. A HEAD of a manifest does not, nor does anything on a blob or on ``/v2/``.
- Manifest answers (GET and HEAD) carry ``ratelimit-limit: <limit>;w=<window seconds>``,
  ``ratelimit-remaining: <left>;w=<window seconds>`` (after the request is counted) and
  ``docker-ratelimit-source: <who is counted>``: the account for an authenticated pull (the front names it
  by a UUID derived from the token's subject), the client's IP address for an anonymous one.
- With nothing left, a manifest GET is 429 TOOMANYREQUESTS ("You have reached your pull rate limit"),
  with the same headers; a HEAD still answers.
- ``unlimited`` accounts (a paid plan) get no rate-limit headers at all.

The window's rolling refill is not modelled: the state only goes down, and a test sets it. ``seen`` records
every request: method, path, User-Agent, the source it was counted against, status.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import requests

MANIFEST = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/?]+)")
# Not passed on: hop-by-hop headers, and the ones the front sets itself.
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection", "te",
        "upgrade", "trailer"}
TOO_MANY = {"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your pull rate limit. You may "
                        "increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    user_agent: str
    source: str | None   # the source a manifest request was counted against; None for other paths
    status: int


def account_id(username: str) -> str:
    """The stable id the front reports as docker-ratelimit-source for an account."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://hub.docker.com/u/{username}"))


class DockerHub:
    """``DockerHub(registry_url, limit=100, window=21600)``: ``remaining[source]`` starts at ``limit``."""

    def __init__(self, registry_url: str, *, limit: int = 100, window: int = 21600,
                 unlimited: frozenset[str] = frozenset()):
        self.registry_url = registry_url.rstrip("/")
        self.limit = limit
        self.window = window
        self.unlimited = set(unlimited)   # usernames on a plan without a pull limit
        self.remaining: dict[str, int] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload, source = hub._answer(self.command, self.path, self.headers, body,
                                                               self.client_address[0])
                with hub._lock:
                    hub.seen.append(Seen(self.command, self.path, self.headers.get("User-Agent", ""), source, status))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> DockerHub:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._session.close()

    def __enter__(self) -> DockerHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the limit

    def state(self, source: str) -> int:
        with self._lock:
            return self.remaining.get(source, self.limit)

    def gets(self, user_agent: str | None = None) -> int:
        """Manifest GETs counted so far (by one client, if ``user_agent``)."""
        with self._lock:
            return sum(1 for s in self.seen if s.method == "GET" and s.source is not None and s.status == 200
                       and (user_agent is None or s.user_agent == user_agent))

    def _who(self, headers, client_ip: str) -> tuple[str, bool]:
        """(docker-ratelimit-source, limited?) of a request, from its bearer token's subject."""
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            try:
                # The real registry behind checks the signature; the front only needs to know who it is.
                subject = jwt.decode(auth[7:], options={"verify_signature": False}).get("sub") or ""
            except jwt.PyJWTError:
                subject = ""
            if subject:
                return account_id(subject), subject not in self.unlimited
        return client_ip, True

    def _headers(self, source: str, left: int) -> list[tuple[str, str]]:
        return [("ratelimit-limit", f"{self.limit};w={self.window}"),
                ("ratelimit-remaining", f"{left};w={self.window}"), ("docker-ratelimit-source", source)]

    def _answer(self, method: str, path: str, headers, body: bytes,
                client_ip: str) -> tuple[int, list[tuple[str, str]], bytes, str | None]:
        manifest = MANIFEST.fullmatch(path.split("?", 1)[0]) is not None
        source, limited = self._who(headers, client_ip) if manifest else (None, False)
        if manifest and limited and method == "GET" and self.state(source) <= 0:
            return 429, [("Content-Type", "application/json"), *self._headers(source, 0)], \
                json.dumps(TOO_MANY).encode(), source
        forward: dict[str, str] = {}
        for key, value in headers.items():   # Go sends one Accept line per media type: join them, keep them all
            if key.lower() not in _HOP:
                forward[key] = f"{forward[key]}, {value}" if key in forward else value
        resp = self._session.request(method, self.registry_url + path, headers=forward, data=body or None,
                                     allow_redirects=False, timeout=30)
        out = [(k, v) for k, v in resp.headers.items() if k.lower() not in _HOP]
        if manifest and limited and resp.status_code == 200:
            with self._lock:
                left = self.remaining.get(source, self.limit)
                if method == "GET":
                    left -= 1
                    self.remaining[source] = left
            out += self._headers(source, left)
        return resp.status_code, out, resp.content, source


USERNAME, PASSWORD = "ci-pull", "ci-pull-secret"
IMAGE_REPO, IMAGE_TAG = "library/alpine", "latest"
PULL_AGENT = "docker/27.5.1 (regwatch test pull)"


@dataclass
class Stack:
    hub: DockerHub
    registry: object     # regwatch.localregistry.LocalRegistry behind the front
    tokens: object       # tests.tokenserver.TokenServer: the realm, on its own port
    image: object        # regwatch.images.Image at IMAGE_REPO:IMAGE_TAG
    username: str = USERNAME
    password: str = PASSWORD

    @property
    def source(self) -> str:
        return account_id(self.username)

    def pull(self, times: int = 1) -> None:
        """``times`` manifest GETs of the image as a docker client would make them (each counts as a pull)."""
        from regwatch.client import RegistryClient

        # A docker client does not pace itself on the limit: it pulls until the 429.
        with RegistryClient(self.hub.url, username=self.username, password=self.password,
                            pace_ratelimit=False, retries=0) as client:
            client.session.headers["User-Agent"] = PULL_AGENT
            for _ in range(times):
                client.get_manifest(IMAGE_REPO, IMAGE_TAG)


def populated_hub(workdir, *, limit: int = 100, spent: int = 3, unlimited: frozenset[str] = frozenset()):
    """A started Docker Hub stack (token server, real registry holding IMAGE_REPO:IMAGE_TAG, the limiting
    front) in which ``spent`` pulls of the account have been made: every regwatch_upstream_ratelimit_* series
    has a value. A context manager: ``with populated_hub(tmp_path) as stack: ...``."""
    from contextlib import contextmanager
    from pathlib import Path

    from regwatch.client import RegistryClient
    from regwatch.images import build_image, push_image
    from regwatch.localregistry import LocalRegistry
    from tests.tokenserver import TokenServer

    @contextmanager
    def stack():
        work = Path(workdir)
        tokens = TokenServer(work, users={USERNAME: PASSWORD}).start()
        registry = LocalRegistry(work / "hub-registry", token=tokens.registry_auth(), debug=False)
        hub = None
        try:
            registry.start()
            image = build_image([{"etc/os-release": b"ID=alpine\n"}])
            with RegistryClient(registry.url, username=USERNAME, password=PASSWORD) as client:
                push_image(client, IMAGE_REPO, IMAGE_TAG, image)
            hub = DockerHub(registry.url, limit=limit, unlimited=unlimited).start()
            built = Stack(hub, registry, tokens, image)
            built.pull(spent)
            yield built
        finally:
            if hub is not None:
                hub.stop()
            registry.stop()
            tokens.stop()

    return stack()
