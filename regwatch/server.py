"""The HTTP surface of ``regwatch serve``: ``/``, ``/metrics``, ``/healthz``, ``/readyz``.

``/metrics`` only copies out the bytes the runner rendered after its last finished
collection, so a scrape never waits on a registry.
"""

from __future__ import annotations

import html
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE

from regwatch import __version__
from regwatch.runner import Runner

log = logging.getLogger("regwatch.server")


class _Handler(BaseHTTPRequestHandler):
    server_version = f"regwatch/{__version__}"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    runner: Runner

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("http %s", format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = urlsplit(self.path).path
        if path == "/metrics":
            accept = self.headers.get("Accept", "")
            openmetrics = "application/openmetrics-text" in accept
            gzipped = not openmetrics and "gzip" in self.headers.get("Accept-Encoding", "")
            body = self.runner.exposition(openmetrics=openmetrics, gzipped=gzipped)
            headers = {"Content-Encoding": "gzip"} if gzipped else {}
            self._send(200, body, OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE_LATEST, headers)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            if self.runner.ready:
                self._send(200, b"ready\n", "text/plain; charset=utf-8")
            else:
                pending = ", ".join(self.runner.pending())
                self._send(503, f"not ready: waiting for the first run of {pending}\n".encode(),
                           "text/plain; charset=utf-8")
        elif path == "/status":
            self._send(200, json.dumps(self.runner.status(), indent=2).encode(), "application/json")
        elif path == "/":
            self._send(200, _landing(self.runner).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found; see / for what regwatch serves\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._send(405, b"method not allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})


def _landing(runner: Runner) -> str:
    rows = []
    for job in runner.status():
        ok = {True: "ok", False: "FAILED", None: "pending"}[job["success"]]
        rows.append(
            f"<tr><td>{html.escape(job['target'])}</td><td>{html.escape(job['collector'])}</td>"
            f"<td>{ok}</td><td>{job['duration_seconds']}</td><td>{html.escape(job['last_error'])}</td></tr>")
    return (
        "<!doctype html><html><head><title>regwatch</title></head><body>"
        f"<h1>regwatch {html.escape(__version__)}</h1>"
        '<p><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a>'
        ' · <a href="/status">/status</a> (JSON)</p>'
        "<table border=1 cellpadding=4><tr><th>target</th><th>collector</th><th>last run</th>"
        f"<th>duration (s)</th><th>last error</th></tr>{''.join(rows)}</table></body></html>")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    """A threaded HTTP server bound to ``host:port`` (port 0 picks a free one)."""

    def __init__(self, runner: Runner, host: str, port: int):
        handler = type("Handler", (_Handler,), {"runner": runner})
        server_class = _Server
        if ":" in host:
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self.handler = handler
        self.httpd = server_class((host, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def set_runner(self, runner: Runner) -> None:
        """Serve another runner's snapshots from now on (config reload)."""
        self.handler.runner = runner

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
