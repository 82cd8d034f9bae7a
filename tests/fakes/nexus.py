"""A fake Sonatype Nexus Repository 3 for tests: the parts of its REST API v1 regwatch reads.

Payloads follow Sonatype's documented REST API of Nexus Repository 3 (help.sonatype.com,
"REST and Integration API", the Swagger at ``/service/rest/swagger.json`` of 3.6x-3.7x):

- ``GET /service/rest/v1/status``: 200 with an empty body when the node can serve reads,
  503 when it cannot; needs no login.
- ``GET /service/rest/v1/status/check``: ``{"<check name>": {"healthy": bool, "message": str,
  "error": null, "details": null, "time": <ms>, "duration": <ms>, "timestamp": str}}``; needs
  the ``nx-metrics-all`` privilege.
- ``GET /service/rest/v1/blobstores``: ``[{"softQuota": null, "name": str, "type": "File",
  "unavailable": bool, "blobCount": int, "totalSizeInBytes": int, "availableSpaceInBytes": int}]``
  (BlobStoreMetrics: total = space consumed by the store, available = estimate of space left).
- ``GET /service/rest/v1/repositories``: ``[{"name", "format", "type" (hosted|proxy|group), "url",
  "attributes": {"proxy": {"remoteUrl": ...}} for proxies}]``.
- ``GET /service/rest/v1/repositories/docker/proxy/{name}`` (3.20+): the DockerProxyApiRepository
  ``{"name", "format", "type", "url", "online", "storage", "proxy": {"remoteUrl", "contentMaxAge",
  "metadataMaxAge"}, "negativeCache", "httpClient": {"blocked", "autoBlock", "connection"},
  "docker", "dockerProxy"}``; 404 for a name that is no Docker proxy.
- Errors: a missing or wrong login is ``401`` with an empty body and
  ``WWW-Authenticate: BASIC realm="Sonatype Nexus Repository Manager"``; a user without the
  privilege gets ``403`` with an empty body.

Switches: ``auth_fail`` (every authenticated endpoint answers 401), ``unavailable`` (status 503),
``drop_field`` (``"availableSpaceInBytes"`` ... removed from the first blob store),
``forbidden`` (paths answering 403 to a valid login without the privilege),
``delay`` (seconds every answer waits: a hung server), ``stop()`` (the server is down).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

REST = "/service/rest/v1"


class FakeServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 in a daemon thread; subclasses implement ``handle``."""

    def __init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if fake.delay:
                    time.sleep(fake.delay)  # a hung server: accepts, then answers too late
                status, headers, body = fake.handle(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.requests: list[str] = []
        self.delay = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: BaseHTTPRequestHandler) -> tuple[int, dict, bytes]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def basic_user(req: BaseHTTPRequestHandler) -> tuple[str, str] | None:
        header = req.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password


def as_json(data: Any, status: int = 200) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(data).encode()


class FakeNexus(FakeServer):
    def __init__(self, users: dict[str, str] | None = None) -> None:
        super().__init__()
        self.users = users if users is not None else {"admin": "admin123"}
        self.auth_fail = False
        self.unavailable = False
        self.drop_field: str | None = None
        self.forbidden: set[str] = set()  # paths answering 403 (the user lacks the privilege)
        self.checks: dict[str, dict] = {
            "Available CPUs": {"healthy": True, "message": "The host system is allocating a maximum of 4 cores"},
            "Blob Stores": {"healthy": True, "message": "All blob stores are ready"},
            "File Descriptors": {"healthy": False, "message": "Recommended file descriptor limit is 65536"},
        }
        self.blobstores: list[dict] = [
            {"softQuota": None, "name": "default", "type": "File", "unavailable": False, "blobCount": 4242,
             "totalSizeInBytes": 1_234_567_890, "availableSpaceInBytes": 8_765_432_110},
            {"softQuota": None, "name": "docker", "type": "File", "unavailable": False, "blobCount": 17,
             "totalSizeInBytes": 52_428_800, "availableSpaceInBytes": 8_765_432_110},
            {"softQuota": None, "name": "s3-store", "type": "S3", "unavailable": False, "blobCount": 3,
             "totalSizeInBytes": 3_000, "availableSpaceInBytes": 9_223_372_036_854_775_807},
        ]
        self.repositories: list[dict] = [
            {"name": "docker-hosted", "format": "docker", "type": "hosted", "url": "", "attributes": {}},
            {"name": "docker-hosted-2", "format": "docker", "type": "hosted", "url": "", "attributes": {}},
            {"name": "docker-proxy", "format": "docker", "type": "proxy", "url": "",
             "attributes": {"proxy": {"remoteUrl": "https://registry-1.docker.io"}}},
            {"name": "docker-group", "format": "docker", "type": "group", "url": "", "attributes": {}},
            {"name": "maven-releases", "format": "maven2", "type": "hosted", "url": "", "attributes": {}},
        ]
        for repo in self.repositories:
            repo["url"] = f"{self.url}/repository/{repo['name']}"
        self.proxy_settings = {
            "docker-proxy": {"blocked": False, "autoBlock": True, "online": True},
            "quay-proxy": {"blocked": True, "autoBlock": False, "online": False},
        }
        self.repositories.append({"name": "quay-proxy", "format": "docker", "type": "proxy",
                                  "url": f"{self.url}/repository/quay-proxy",
                                  "attributes": {"proxy": {"remoteUrl": "https://quay.io"}}})

    def proxy_detail(self, name: str) -> dict | None:
        summary = next((r for r in self.repositories if r["name"] == name and r["type"] == "proxy"), None)
        if summary is None or name not in self.proxy_settings:
            return None
        settings = self.proxy_settings[name]
        return {"name": name, "format": "docker", "type": "proxy", "url": summary["url"], "online": settings["online"],
                "storage": {"blobStoreName": "docker", "strictContentTypeValidation": True},
                "proxy": {"remoteUrl": summary["attributes"]["proxy"]["remoteUrl"], "contentMaxAge": 1440,
                          "metadataMaxAge": 1440},
                "negativeCache": {"enabled": True, "timeToLive": 1440},
                "httpClient": {"blocked": settings["blocked"], "autoBlock": settings["autoBlock"],
                               "connection": {"retries": 0, "timeout": 60}},
                "docker": {"v1Enabled": False, "forceBasicAuth": True, "httpPort": None, "httpsPort": None},
                "dockerProxy": {"indexType": "REGISTRY", "indexUrl": None}}

    def _authorized(self, req: BaseHTTPRequestHandler) -> bool:
        creds = self.basic_user(req)
        return not self.auth_fail and creds is not None and self.users.get(creds[0]) == creds[1]

    def handle(self, req: BaseHTTPRequestHandler) -> tuple[int, dict, bytes]:
        path = urlsplit(req.path).path
        if path == f"{REST}/status":
            return (503 if self.unavailable else 200), {}, b""
        endpoints = {f"{REST}/status/check": self.checks, f"{REST}/blobstores": self.blobstores,
                     f"{REST}/repositories": self.repositories}
        detail_prefix = f"{REST}/repositories/docker/proxy/"
        if path not in endpoints and not path.startswith(detail_prefix):
            return 404, {}, b""
        if not self._authorized(req):
            return 401, {"WWW-Authenticate": 'BASIC realm="Sonatype Nexus Repository Manager"'}, b""
        if path in self.forbidden:
            return 403, {}, b""
        if path.startswith(detail_prefix):
            detail = self.proxy_detail(unquote(path[len(detail_prefix):]))
            return as_json(detail) if detail else (404, {}, b"")
        data = json.loads(json.dumps(endpoints[path]))
        if self.drop_field and path == f"{REST}/blobstores":
            data[0].pop(self.drop_field, None)
        return as_json(data)
