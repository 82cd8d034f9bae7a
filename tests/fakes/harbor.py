"""A fake Harbor for tests and benchmarks: the REST API v2.0 of goharbor/harbor.

It follows the API description ``api/v2.0/swagger.yaml`` of goharbor/harbor main @c50c7ddd6e
(v2.15.2 era; copied to ../shared/harbor/swagger.yaml): paths, query parameters and response
bodies (tests/test_harbor_fake.py validates every body it returns against that swagger's
schemas), and Harbor's behaviours that bite exporters (research notes, harbor-anchors.md §1):

- ``page_size`` above 100 is answered 422; lists carry ``X-Total-Count`` and a *relative*
  ``Link`` header whose entries are joined by ``" , "``;
- repository names in paths are encoded twice (``team%252Fapp``);
- rejected Basic credentials make the caller anonymous (401 on endpoints that need a login);
  roles get 403 where Harbor's RBAC denies them (a non-admin user cannot list quotas, a
  robot does not see the /statistics totals, ...);
- an older ``version`` answers 404 for endpoints that came later (/health 2.3, /quotas 2.3,
  /system/purgeaudit 2.6, /jobservice and /schedules 2.7, /security/summary 2.10, project-level
  artifacts 2.12, /auditlog-exts 2.13: the first goharbor/harbor tags whose swagger has them);
- schedules as Harbor keeps them: GC, purge and scan-all schedules with ``type``/``cron``/
  ``update_time``, replication policies with ``trigger.trigger_settings.cron``, retention
  policies with ``trigger.settings.cron``, runs whose trigger says who started them (``SCHEDULE``,
  ``scheduled``, ``Schedule``; handlers in src/server/v2.0/handler/{gc,replication,retention}.go),
  GC runs whose ``job_parameters`` carry ``freed_space``/``purged_blobs``/``purged_manifests``
  (src/controller/gc/callback.go), preheat policies whose ``trigger`` is a JSON string;
- ``tamper`` (swagger path -> function of the body) and ``extra_headers`` (swagger path ->
  headers) turn it into a hostile Harbor for the robustness tests;
- ``delay`` seconds per API call; ``rate_limit`` answers 429 with ``Retry-After``;
  ``core_down`` makes the nginx in front answer 502 Bad Gateway for every /api path.

Data is generated arithmetically from ids, so 10,000 projects and 100,000 repositories cost
nothing until a page of them is asked for.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections import Counter
from datetime import datetime, UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API = "/api/v2.0"
GIB = 1024 ** 3

# Endpoint (swagger path) -> first Harbor version that has it in the v2 API.
ADDED_IN = {
    "/health": (2, 3), "/statistics": (2, 3), "/quotas": (2, 3),
    "/system/purgeaudit": (2, 6), "/system/purgeaudit/schedule": (2, 6),
    "/jobservice/queues": (2, 7), "/jobservice/pools": (2, 7), "/schedules": (2, 7),
    "/schedules/{job_type}/paused": (2, 7), "/security/summary": (2, 10),
    "/projects/{project_name_or_id}/artifacts": (2, 12), "/auditlog-exts": (2, 13),
}
NO_AUTH = {"/ping", "/health", "/systeminfo"}
# What a non-admin user may not read (Harbor RBAC: system resources need sysadmin or a robot permission).
USER_FORBIDDEN = {
    "/quotas", "/systeminfo/volumes", "/registries", "/replication/policies", "/replication/executions",
    "/system/gc", "/system/gc/schedule", "/system/purgeaudit", "/system/purgeaudit/schedule",
    "/scans/all/metrics", "/scanners", "/security/summary", "/jobservice/queues", "/jobservice/pools",
    "/robots", "/auditlog-exts", "/audit-logs", "/system/scanAll/schedule", "/schedules",
    "/schedules/{job_type}/paused",
}
# A system robot with the monitoring permissions of harbor-anchors.md (no robot:list).
ROBOT_FORBIDDEN = {"/robots"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


T0 = 1_700_000_000.0
NULL = object()  # an endpoint whose payload is nil: 200 with an empty body (Harbor's answer for "no schedule")


def _route_table() -> list[tuple[re.Pattern, str]]:
    templates = [
        "/ping", "/health", "/systeminfo", "/systeminfo/volumes", "/statistics", "/projects",
        "/projects/{project_name_or_id}/summary", "/repositories", "/quotas", "/registries",
        "/replication/policies", "/replication/executions", "/system/gc", "/system/gc/schedule",
        "/system/purgeaudit", "/system/purgeaudit/schedule", "/scans/all/metrics", "/scanners",
        "/security/summary", "/jobservice/queues", "/jobservice/pools", "/robots", "/auditlog-exts",
        "/audit-logs", "/projects/{project_name}/repositories/{repository_name}/artifacts",
        "/system/scanAll/schedule", "/schedules", "/schedules/{job_type}/paused", "/retentions/{id}",
        "/retentions/{id}/executions", "/projects/{project_name}/preheat/policies",
        "/projects/{project_name}/preheat/policies/{preheat_policy_name}/executions",
        "/projects/{project_name_or_id}/artifacts",
    ]
    table = []
    for template in templates:
        pattern = re.sub(r"\{[^}]+\}", "([^/]+)", template)
        table.append((re.compile(f"^{pattern}$"), template))
    return table


ROUTES = _route_table()


class FakeHarbor:
    def __init__(self, *, projects: int = 4, repositories: int = 10, version: str = "v2.15.2-c50c7ddd",
                 delay: float = 0.0, record: bool = True):
        self.n_projects = projects
        self.n_repos = repositories
        self.version_text = version
        m = re.match(r"v?(\d+)\.(\d+)", version)
        self.version = (int(m.group(1)), int(m.group(2)))
        self.delay = delay
        self.record = record
        # name -> (password, role) with role admin | robot | user
        self.accounts: dict[str, tuple[str, str]] = {
            "admin": ("Harbor12345", "admin"), "robot$monitor": ("robot-secret", "robot"),
            "dev": ("dev-password", "user")}
        self.core_down = False
        self.rate_limit: int | None = None  # Retry-After seconds while set
        self.components = {"core": "healthy", "portal": "healthy", "jobservice": "healthy", "registry": "healthy",
                           "registryctl": "healthy", "database": "healthy", "redis": "healthy", "trivy": "healthy"}
        self.volumes = [{"total": 100 * GIB, "free": 40 * GIB}]
        self.registries = [{"id": 1, "name": "dockerhub", "url": "https://hub.docker.com", "type": "docker-hub",
                            "status": "healthy"},
                           {"id": 2, "name": "dr-site", "url": "https://harbor-dr.example.com", "type": "harbor",
                            "status": "unhealthy"}]
        self.policies = [
            {"id": 1, "name": "to-dr", "enabled": True,
             "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 0 * * * *"}}},
            {"id": 2, "name": "nightly", "enabled": False,
             "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 0 3 * * *"}}},
            {"id": 3, "name": "on-push", "enabled": True, "trigger": {"type": "event_based"}}]
        # policy id -> executions, newest first
        self.executions: dict[int, list[dict]] = {
            1: [self.execution(11, 1, "Failed", T0 + 3600, succeed=8, failed=2),
                self.execution(10, 1, "Succeed", T0, succeed=10)],
            2: [], 3: [self.execution(12, 3, "Succeed", T0 + 50, trigger="event_based", succeed=1)]}
        self.gc_runs = [self.gc_run(3, "Running", T0 + 7200, kind="MANUAL"), self.gc_run(2, "Error", T0 + 3600),
                        self.gc_run(1, "Success", T0, freed=(512 * 1024 * 1024, 120, 8))]
        self.gc_schedule: dict | None = {"type": "Daily", "cron": "0 0 0 * * *", "next_scheduled_time": iso(T0 + 86400)}
        self.gc_schedule_updated = T0 - 86400
        self.purge_runs = [self.gc_run(5, "Success", T0 + 100, job_name="PURGE_AUDIT_LOG")]
        self.purge_schedule: dict | None = {"type": "Weekly", "cron": "0 0 0 * * 0",
                                            "next_scheduled_time": iso(T0 + 5 * 86400)}
        self.scan_all_schedule: dict | None = {"type": "Daily", "cron": "0 0 2 * * *"}
        self.scheduler_paused = False
        # retention id -> its project, cron ("" = no schedule) and executions (newest first)
        self.retentions: dict[int, dict] = {
            1: {"project": 1, "cron": "0 0 0 * * *", "updated": T0 - 86400,
                "executions": [self.retention_run(21, 1, "Success", T0, "Schedule"),
                               self.retention_run(20, 1, "Error", T0 - 3600, "MANUAL")]},
            2: {"project": 3, "cron": "", "updated": T0 - 86400,
                "executions": [self.retention_run(22, 2, "Error", T0, "MANUAL")]}}
        # project name -> preheat policies, each with its executions (newest first)
        self.preheat: dict[str, list[dict]] = {
            "library": [{"id": 1, "name": "warm-nodes", "executions": [self.preheat_run(31, "Error", T0),
                                                                      self.preheat_run(30, "Success", T0 - 60)]},
                        {"id": 2, "name": "never-ran", "executions": []}]}
        self.scan_all = {"total": 100, "completed": 90, "metrics": {"Pending": 0, "Running": 10, "Success": 85,
                                                                     "Error": 5, "Stopped": 0},
                         "ongoing": True, "trigger": "Manual"}
        self.security = {"critical_cnt": 3, "high_cnt": 10, "medium_cnt": 20, "low_cnt": 40, "none_cnt": 5,
                         "unknown_cnt": 1, "total_vuls": 74, "scanned_cnt": 50, "total_artifact": 60,
                         "fixable_cnt": 30}
        self.queues = [{"job_type": "REPLICATION", "count": 3, "latency": 12, "paused": False},
                       {"job_type": "GARBAGE_COLLECTION", "count": 0, "latency": 0, "paused": True}]
        self.pools = [{"pid": 7, "worker_pool_id": "a1b2c3", "start_at": iso(T0), "heartbeat_at": iso(T0 + 60),
                       "concurrency": 10, "host": "jobservice-0"}]
        self.robots = [{"id": 1, "name": "robot$ci", "level": "system", "duration": 30, "disable": False,
                        "expires_at": int(T0 + 30 * 86400)},
                       {"id": 2, "name": "robot$proj1+pull", "level": "project", "duration": -1, "disable": True,
                        "expires_at": -1}]
        self.audit: list[dict] = []
        self.tamper: dict[str, Any] = {}  # swagger path -> function(body) -> the body sent instead
        self.extra_headers: dict[str, dict[str, str]] = {}  # swagger path -> headers added (or replaced)
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []  # (template, raw path, query)
        self.responses: list[tuple[str, int, Any]] = []  # (template, status, body) samples
        self._samples: Counter = Counter()
        self.calls: Counter = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ data

    @staticmethod
    def execution(ident: int, policy: int, status: str, start: float, trigger: str = "scheduled",
                  **counts: int) -> dict:
        body = {"id": ident, "policy_id": policy, "status": status, "trigger": trigger,
                "start_time": iso(start), "status_text": "", "total": 0, "failed": 0, "succeed": 0,
                "in_progress": 0, "stopped": 0}
        body.update(counts)
        body["total"] = sum(counts.values())
        if status != "InProgress":
            body["end_time"] = iso(start + 300)
        return body

    @staticmethod
    def gc_run(ident: int, status: str, when: float, job_name: str = "GARBAGE_COLLECTION", kind: str = "SCHEDULE",
               freed: tuple[int, int, int] | None = None) -> dict:
        """A GC (or purge) history entry as GetGCHistory builds it: job_kind and schedule.type are the trigger,
        job_parameters the execution's extra attributes as a JSON string, creation_time its start."""
        params: dict[str, Any] = {"dry_run": False, "delete_untagged": True, "workers": 1}
        if freed is not None:
            params.update(freed_space=freed[0], purged_blobs=freed[1], purged_manifests=freed[2])
        return {"id": ident, "job_name": job_name, "job_kind": kind, "job_parameters": json.dumps(params),
                "schedule": {"type": kind.title(), "cron": "", "next_scheduled_time": "0001-01-01T00:00:00.000Z"},
                "job_status": status, "deleted": False, "creation_time": iso(when), "update_time": iso(when + 60)}

    @staticmethod
    def retention_run(ident: int, policy: int, status: str, start: float, trigger: str) -> dict:
        return {"id": ident, "policy_id": policy, "start_time": iso(start),
                "end_time": iso(start + 120) if status not in ("Running", "Pending") else "",
                "status": status, "trigger": trigger, "dry_run": False}

    @staticmethod
    def preheat_run(ident: int, status: str, start: float, trigger: str = "SCHEDULE") -> dict:
        return {"id": ident, "vendor_type": "P2P_PREHEAT", "vendor_id": 1, "status": status, "status_message": "",
                "metrics": {"task_count": 1, "success_task_count": 1 if status == "Success" else 0,
                            "error_task_count": 1 if status == "Error" else 0},
                "trigger": trigger, "extra_attrs": {}, "start_time": iso(start), "end_time": iso(start + 30)}

    def project_name(self, i: int) -> str:
        return "library" if i == 1 else f"proj{i}"

    def project_public(self, i: int) -> bool:
        return i % 3 == 1

    def project_registry(self, i: int) -> int | None:
        return 1 if i % 50 == 2 else None

    def repo_count(self, i: int) -> int:
        base, extra = divmod(self.n_repos, self.n_projects)
        return base + (1 if i <= extra else 0)

    def project(self, i: int) -> dict:
        body = {"project_id": i, "owner_id": 1, "name": self.project_name(i), "creation_time": iso(T0),
                "update_time": iso(T0), "deleted": False, "owner_name": "admin", "togglable": True,
                "current_user_role_id": 1, "current_user_role_ids": [1], "repo_count": self.repo_count(i),
                "metadata": {"public": "true" if self.project_public(i) else "false", "auto_scan": "true"}}
        retention = next((rid for rid, r in self.retentions.items() if r["project"] == i), None)
        if retention is not None:
            body["metadata"]["retention_id"] = str(retention)
        if self.project_registry(i):
            body["registry_id"] = self.project_registry(i)
        return body

    def repo_project(self, j: int) -> int:
        return (j - 1) % self.n_projects + 1

    def repo_name(self, j: int) -> str:
        # Every fifth repository has a nested name: it needs double encoding in paths.
        short = f"team{j % 3}/app{j}" if j % 5 == 0 else f"app{j}"
        return f"{self.project_name(self.repo_project(j))}/{short}"

    def repository(self, j: int) -> dict:
        return {"id": j, "project_id": self.repo_project(j), "name": self.repo_name(j), "description": "",
                "artifact_count": j % 7 + 1, "pull_count": j * 3, "creation_time": iso(T0), "update_time": iso(T0)}

    def quota(self, i: int) -> dict:
        hard = -1 if i % 4 == 0 else 10 * GIB
        return {"id": i, "ref": {"id": i, "name": self.project_name(i), "owner_name": "admin"},
                "hard": {"storage": hard}, "used": {"storage": i * 1_000_000}, "creation_time": iso(T0),
                "update_time": iso(T0)}

    def summary(self, i: int) -> dict:
        return {"repo_count": self.repo_count(i), "project_admin_count": 1, "maintainer_count": i % 3,
                "developer_count": i % 5, "guest_count": 0, "limited_guest_count": 0,
                "quota": {"hard": {"storage": self.quota(i)["hard"]["storage"]},
                          "used": {"storage": self.quota(i)["used"]["storage"]}}}

    def artifacts(self, j: int) -> list[dict]:
        """Artifacts of repository j: artifact_count of them, the even ones signed with cosign."""
        out = []
        for k in range(1, j % 7 + 2):
            digest = "sha256:" + f"{j:032x}{k:032x}"
            art = {"id": j * 100 + k, "type": self.artifact_type(j, k),
                   "media_type": "application/vnd.oci.image.config.v1+json",
                   "manifest_media_type": "application/vnd.oci.image.manifest.v1+json", "project_id":
                   self.repo_project(j), "repository_id": j, "repository_name": self.repo_name(j), "digest": digest,
                   "size": 1000 * k, "push_time": iso(T0), "pull_time": iso(T0), "extra_attrs": {},
                   "annotations": {}, "references": [], "labels": [], "accessories": []}
            if k % 2 == 0:
                art["accessories"].append({"id": j * 1000 + k, "artifact_id": j * 1000 + k, "subject_artifact_id":
                                           art["id"], "subject_artifact_digest": digest, "subject_artifact_repo":
                                           self.repo_name(j), "size": 500, "digest": "sha256:" + "c" * 64,
                                           "type": "signature.cosign", "icon": "", "creation_time": iso(T0)})
            out.append(art)
        return out

    @staticmethod
    def artifact_type(j: int, k: int) -> str:
        """Mostly images; the third artifact of a repository a Helm chart, of every 11th repository a CNAB."""
        return "CHART" if k == 3 else "CNAB" if j % 11 == 0 and k == 1 else "IMAGE"

    def signed_artifacts(self) -> int:
        """How many artifacts the fake signs over all repositories (for tests)."""
        return sum(sum(1 for k in range(1, j % 7 + 2) if k % 2 == 0) for j in range(1, self.n_repos + 1))

    def add_audit(self, operation: str, *, result: bool = True, when: float | None = None,
                  resource_type: str = "artifact", username: str = "alice") -> dict:
        with self._lock:
            event = {"id": len(self.audit) + 1, "username": username, "resource": "library/app1:1.0",
                     "resource_type": resource_type, "operation": operation,
                     "operation_description": f"{operation} {resource_type}", "operation_result": result,
                     "op_time": iso(time.time() if when is None else when)}
            self.audit.append(event)
        return event

    # ------------------------------------------------------------------ server

    def start(self) -> FakeHarbor:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms a call.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 256
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-harbor").start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHarbor:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ handling

    def _who(self, handler: BaseHTTPRequestHandler) -> str | None:
        header = handler.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        account = self.accounts.get(user)
        # Harbor: a basic-auth failure leaves the request anonymous rather than rejecting it outright.
        return account[1] if account and account[0] == password else None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        if self.core_down and parts.path.startswith("/api/"):
            with self._lock:
                self.calls["core_down"] += 1
            self._send(handler, 502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if not parts.path.startswith(API):
            self._error(handler, 404, "NOT_FOUND", "not found")
            return
        path = parts.path[len(API):]
        query = parse_qs(parts.query, keep_blank_values=True)
        template, args = None, ()
        for pattern, name in ROUTES:
            match = pattern.match(path)
            if match:
                template, args = name, match.groups()
                break
        with self._lock:
            self.calls[template or path] += 1
            if self.record:
                self.requests.append((template or path, parts.path, query))
        if self.delay:
            time.sleep(self.delay)
        if self.rate_limit is not None:
            self._error(handler, 429, "TOO_MANY_REQUEST", "too many requests", {"Retry-After": str(self.rate_limit)})
            return
        if template is None or self.version < ADDED_IN.get(template, (2, 0)):
            self._error(handler, 404, "NOT_FOUND", f"{parts.path} not found")
            return
        role = self._who(handler)
        if template not in NO_AUTH and role is None:
            self._error(handler, 401, "UNAUTHORIZED", "UnAuthorized")
            return
        if (role == "user" and template in USER_FORBIDDEN) or (role == "robot" and template in ROBOT_FORBIDDEN):
            self._error(handler, 403, "FORBIDDEN", "forbidden")
            return
        try:
            size = int(query.get("page_size", ["10"])[0])
            page = int(query.get("page", ["1"])[0])
        except ValueError:
            self._error(handler, 400, "BAD_REQUEST", "invalid page or page_size")
            return
        if size > 100 or size < 0:
            # go-swagger validation of the pageSize parameter (maximum: 100).
            self._error(handler, 422, "UNPROCESSABLE_ENTITY",
                        "page_size in query should be less than or equal to 100")
            return
        method = getattr(self, "get_" + re.sub(r"\W+", "_", template).strip("_").replace("_project_name_or_id_", "_")
                         .replace("_project_name_repositories_repository_name_", "_repo_"))
        result = method(role, query, *[unquote(a) for a in args])
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int):
            items, total = result
            self._list(handler, template, parts.path, query, items, total, page, size)
        elif result is NULL:  # go-swagger writes no body for a nil payload
            self._send(handler, 200, b"", "application/json")
        elif result is None:
            self._error(handler, 404, "NOT_FOUND", "not found")
        else:
            self._json(handler, template, 200, result)

    def _list(self, handler, template, path, query, getter, total, page, size) -> None:
        size = size or 10
        start = (page - 1) * size
        items = getter(start, min(start + size, total)) if start < total else []
        links = []
        rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k not in ("page", "page_size"))
        rest = "&" + rest if rest else ""
        if page > 1:
            links.append(f'<{path}?page={page - 1}&page_size={size}{rest}>; rel="prev"')
        if page * size < total:
            links.append(f'<{path}?page={page + 1}&page_size={size}{rest}>; rel="next"')
        headers = {"X-Total-Count": str(total)}
        if links:
            headers["Link"] = " , ".join(links)
        headers.update(self.extra_headers.get(template, {}))
        self._json(handler, template, 200, items, headers)

    def _json(self, handler, template, status, body, headers=None) -> None:
        if template in self.tamper:
            body = self.tamper[template](body)
        elif self.record:
            with self._lock:
                # Keep a few bodies per endpoint for the schema test, not every page of a benchmark.
                if self._samples[template] < 5:
                    self._samples[template] += 1
                    self.responses.append((template, status, body))
        if isinstance(body, bytes):  # a tampered body sent as it is
            self._send(handler, status, body, "application/json", headers)
            return
        self._send(handler, status, json.dumps(body).encode(), "application/json", headers)

    def _error(self, handler, status, code, message, headers=None) -> None:
        self._send(handler, status, json.dumps({"errors": [{"code": code, "message": message}]}).encode(),
                   "application/json", headers)

    def _send(self, handler, status, body: bytes, ctype: str, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Request-Id", f"req-{time.monotonic_ns()}")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    # ------------------------------------------------------------------ endpoints (named after the swagger path)

    def get_ping(self, role, q):
        return "Pong"

    def get_health(self, role, q):
        comps = [{"name": n, "status": s} | ({"error": "unhealthy"} if s != "healthy" else {})
                 for n, s in self.components.items()]
        return {"status": "healthy" if all(c["status"] == "healthy" for c in comps) else "unhealthy",
                "components": comps}

    def get_systeminfo(self, role, q):
        info = {"auth_mode": "db_auth", "primary_auth_mode": False, "self_registration": False,
                "banner_message": "", "oidc_provider_name": ""}
        if role is not None:
            info.update({"harbor_version": self.version_text, "external_url": self.url,
                         "registry_url": "127.0.0.1", "read_only": False, "has_ca_root": False,
                         "project_creation_restriction": "everyone",
                         "registry_storage_provider_name": "filesystem", "notification_enable": True,
                         "current_time": iso(time.time())})
        return info

    def get_systeminfo_volumes(self, role, q):
        return {"storage": self.volumes}

    def get_statistics(self, role, q):
        public = sum(1 for i in range(1, self.n_projects + 1) if self.project_public(i))
        body = {"private_project_count": self.n_projects - public, "public_project_count": public,
                "private_repo_count": 0, "public_repo_count": 0, "total_project_count": 0, "total_repo_count": 0,
                "total_storage_consumption": 0}
        if role == "admin":  # IsSysAdmin(); a robot's is always false
            body.update(total_project_count=self.n_projects, total_repo_count=self.n_repos,
                        total_storage_consumption=sum(self.quota(i)["used"]["storage"]
                                                      for i in range(1, self.n_projects + 1)))
        return body

    def get_projects(self, role, q):
        return (lambda a, b: [self.project(i) for i in range(a + 1, b + 1)]), self.n_projects

    def get_projects_summary(self, role, q, ident):
        i = int(ident) if ident.isdigit() else next(
            (k for k in range(1, self.n_projects + 1) if self.project_name(k) == ident), 0)
        return self.summary(i) if 1 <= i <= self.n_projects else None

    def get_repositories(self, role, q):
        return (lambda a, b: [self.repository(j) for j in range(a + 1, b + 1)]), self.n_repos

    def get_quotas(self, role, q):
        return (lambda a, b: [self.quota(i) for i in range(a + 1, b + 1)]), self.n_projects

    def get_registries(self, role, q):
        regs = [{**r, "credential": {"type": "basic", "access_key": "puller", "access_secret": "*****"},
                 "insecure": False, "description": "", "creation_time": iso(T0), "update_time": iso(T0)}
                for r in self.registries]
        return (lambda a, b: regs[a:b]), len(regs)

    def get_replication_policies(self, role, q):
        pols = [{**p, "description": "", "dest_namespace": "", "deletion": False,
                 "override": True, "speed": -1, "creation_time": iso(T0), "update_time": iso(T0)}
                for p in self.policies]
        return (lambda a, b: pols[a:b]), len(pols)

    def get_replication_executions(self, role, q):
        pid = int(q.get("policy_id", ["0"])[0] or 0)
        runs = [e for p, es in self.executions.items() if not pid or p == pid for e in es]
        for key in ("trigger", "status"):  # the swagger's filters of /replication/executions
            if q.get(key, [""])[0]:
                runs = [e for e in runs if e[key] == q[key][0]]
        runs.sort(key=lambda e: e["start_time"], reverse=q.get("sort", ["-start_time"])[0].startswith("-"))
        return (lambda a, b: runs[a:b]), len(runs)

    def _history(self, runs, q):
        runs = sorted(runs, key=lambda r: r["creation_time"], reverse=q.get("sort", ["-"])[0].startswith("-"))
        return (lambda a, b: runs[a:b]), len(runs)

    def get_system_gc(self, role, q):
        return self._history(self.gc_runs, q)

    def get_system_gc_schedule(self, role, q):
        if self.gc_schedule is None:
            return NULL
        return {"id": 1, "job_name": "", "job_kind": self.gc_schedule.get("cron", ""), "job_parameters": "{}",
                "schedule": self.gc_schedule, "job_status": "Success", "deleted": False,
                "creation_time": iso(self.gc_schedule_updated), "update_time": iso(self.gc_schedule_updated)}

    def get_system_purgeaudit(self, role, q):
        return self._history(self.purge_runs, q)

    def get_system_purgeaudit_schedule(self, role, q):
        if self.purge_schedule is None:
            return NULL
        return {"id": 2, "job_name": "", "job_kind": self.purge_schedule.get("cron", ""),
                "schedule": self.purge_schedule,
                "job_status": "", "deleted": False, "creation_time": iso(T0), "update_time": iso(T0)}

    def get_system_scanAll_schedule(self, role, q):
        if self.scan_all_schedule is None:
            return NULL
        return {"id": 3, "status": "Success", "creation_time": iso(T0 - 86400), "update_time": iso(T0 - 86400),
                "schedule": self.scan_all_schedule, "parameters": {}}

    def get_schedules(self, role, q):
        rows = [{"id": 1, "vendor_type": "GARBAGE_COLLECTION", "vendor_id": -1,
                 "cron": self.gc_schedule.get("cron", ""),
                 "update_time": iso(self.gc_schedule_updated)}] if self.gc_schedule else []
        rows += [{"id": 10 + rid, "vendor_type": "RETENTION", "vendor_id": rid, "cron": r["cron"],
                  "update_time": iso(r["updated"])} for rid, r in sorted(self.retentions.items()) if r["cron"]]
        return (lambda a, b: rows[a:b]), len(rows)

    def get_schedules_job_type_paused(self, role, q, job_type):
        return {"paused": self.scheduler_paused} if job_type == "all" else None

    def get_retentions_id(self, role, q, ident):
        r = self.retentions.get(int(ident)) if ident.isdigit() else None
        if r is None:
            return None
        settings = {"cron": r["cron"]} if r["cron"] else {}
        return {"id": int(ident), "algorithm": "or", "rules": [],
                "trigger": {"kind": "Schedule", "settings": settings, "references": {}},
                "scope": {"level": "project", "ref": r["project"]}}

    def get_retentions_id_executions(self, role, q, ident):
        r = self.retentions.get(int(ident)) if ident.isdigit() else None
        if r is None:
            return None
        runs = r["executions"]
        return (lambda a, b: runs[a:b]), len(runs)

    def get_projects_project_name_preheat_policies(self, role, q, project):
        if not any(self.project_name(i) == project for i in range(1, self.n_projects + 1)):
            return None
        pols = [{"id": p["id"], "name": p["name"], "description": "", "project_id": 1, "provider_id": 1,
                 "provider_name": "dragonfly", "filters": "[]", "enabled": True,
                 "trigger": json.dumps({"type": "scheduled", "trigger_setting": {"cron": "0 0 1 * * *"}}),
                 "extra_attrs": "", "creation_time": iso(T0), "update_time": iso(T0)}
                for p in self.preheat.get(project, [])]
        return (lambda a, b: pols[a:b]), len(pols)

    def get_projects_project_name_preheat_policies_preheat_policy_name_executions(self, role, q, project, policy):
        found = next((p for p in self.preheat.get(project, []) if p["name"] == policy), None)
        if found is None:
            return None
        runs = found["executions"]
        return (lambda a, b: runs[a:b]), len(runs)

    def get_projects_artifacts(self, role, q, ident):
        i = int(ident) if ident.isdigit() else 0
        if not 1 <= i <= self.n_projects:
            return None
        ids = list(range(i, self.n_repos + 1, self.n_projects))
        counts = [len(self.artifacts(j)) for j in ids]

        def window(a, b):
            out, seen = [], 0
            for j, n in zip(ids, counts, strict=True):
                if seen + n > a and seen < b:
                    arts = self.artifacts(j)[max(0, a - seen):b - seen]
                    for art in arts:
                        art.pop("accessories", None)
                    out += arts
                seen += n
                if seen >= b:
                    break
            return out

        return window, sum(counts)

    def get_scans_all_metrics(self, role, q):
        return self.scan_all

    def get_scanners(self, role, q):
        regs = [{"uuid": "7d8e-trivy", "name": "Trivy", "description": "", "url": "http://trivy-adapter:8080",
                 "disabled": False, "is_default": True, "auth": "", "access_credential": "", "skip_certVerify": False,
                 "use_internal_addr": True, "create_time": iso(T0), "update_time": iso(T0), "adapter": "Trivy",
                 "vendor": "Aqua Security", "version": "v0.50.1", "health": "healthy"}]
        return (lambda a, b: regs[a:b]), len(regs)

    def get_security_summary(self, role, q):
        return self.security

    def get_jobservice_queues(self, role, q):
        return self.queues

    def get_jobservice_pools(self, role, q):
        return self.pools

    def get_robots(self, role, q):
        bots = [{**r, "description": "", "editable": True, "permissions": [], "creation_time": iso(T0),
                 "update_time": iso(T0)} for r in self.robots]
        return (lambda a, b: bots[a:b]), len(bots)

    def _audit(self, q, extended: bool):
        events = list(self.audit)
        terms = q.get("q", [""])[0]
        match = re.search(r"op_time=\[([^~\]]*)~([^\]]*)\]", terms)
        if match:
            low, high = (datetime.strptime(v.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
                         for v in match.groups())

            def secs(e):  # Harbor compares op_time in the database at full precision
                return datetime.fromisoformat(e["op_time"].replace("Z", "+00:00")).timestamp()

            events = [e for e in events if low <= secs(e) <= high]
        sort = q.get("sort", ["-op_time"])[0]
        events.sort(key=lambda e: (e["op_time"], e["id"]), reverse=sort.startswith("-"))
        if not extended:
            keys = ("id", "username", "resource", "resource_type", "operation", "op_time")
            events = [{k: e[k] for k in keys} for e in events]
        return (lambda a, b: events[a:b]), len(events)

    def get_auditlog_exts(self, role, q):
        return self._audit(q, True)

    def get_audit_logs(self, role, q):
        return self._audit(q, False)

    def get_projects_repo_artifacts(self, role, q, project, repository):
        # The handler received the path once-decoded: "team0%2Fapp5"; Harbor decodes the second layer itself.
        if "/" in repository:
            return None  # sent encoded once: Harbor's router sees an extra path segment and answers 404
        full = f"{project}/{unquote(repository)}"
        j = next((j for j in self._repo_ids_of(project) if self.repo_name(j) == full), None)
        if j is None:
            return None
        arts = self.artifacts(j)
        if q.get("with_accessory", ["false"])[0] != "true":
            for art in arts:
                art["accessories"] = None
                del art["accessories"]
        return (lambda a, b: arts[a:b]), len(arts)

    def _repo_ids_of(self, project: str):
        i = next((k for k in range(1, self.n_projects + 1) if self.project_name(k) == project), None)
        if i is None:
            return range(0)
        return range(i, self.n_repos + 1, self.n_projects)
