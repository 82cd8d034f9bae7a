"""A hostile registry for the trust-boundary tests: a loopback HTTP server whose every answer is
scripted by the test, and which records what each request carried (so a test can say which host
received which header).

It speaks just enough of the registry API v2 (distribution-spec v1.1) for a client to believe it:
``/v2/`` answers 200 or a challenge, and the test maps paths to handlers that may lie, redirect
elsewhere, send an endless or trickling body, or point ``Link``/``Location`` at another origin.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Instead of body: a generator of chunks sent with chunked encoding (endless if it never stops),
    # each after ``delay`` seconds.
    chunks: Callable[[], object] | None = None
    delay: float = 0.0


Handler = Callable[["Seen"], Reply]


class HostileServer:
    """``routes`` maps (method, path) or path to a handler or a Reply; unknown paths answer 404."""

    def __init__(self, routes: dict | None = None, *, tls: object = None):
        self.routes: dict = dict(routes or {})
        self.scheme = "https" if tls is not None else "http"
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20)) if length else b""
                seen = Seen(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.seen.append(seen)
                path = self.path.split("?", 1)[0]
                route = server.routes.get((self.command, path), server.routes.get(path))
                if route is None:
                    route = Reply(404, {"Content-Type": "application/json"},
                                  b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such thing"}]}')
                reply = route(seen) if callable(route) else route
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):  # the client hung up
                    self._send(reply)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.chunks is not None:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in reply.chunks():
                        if reply.delay:
                            time.sleep(reply.delay)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if "Content-Length" not in reply.headers:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        if tls is not None:  # an ssl.SSLContext for the server side
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> HostileServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorization_seen(self) -> list[str]:
        """Every Authorization (or API key) header this server received."""
        with self._lock:
            return [v for s in self.seen for k, v in s.headers.items()
                    if k.lower() in ("authorization", "x-jfrog-art-api")]


def endless(chunk: bytes = b"x" * 65536) -> Callable[[], object]:
    def gen():
        while True:
            yield chunk
    return gen


def json_endless_catalog() -> Callable[[], object]:
    """``{"repositories": ["a0", "a1", ...`` for ever: valid JSON that never ends."""
    def gen():
        yield b'{"repositories": ['
        n = 0
        while True:
            yield b",".join(b'"r%d"' % i for i in range(n, n + 2000)) + b","
            n += 2000
    return gen


def trickle(data: bytes) -> Callable[[], object]:
    def gen():
        for i in range(len(data)):
            yield data[i:i + 1]
    return gen
