"""A fake JFrog Artifactory for tests: the parts of its REST API regwatch reads, under ``/artifactory``.

Payloads follow JFrog's documented REST API (jfrog.com/help "JFrog REST APIs", Artifactory 7.x):

- ``GET /api/system/ping``: ``OK`` as text/plain.
- ``GET /api/storageinfo`` ("Get Storage Summary Info", since 4.2.0, admin only): the sample of
  the docs — ``binariesSummary`` strings (``"binariesCount": "125,726"``, ``"binariesSize": "3.48 GB"``),
  ``fileStoreSummary`` strings (``"totalSpace": "204.28 GB"``, ``"usedSpace": "32.22 GB (15.77%)"``,
  ``"freeSpace": "172.06 GB (84.23%)"``) and ``repositoriesSummaryList`` rows (``repoKey``,
  ``repoType``, ``foldersCount``, ``filesCount``, ``usedSpace``, ``usedSpaceInBytes`` (7.x),
  ``itemsCount``, ``packageType``, ``percentage``) ending with the ``TOTAL`` row.
- ``GET /api/repositories?type=local&packageType=docker``: ``[{"key", "type", "url", "packageType"}]``.
- ``/api/docker/<repo>/v2/...``: the Docker registry API of that repository — reverse-proxied to a
  REAL docker-registry given per repository (``docker={"docker-local": registry_url}``), with the
  ``Link`` header rewritten to the /api/docker path.
- Errors: a bad or missing credential is ``401`` with ``{"errors": [{"status": 401, "message":
  "Bad credentials"}]}`` (``WWW-Authenticate: Basic realm="Artifactory Realm"``); a non-admin
  on /api/storageinfo gets ``403`` ``{"errors": [{"status": 403, "message": "Forbidden"}]}``.

Credentials accepted: ``Authorization: Bearer <token>``, ``X-JFrog-Art-Api: <key>``, Basic user/password.
Switches: ``auth_fail`` (every request 401), ``drop_field`` (a ``fileStoreSummary`` key removed),
``stop()`` (down).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.nexus import FakeServer, as_json

BASE = "/artifactory"
GIB = 1024 ** 3


class FakeArtifactory(FakeServer):
    def __init__(self, *, token: str = "tok-123", api_key: str = "key-456",
                 users: dict[str, str] | None = None, docker: dict[str, str] | None = None) -> None:
        super().__init__()
        self.token, self.api_key = token, api_key
        self.users = users if users is not None else {"admin": "password", "reader": "reader-pw"}
        self.admins = {"admin"}  # token and API key act as admin; other Basic users do not
        self.docker = docker or {}
        self.auth_fail = False
        self.drop_field: str | None = None
        self.storageinfo = {
            "binariesSummary": {"binariesCount": "125,726", "binariesSize": "3.48 GB", "artifactsSize": "59.77 GB",
                                "optimization": "5.82%", "itemsCount": "2,176,580", "artifactsCount": "2,084,408"},
            "fileStoreSummary": {"storageType": "filesystem",
                                 "storageDirectory": "/var/opt/jfrog/artifactory/data/filestore",
                                 "totalSpace": "204.28 GB", "usedSpace": "32.22 GB (15.77%)",
                                 "freeSpace": "172.06 GB (84.23%)"},
            "repositoriesSummaryList": [
                {"repoKey": "docker-local", "repoType": "LOCAL", "foldersCount": 6, "filesCount": 11,
                 "usedSpace": "34.46 MB", "usedSpaceInBytes": 36138261, "itemsCount": 17, "packageType": "Docker",
                 "projectKey": "default", "percentage": "3.95%"},
                {"repoKey": "docker-remote", "repoType": "CACHE", "foldersCount": 2, "filesCount": 5,
                 "usedSpace": "1.5 GB", "itemsCount": 7, "packageType": "Docker", "percentage": "4.65%"},
                {"repoKey": "libs-release", "repoType": "LOCAL", "foldersCount": 1, "filesCount": 1000,
                 "usedSpace": "2 GB", "usedSpaceInBytes": 2 * GIB, "itemsCount": 1001, "packageType": "Maven",
                 "percentage": "6.2%"},
                {"repoKey": "TOTAL", "repoType": "NA", "foldersCount": 92172, "filesCount": 2084408,
                 "usedSpace": "59.77 GB", "itemsCount": 2176580},
            ],
        }

    def _authorized(self, req: BaseHTTPRequestHandler) -> bool:
        if self.auth_fail:
            return False
        header = req.headers.get("Authorization", "")
        if header == f"Bearer {self.token}" or req.headers.get("X-JFrog-Art-Api") == self.api_key:
            return True
        creds = self.basic_user(req)
        return creds is not None and self.users.get(creds[0]) == creds[1]

    def handle(self, req: BaseHTTPRequestHandler) -> tuple[int, dict, bytes]:
        parts = urlsplit(req.path)
        path = parts.path
        if not path.startswith(BASE + "/"):
            return 404, {}, b""
        path = path[len(BASE):]
        if not self._authorized(req):
            status, headers, body = as_json({"errors": [{"status": 401, "message": "Bad credentials"}]}, 401)
            return status, {**headers, "WWW-Authenticate": 'Basic realm="Artifactory Realm"'}, body
        if path == "/api/system/ping":
            return 200, {"Content-Type": "text/plain"}, b"OK"
        if path == "/api/storageinfo":
            creds = self.basic_user(req)
            if creds is not None and creds[0] not in self.admins:
                return as_json({"errors": [{"status": 403, "message": "Forbidden"}]}, 403)
            data = json.loads(json.dumps(self.storageinfo))
            if self.drop_field:
                data["fileStoreSummary"].pop(self.drop_field, None)
            return as_json(data)
        if path == "/api/repositories":
            query = parse_qs(parts.query)
            assert query.get("packageType") == ["docker"] and query.get("type") == ["local"]
            return as_json([{"key": key, "type": "LOCAL", "url": f"{self.url}{BASE}/{key}", "packageType": "Docker"}
                            for key in self.docker])
        if path.startswith("/api/docker/"):
            repo, _, rest = path[len("/api/docker/"):].partition("/")
            if repo not in self.docker or not rest.startswith("v2"):
                return as_json({"errors": [{"status": 404, "message": f"Repository {repo} not found"}]}, 404)
            return self._proxy(repo, rest, parts.query)
        return as_json({"errors": [{"status": 404, "message": "Not Found"}]}, 404)

    def _proxy(self, repo: str, rest: str, query: str) -> tuple[int, dict, bytes]:
        url = f"{self.docker[repo]}/{rest}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test registry
                status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, headers, body = err.code, err.headers, err.read()
        out = {k: v for k, v in headers.items() if k in ("Content-Type", "Docker-Distribution-Api-Version",
                                                         "Docker-Content-Digest")}
        if headers.get("Link"):
            out["Link"] = headers["Link"].replace("</v2/", f"<{BASE}/api/docker/{repo}/v2/")
        return status, out, body
