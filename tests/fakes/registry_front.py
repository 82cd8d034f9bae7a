"""A front put before a real ``docker-registry`` (Distribution 2.8.2) for the drill tests: it passes
every request through and adds what 2.8.2 does not have, each switched on by the test.

- **OCI 1.1 referrers API**, built from the distribution-spec v1.1.1 text (opencontainers/
  distribution-spec ``spec.md``, tag v1.1.1):
  - "Pushing Manifests with Subject": a manifest PUT whose body has a ``subject`` is passed through;
    when the registry accepted it (201) the front records it and answers ``OCI-Subject: <subject
    digest>``, which tells the client the registry processed the subject;
  - "Listing Referrers": ``GET /v2/<name>/referrers/<digest>`` answers 200 with an image index
    (``Content-Type: application/vnd.oci.image.index.v1+json``) of descriptors of the manifests in
    ``<name>`` whose subject is ``<digest>``; ``artifactType`` is the manifest's, else its config's
    mediaType (an image manifest), else omitted (an index); annotations are copied; a malformed digest
    is 400; no referrers is an empty list, never 404; ``?artifactType=`` filters and the answer then
    carries ``OCI-Filters-Applied: artifactType``;
  - "Enabling the Referrers API": manifests listed in the referrers tag schema index
    (``<name>:sha256-<hex>``) upstream are included too;
  - the front checks the caller's credentials for the referrers endpoint the way the registry would
    (it asks the registry's ``/v2/`` with the same Authorization header).
  With ``referrers=False`` the front is transparent and the registry's own 404 stands (2.8.2 has no
  such route), which is what a client must treat as "no referrers API".
- **A source without a catalog**: ``catalog_status=401`` answers ``/v2/_catalog`` with 401 (Harbor
  robot accounts and hosted registries refuse it).
- **Harbor's listing API** (``harbor=True``), per goharbor/harbor ``api/v2.0/swagger.yaml`` (the copy in
  /work/shared/harbor/swagger.yaml): ``GET /api/v2.0/projects`` and
  ``GET /api/v2.0/projects/{project_name}/repositories`` with ``page``/``page_size`` (max 100, else 422),
  ``X-Total-Count`` and a relative ``Link: <...>; rel="next"``; ``Repository.name`` is the full
  ``project/repo``; the data comes from the real registry's catalog.
- **Rate limits** (``ratelimit=(limit, window_seconds, surprise_at)``): fixed windows of W seconds
  (ending on whole seconds) with L requests each; every /v2 answer carries ``RateLimit-Limit: L;w=W``,
  a falling ``RateLimit-Remaining: R;w=W`` (Docker Hub's headers) and ``RateLimit-Reset`` (seconds to
  the window's end, IETF draft-ietf-httpapi-ratelimit-headers); a request past the budget is 429 with
  ``Retry-After`` as an HTTP-date (RFC 9110 10.2.3). Request number ``surprise_at`` is refused with a
  429 the headers did not announce (``Retry-After`` 2 s ahead), as when another client drained it.

``requests`` records (time, method, path, status, headers) of every request, for the tests' own count.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_PUT = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
REFERRERS = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


class RegistryFront:
    def __init__(self, upstream: str, *, referrers: bool = True, catalog_status: int | None = None,
                 harbor: bool = False, ratelimit: tuple[int, float, float] | None = None):
        self.upstream = urlsplit(upstream)
        self.referrers_api = referrers
        self.catalog_status = catalog_status
        self.harbor = harbor
        self.ratelimit = ratelimit
        self.referrers: dict[tuple[str, str], dict[str, dict]] = {}  # (name, subject) -> digest -> descriptor
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._remaining = ratelimit[0] if ratelimit else 0
        self._window_end = 0.0
        self._blocked_until = 0.0
        self._count = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                front.handle(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def window_end(self) -> float:
        """When the current rate-limit window ends (Unix time)."""
        return self._window_end

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> RegistryFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _upstream(self, method: str, path: str, headers: dict, body: bytes | None):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data

    def _reply(self, h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        h.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
        with self._lock:
            self.requests[-1]["status"] = status

    def _json(self, h: BaseHTTPRequestHandler, status: int, data: object, extra: list | None = None) -> None:
        self._reply(h, status, [("Content-Type", "application/json"), *(extra or [])], json.dumps(data).encode())

    # ------------------------------------------------------------------ dispatch
    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("connection",)}
        with self._lock:
            self.requests.append({"time": time.time(), "method": h.command, "path": parts.path, "query": parts.query,
                                  "headers": dict(h.headers), "status": None})
        extra: list[tuple[str, str]] = []
        if self.ratelimit and parts.path.startswith("/v2"):
            extra = self._limit()
            if extra is None:
                self._json(h, 429, {"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]},
                           self.requests[-1]["reply"])
                return
        if parts.path == "/v2/_catalog" and self.catalog_status:
            self._json(h, self.catalog_status, {"errors": [{"code": "UNAUTHORIZED", "message": "catalog refused"}]},
                       [("WWW-Authenticate", 'Basic realm="front"')] if self.catalog_status == 401 else [])
            return
        if self.harbor and parts.path.startswith("/api/v2.0/"):
            self._harbor(h, parts)
            return
        m = REFERRERS.match(parts.path)
        if m and self.referrers_api and h.command == "GET":
            self._list_referrers(h, m.group("name"), m.group("digest"), parse_qs(parts.query), headers, extra)
            return
        status, up_headers, data = self._upstream(h.command, h.path, headers, body)
        m = MANIFEST_PUT.match(parts.path)
        if m and h.command == "PUT" and status == 201 and self.referrers_api and body:
            subject = self._record(m.group("name"), body, h.headers.get("Content-Type", ""))
            if subject:
                up_headers = [*up_headers, ("OCI-Subject", subject)]
        self._reply(h, status, [*up_headers, *extra], data)

    # ------------------------------------------------------------------ rate limit
    def _limit(self) -> list[tuple[str, str]] | None:
        """Headers for an allowed request, or None (429; its headers are left in the request record)."""
        limit, window, surprise_at = self.ratelimit
        with self._lock:
            now = time.time()
            self._count += 1
            record = self.requests[-1]
            if now >= self._window_end:
                self._window_end, self._remaining = math.ceil(now + window), limit
            base = [("RateLimit-Limit", f"{limit};w={window:g}")]
            if self._count == surprise_at:  # a 429 the headers did not announce (another client drained it)
                self._blocked_until = math.ceil(now + 2)
            if now < self._blocked_until or self._remaining <= 0:
                until = max(self._blocked_until, self._window_end)
                record["reply"] = [*base, ("RateLimit-Remaining", f"0;w={window:g}"),
                                   ("Retry-After", email.utils.formatdate(until, usegmt=True))]
                record["retry_at"] = until
                return None
            self._remaining -= 1
            record["reply"] = [*base, ("RateLimit-Remaining", f"{self._remaining};w={window:g}"),
                               ("RateLimit-Reset", str(math.ceil(self._window_end - now)))]
            return record["reply"]

    # ------------------------------------------------------------------ referrers
    def _record(self, name: str, body: bytes, content_type: str) -> str | None:
        try:
            manifest = json.loads(body)
        except ValueError:
            return None
        subject = manifest.get("subject") if isinstance(manifest, dict) else None
        if not isinstance(subject, dict) or not DIGEST.match(str(subject.get("digest", ""))):
            return None
        import hashlib

        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        media_type = manifest.get("mediaType") or content_type
        desc = {"mediaType": media_type, "digest": digest, "size": len(body)}
        artifact_type = manifest.get("artifactType") or (
            (manifest.get("config") or {}).get("mediaType") if "manifests" not in manifest else None)
        if artifact_type:
            desc["artifactType"] = artifact_type
        if manifest.get("annotations"):
            desc["annotations"] = manifest["annotations"]
        with self._lock:
            self.referrers.setdefault((name, subject["digest"]), {})[digest] = desc
        return subject["digest"]

    def _list_referrers(self, h, name: str, digest: str, query: dict, headers: dict, extra: list) -> None:
        auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}
        status, up_headers, _ = self._upstream("GET", "/v2/", auth, None)
        if status == 401:
            self._reply(h, 401, [(k, v) for k, v in up_headers if k.lower() == "www-authenticate"], b"")
            return
        if not DIGEST.match(digest):
            self._json(h, 400, {"errors": [{"code": "DIGEST_INVALID", "message": "invalid digest"}]})
            return
        with self._lock:
            found = dict(self.referrers.get((name, digest), {}))
        # "Enabling the Referrers API": include what the referrers tag schema index lists
        status, _, data = self._upstream("GET", f"/v2/{name}/manifests/sha256-{digest[7:]}", {**auth, "Accept": INDEX},
                                         None)
        if status == 200:
            try:
                for desc in json.loads(data).get("manifests") or []:
                    found.setdefault(desc["digest"], desc)
            except (ValueError, KeyError, AttributeError):
                pass
        manifests = list(found.values())
        out_headers = [("Content-Type", INDEX), *extra]
        wanted = query.get("artifactType")
        if wanted:
            manifests = [d for d in manifests if d.get("artifactType") in wanted]
            out_headers.append(("OCI-Filters-Applied", "artifactType"))
        body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}).encode()
        self._reply(h, 200, out_headers, body)

    # ------------------------------------------------------------------ Harbor listing
    def _harbor(self, h, parts) -> None:
        query = parse_qs(parts.query)
        page = int((query.get("page") or ["1"])[0])
        size = int((query.get("page_size") or ["10"])[0])
        if size > 100:
            self._json(h, 422, {"errors": [{"code": "UNPROCESSABLE_ENTITY", "message": "page_size > 100"}]})
            return
        _, _, data = self._upstream("GET", "/v2/_catalog?n=1000", {}, None)
        repos = sorted(json.loads(data).get("repositories") or [])
        if parts.path == "/api/v2.0/projects":
            names = sorted({r.split("/", 1)[0] for r in repos if "/" in r})
            items = [{"project_id": i + 1, "name": n} for i, n in enumerate(names)]
        else:
            m = re.fullmatch(r"/api/v2\.0/projects/([^/]+)/repositories", parts.path)
            if not m:
                self._json(h, 404, {"errors": [{"code": "NOT_FOUND", "message": "no such API"}]})
                return
            project = m.group(1)
            items = [{"id": i + 1, "name": r, "artifact_count": 1} for i, r in enumerate(repos)
                     if r.startswith(project + "/")]
        chunk = items[(page - 1) * size:page * size]
        headers = [("X-Total-Count", str(len(items)))]
        if page * size < len(items):
            headers.append(("Link", f'<{parts.path}?page={page + 1}&page_size={size}>; rel="next"'))
        self._json(h, 200, chunk, headers)
