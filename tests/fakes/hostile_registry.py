"""A hostile registry for the drill's boundary tests: it speaks enough of the distribution-spec v1.1.1
pull API (``/v2/``, ``_catalog``, ``tags/list``, manifests by tag or digest with ``Docker-Content-Digest``,
blobs, and 404 for ``/referrers/``) to get a client going, and then serves whatever the test put in it:
malformed manifests, names that try path traversal, and blobs longer than their descriptor says
(``endless`` blobs stream until the client hangs up; ``sent`` counts what went out).

``paths`` records every request path, so a test can assert that no traversal name reached a URL.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class HostileRegistry:
    def __init__(self) -> None:
        self.catalog: list = []
        self.tags: dict[str, list] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}  # (repo, tag or digest) -> body
        self.blobs: dict[str, bytes] = {}
        self.endless: set[str] = set()   # blob digests served as an endless stream
        self.sent = 0
        self.paths: list[str] = []
        self._lock = threading.Lock()
        reg = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                reg.handle(self)

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HostileRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_manifest(self, repo: str, tag: str | None, body: bytes | str | dict | list) -> str:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        body = body.encode() if isinstance(body, str) else body
        digest = digest_of(body)
        self.manifests[(repo, digest)] = body
        if tag is not None:
            self.manifests[(repo, tag)] = body
            self.tags.setdefault(repo, []).append(tag)
            if repo not in self.catalog:
                self.catalog.append(repo)
        return digest

    def add_blob(self, data: bytes) -> dict:
        self.blobs[digest_of(data)] = data
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(data), "size": len(data)}

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        with self._lock:
            self.paths.append(unquote(path))
        if path == "/v2/":
            return self._send(h, 200, b"{}")
        if path == "/v2/_catalog":
            return self._send(h, 200, json.dumps({"repositories": self.catalog}).encode())
        if path.endswith("/tags/list"):
            repo = path[len("/v2/"):-len("/tags/list")]
            return self._send(h, 200, json.dumps({"name": repo, "tags": self.tags.get(repo, [])}).encode())
        if "/referrers/" in path:
            return self._send(h, 404, b'{"errors":[{"code":"NOT_FOUND"}]}')
        if "/manifests/" in path:
            repo, _, ref = path[len("/v2/"):].rpartition("/manifests/")
            body = self.manifests.get((repo, ref))
            if body is None:
                return self._send(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            return self._send(h, 200, body, {"Docker-Content-Digest": digest_of(body),
                                             "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if "/blobs/" in path:
            digest = path.rpartition("/blobs/")[2]
            if digest in self.endless:
                h.send_response(200)
                h.send_header("Content-Type", "application/octet-stream")
                h.end_headers()  # no Content-Length: the body ends when the server stops (it never does)
                chunk = b"\0" * (1 << 20)
                try:
                    for _ in range(4096):  # 4 GiB, bounded so the fake itself always ends
                        h.wfile.write(chunk)
                        with self._lock:
                            self.sent += len(chunk)
                except OSError:
                    pass
                h.close_connection = True
                return None
            data = self.blobs.get(digest)
            if data is None:
                return self._send(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            return self._send(h, 200, data)
        return self._send(h, 404, b"{}")
