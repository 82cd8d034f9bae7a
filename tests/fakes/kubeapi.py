"""A fake Kubernetes API server, just enough for Helm's install action to render and "apply" a chart.

It follows the Kubernetes API as documented at https://kubernetes.io/docs/reference/using-api/api-concepts/
(v1.30): ``/version``, legacy discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>/<version>``
answering ``APIVersions``, ``APIGroupList`` and ``APIResourceList`` as plain ``application/json``,
which client-go accepts in place of aggregated discovery), and for every listed resource
``GET`` of an object (404 ``Status`` when absent), ``GET`` of a collection and ``POST`` to a
collection (201 with the stored object, 409 ``AlreadyExists`` on a second create).

Nothing is validated or scheduled: the fake only stores what Helm sends, so a test reads back
exactly the objects the real Helm library produced. Served groups: core v1, apps/v1, batch/v1,
policy/v1, networking.k8s.io/v1, rbac.authorization.k8s.io/v1, and the Prometheus Operator's
monitoring.coreos.com/v1 (ServiceMonitor, PodMonitor, PrometheusRule), as a cluster with
kube-prometheus-stack installed would list them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

# group/version -> [(plural, kind, namespaced)]
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
           ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True), ("pods", "Pod", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True),
                ("daemonsets", "DaemonSet", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True), ("podmonitors", "PodMonitor", True),
                                 ("prometheusrules", "PrometheusRule", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeKubeAPI:
    """``with FakeKubeAPI() as api:`` serves on ``api.url``; ``api.objects`` holds what was created."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict] = {}  # (group/version, plural, ns, name)
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kubeapi", daemon=True)

    def __enter__(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, namespace: str = "default") -> str:
        """A kubeconfig (YAML text, as helm-sdkpy detects it) pointing at this fake."""
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token-not-a-secret"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        })

    def created(self) -> list[dict]:
        with self._lock:
            return list(self.objects.values())

    # ------------------------------------------------------------------ routing

    def route(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["version"]:
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if parts == ["apis"]:
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    group, version = gv.split("/")
                    entry = {"groupVersion": gv, "version": version}
                    groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if parts and parts[0] == "api":
            gv, rest = "v1", parts[2:] if len(parts) > 1 and parts[1] == "v1" else None
        elif parts and parts[0] == "apis" and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource {path}")
        if gv not in RESOURCES or rest is None:
            return 404, _status(404, "NotFound", f"no group/version {gv}")
        if not rest:
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": VERBS}
                for plural, kind, namespaced in RESOURCES[gv]]}
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else "")
        kinds = {p: k for p, k, _ in RESOURCES[gv]}
        if plural not in kinds:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource {plural}")
        return self._object(method, gv, plural, kinds[plural], namespace, name, body)

    def _object(self, method: str, gv: str, plural: str, kind: str, namespace: str, name: str,
                body: dict | None) -> tuple[int, dict]:
        with self._lock:
            if method == "GET" and name:
                obj = self.objects.get((gv, plural, namespace, name))
                if obj is None:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, obj
            if method == "GET":
                items = [o for (g, p, ns, _), o in self.objects.items()
                         if g == gv and p == plural and (not namespace or ns == namespace)]
                return 200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": "1"},
                             "items": items}
            if method == "POST" and body is not None:
                meta = body.setdefault("metadata", {})
                key = (gv, plural, namespace, meta.get("name", ""))
                if key in self.objects:
                    return 409, _status(409, "AlreadyExists", f'{plural} "{key[3]}" already exists')
                meta.setdefault("namespace", namespace) if namespace else None
                meta.update({"uid": str(uuid.uuid4()), "resourceVersion": "1",
                             "creationTimestamp": "2024-01-01T00:00:00Z"})
                self.objects[key] = body
                return 201, body
            if method == "DELETE" and name:
                obj = self.objects.pop((gv, plural, namespace, name), None)
                if obj is None:
                    return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
                return 200, obj
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported by this fake")


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.api.requests.append((self.command, self.path))
        code, payload = self.api.route(self.command, self.path, body)
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


# --------------------------------------------------------------------------- rendering a chart with real Helm


class RenderError(Exception):
    """Helm refused the chart or the values; the message is Helm's."""


def render(chart: str, values: dict | None = None, release: str = "regwatch", namespace: str = "monitoring",
           timeout: float = 60) -> list[dict]:
    """Install ``chart`` with the real Helm library (helm-sdkpy) into a fresh fake API; the rendered objects.

    Runs in a child process: helm-sdkpy's Go runtime reads HELM_DRIVER=memory (keep releases off
    the API) from the environment it was started with, not from os.environ changed later.
    """
    request = json.dumps({"chart": chart, "values": values or {}, "release": release, "namespace": namespace})
    out = subprocess.run([sys.executable, "-m", "tests.fakes.kubeapi"], input=request, capture_output=True,
                         text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2],
                         env={**os.environ, "HELM_DRIVER": "memory"})
    if out.returncode != 0:
        raise RenderError(out.stderr.strip() or f"exit {out.returncode}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def lint(chart: str, timeout: float = 60) -> dict:
    """``helm lint`` by the real Helm library: {"TotalChartsLinted", "Messages": [{"Severity", "Path"}]}.

    Severity is Helm's: 1 info, 2 warning, 3 error.
    """
    out = subprocess.run([sys.executable, "-m", "tests.fakes.kubeapi"], input=json.dumps({"lint": chart}),
                         capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parents[2])
    if out.returncode != 0:
        raise RenderError(out.stderr.strip() or f"exit {out.returncode}")
    return json.loads(out.stdout)


def _render_main() -> None:
    import asyncio

    import helm_sdkpy

    request = json.loads(sys.stdin.read())
    if "lint" in request:
        result = asyncio.run(helm_sdkpy.chart.Lint(helm_sdkpy.Configuration()).run(request["lint"]))
        sys.stdout.write(json.dumps(result))
        return
    with FakeKubeAPI() as api:
        config = helm_sdkpy.Configuration(namespace=request["namespace"],
                                          kubeconfig=api.kubeconfig(request["namespace"]))
        try:
            result = asyncio.run(helm_sdkpy.Install(config).run(
                request["release"], request["chart"], values=request["values"], wait=False, timeout=60))
        except helm_sdkpy.HelmError as exc:
            sys.exit(f"helm: {exc}")
        applied = {(o["kind"], o["metadata"]["name"]) for o in api.created()}
    docs = [doc for doc in yaml.safe_load_all(result["manifest"]) if doc]
    missing = [(d["kind"], d["metadata"]["name"]) for d in docs if (d["kind"], d["metadata"]["name"]) not in applied]
    if missing:
        sys.exit(f"helm rendered objects it did not create: {missing}")
    sys.stdout.write(result["manifest"])


if __name__ == "__main__":
    _render_main()
