"""The HTTP surface of ``regwatch serve``: ``/``, ``/metrics``, ``/healthz``, ``/readyz``, ``/status``.

``/metrics`` only copies out the bytes the runner rendered after its last finished
collection, so a scrape never waits on a registry.

Every HTTP client is untrusted, so connections are bounded in time, in count and in size:

- One asyncio event loop in one thread serves every connection. An idle or half-sent
  connection costs a descriptor and a little memory, never a thread.
- A request's head (request line and headers, at most ``max_head_bytes``) must arrive whole
  within ``request_timeout`` of its first byte (of the connection opening, for the first
  request): a client that trickles a byte every few seconds is cut off. A kept-alive
  connection may wait ``idle_timeout`` for its next request. A client must take the whole
  response within ``write_timeout``. regwatch serves no request body: a request announcing
  one is answered and its connection closed, so the body is never read.
- At most ``connection_cap()`` connections are open at once, well below the process's
  open-files limit, so collectors keep their descriptors and ``accept`` never fails for lack
  of them. When the cap is reached, the connection that has waited longest for a request is
  closed to make room for the new one: a scrape holds its connection for a millisecond, an
  idle or half-sent connection is the cheapest thing to lose. Only when every connection is
  busy sending a response is a new one closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
import http.client
import io
import json
import logging
import resource
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE

from regwatch import __version__
from regwatch.runner import Runner

log = logging.getLogger("regwatch.server")

TEXT = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}
_MAX_HEADER_LINES = 100
_WRITE_CHUNK = 256 * 1024
_ACCEPTS_PER_WAKEUP = 16  # a flood of connections cannot starve the responses already under way


@dataclass(frozen=True)
class Limits:
    request_timeout: float = 5.0
    idle_timeout: float = 30.0
    write_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    max_connections: int = 512


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to leave a quarter (at least 64) of the open-files limit to the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(4, min(max_connections, soft - max(64, soft // 4)))


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class _Request:
    method: str
    path: str
    headers: http.client.HTTPMessage
    keep_alive: bool


class _Connection:
    __slots__ = ("task", "writer")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.writer: asyncio.StreamWriter | None = None


class MetricsServer:
    """An HTTP server bound to ``host:port`` (port 0 picks a free one), run by ``start()`` in a thread."""

    def __init__(self, runner: Runner, host: str, port: int, limits: Limits | None = None):
        self.runner = runner
        self.limits = limits or Limits()
        self.cap = connection_cap(self.limits.max_connections)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128, reuse_port=False)
        self._sock.setblocking(False)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        # Every open connection, and (in the order they started waiting) those waiting for a request.
        self._open: dict[_Connection, None] = {}
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._accept_paused = False
        self.evicted = 0
        self.refused = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def set_runner(self, runner: Runner) -> None:
        """Serve another runner's snapshots from now on (config reload)."""
        self.runner = runner

    def stop(self, timeout: float = 1.0) -> None:
        """Close the listening socket and every connection; returns within about ``timeout``."""
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._close_all(), self._loop)
            with contextlib.suppress(Exception):  # any error: stopping must not fail; the thread is a daemon
                future.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._sock.close()

    # ------------------------------------------------------------------ accepting

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.add_reader(self._sock.fileno(), self._accept)
        self._loop.run_forever()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                sock, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors after all (something else holds many): free one, or wait
                    # a moment instead of spinning on a listening socket that stays readable.
                    if not self._evict_one():
                        self._pause_accept(0.05)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            if len(self._open) >= self.cap and not self._evict_one():
                self.refused += 1
                sock.close()
                continue
            conn = _Connection()
            self._open[conn] = None
            conn.task = self._loop.create_task(self._serve(conn, sock))

    def _pause_accept(self, seconds: float) -> None:
        if self._accept_paused:
            return
        self._accept_paused = True
        self._loop.remove_reader(self._sock.fileno())

        def resume() -> None:
            self._accept_paused = False
            if self._sock.fileno() >= 0:
                self._loop.add_reader(self._sock.fileno(), self._accept)

        self._loop.call_later(seconds, resume)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request; False if none is waiting."""
        if not self._waiting:
            return False
        conn, _ = self._waiting.popitem(last=False)
        self._open.pop(conn, None)
        self.evicted += 1
        if conn.task is not None:
            conn.task.cancel()
        return True

    async def _close_all(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        tasks = [conn.task for conn in self._open if conn.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)

    # ------------------------------------------------------------------ one connection

    async def _serve(self, conn: _Connection, sock: socket.socket) -> None:
        writer = None
        graceful = False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader, writer = await asyncio.open_connection(sock=sock, limit=self.limits.max_head_bytes)
            # drain() then returns only once the kernel has every byte, so write_timeout covers the whole response.
            writer.transport.set_write_buffer_limits(high=0)
            conn.writer = writer
            first = True
            while True:
                self._waiting[conn] = None
                try:
                    request = await self._read_request(reader, first)
                except _BadRequest as exc:
                    self._waiting.pop(conn, None)
                    await self._respond(writer, exc.status, f"{exc}\n".encode(), TEXT, head_only=False,
                                        keep_alive=False)
                    graceful = True
                    return
                if request is None:
                    return
                self._waiting.pop(conn, None)
                if not await self._handle(writer, request):
                    graceful = True
                    return
                first = False
        except (asyncio.CancelledError, ConnectionError, TimeoutError, OSError):
            graceful = False
        except Exception as exc:  # noqa: BLE001 - a bug here must cost one connection, never the server
            log.warning("http connection failed", extra={"err": f"{exc.__class__.__name__}: {exc}"})
            graceful = False
        finally:
            self._waiting.pop(conn, None)
            if writer is None:
                self._open.pop(conn, None)
                sock.close()
            elif graceful:
                await self._lingering_close(conn, reader, writer)
            else:
                self._open.pop(conn, None)
                writer.transport.abort()

    async def _lingering_close(self, conn: _Connection, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        """Close after a response the way a client can read it: send FIN, then discard what it still sends.

        Closing with unread input (a request body regwatch never reads) resets the connection, and
        the reset can destroy the response before the client has read it. The wait is bounded and
        the connection can be evicted meanwhile.
        """
        self._waiting[conn] = None
        try:
            writer.write_eof()
            async with asyncio.timeout(1.0):
                discarded = 0
                while discarded < 1 << 20 and (chunk := await reader.read(65536)):
                    discarded += len(chunk)
        except (asyncio.CancelledError, ConnectionError, TimeoutError, OSError):
            pass
        finally:
            self._waiting.pop(conn, None)
            self._open.pop(conn, None)
            writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader, first: bool) -> _Request | None:
        """The next request's head, or None when the client closed or sent nothing in time."""
        loop, limits = self._loop, self.limits
        opened = loop.time()
        try:
            async with asyncio.timeout_at(opened + (limits.request_timeout if first else limits.idle_timeout)):
                start = await reader.read(1)
        except TimeoutError:
            return None  # nothing was asked, so nothing is answered: an unsolicited 408 confuses clients
        if not start:
            return None
        lines: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at((opened if first else loop.time()) + limits.request_timeout):
                line = start + await reader.readuntil(b"\n")
                while True:
                    size += len(line)
                    if size > limits.max_head_bytes:
                        raise _BadRequest(431, f"request head over {limits.max_head_bytes} bytes")
                    if line not in (b"\r\n", b"\n"):
                        lines.append(line)
                        if len(lines) > _MAX_HEADER_LINES + 1:
                            raise _BadRequest(431, f"more than {_MAX_HEADER_LINES} header lines")
                    elif lines:
                        break  # the blank line that ends the head (blank lines before a request are skipped)
                    line = await reader.readuntil(b"\n")
        except TimeoutError:
            raise _BadRequest(408, f"request head not received within {limits.request_timeout:g}s") from None
        except asyncio.LimitOverrunError:
            raise _BadRequest(431, f"request head over {limits.max_head_bytes} bytes") from None
        except asyncio.IncompleteReadError:
            return None
        return _parse_head(lines)

    async def _handle(self, writer: asyncio.StreamWriter, request: _Request) -> bool:
        """Answer one request; True if the connection stays open for the next one."""
        keep_alive = request.keep_alive
        has_body = request.headers.get("Transfer-Encoding") is not None or \
            request.headers.get("Content-Length", "0").strip() not in ("", "0")
        if has_body:
            keep_alive = False  # the body is never read, so the stream cannot be parsed past it
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            await self._respond(writer, 405, b"method not allowed; regwatch serves GET and HEAD\n", TEXT,
                                head_only=False, keep_alive=False, extra={"Allow": "GET, HEAD"})
            return False
        try:
            status, body, content_type, extra = self._route(request)
        except Exception:  # one bad page must not take the server down
            log.exception("http handler failed", extra={"path": request.path})
            status, body, content_type, extra = 500, b"internal error; regwatch's log says why\n", TEXT, {}
        await self._respond(writer, status, body, content_type, head_only=head_only, keep_alive=keep_alive,
                            extra=extra)
        return keep_alive

    def _route(self, request: _Request) -> tuple[int, bytes, str, dict[str, str]]:
        runner = self.runner
        path = request.path
        if path == "/metrics":
            accept = request.headers.get("Accept", "")
            openmetrics = "application/openmetrics-text" in accept
            gzipped = not openmetrics and "gzip" in request.headers.get("Accept-Encoding", "")
            body = runner.exposition(openmetrics=openmetrics, gzipped=gzipped)
            return (200, body, OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE_LATEST,
                    {"Content-Encoding": "gzip"} if gzipped else {})
        if path == "/healthz":
            return 200, b"ok\n", TEXT, {}
        if path == "/readyz":
            if runner.ready:
                return 200, b"ready\n", TEXT, {}
            pending = ", ".join(runner.pending())
            return 503, f"not ready: waiting for the first run of {pending}\n".encode(), TEXT, {}
        if path == "/status":
            return 200, json.dumps(runner.status(), indent=2).encode(), "application/json", {}
        if path == "/":
            return 200, landing(runner.status(), time.time()).encode(), "text/html; charset=utf-8", {}
        return 404, b"not found; see / for what regwatch serves\n", TEXT, {}

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, *,
                       head_only: bool, keep_alive: bool, extra: dict[str, str] | None = None) -> None:
        headers = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Server: regwatch/{__version__}",
                   f"Date: {formatdate(usegmt=True)}", f"Content-Type: {content_type}",
                   f"Content-Length: {len(body)}"]
        headers += [f"{key}: {value}" for key, value in (extra or {}).items()]
        if not keep_alive:
            headers.append("Connection: close")
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        if head_only:
            body = b""
        # One send for the usual response; a large one goes in chunks, each handed to the kernel
        # before the next is queued, so a slow reader holds at most one chunk in this process.
        first, rest = (head + body, b"") if len(body) <= _WRITE_CHUNK else (head, memoryview(body))
        writer.write(first)
        if writer.transport.get_write_buffer_size() == 0 and not rest:
            return
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()
            for offset in range(0, len(rest), _WRITE_CHUNK):
                writer.write(rest[offset:offset + _WRITE_CHUNK])
                await writer.drain()


def _parse_head(lines: list[bytes]) -> _Request:
    request_line = lines[0].decode("latin-1").rstrip("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha():
        raise _BadRequest(400, "malformed request line; expected METHOD /path HTTP/1.1")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(505, "regwatch speaks HTTP/1.0 and HTTP/1.1")
    try:
        headers = http.client.parse_headers(io.BytesIO(b"".join(lines[1:]) + b"\r\n"))
    except http.client.HTTPException:
        raise _BadRequest(400, "malformed request headers") from None
    tokens = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else False
    return _Request(method, urlsplit(target).path, headers, keep_alive)


# ---------------------------------------------------------------------- landing page


def _when(timestamp: float | None, now: float) -> str:
    """``2026-03-01 12:00:05 UTC (12 s ago)``, or ``never``."""
    if timestamp is None:
        return "never"
    age = max(0.0, now - timestamp)
    if age < 90:
        ago = f"{age:.0f} s ago"
    elif age < 90 * 60:
        ago = f"{age / 60:.0f} min ago"
    elif age < 36 * 3600:
        ago = f"{age / 3600:.0f} h ago"
    else:
        ago = f"{age / 86400:.0f} d ago"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp)) + f" ({ago})"


_STATUS_FIELDS = {"target", "collector", "runs", "success", "duration_seconds", "last_run", "last_success",
                  "last_error"}


def landing(status: list[dict], now: float) -> str:
    """The landing page: every collector's last result, when it last ran and last succeeded, its last error.

    Every value is escaped: target names come from the config, errors from registries.
    """
    esc = html.escape
    rows = []
    for job in status:
        result = {True: "ok", False: "FAILED", None: "pending"}[job["success"]]
        # A job's own labels (a probe's image) tell apart two jobs of one collector on one target.
        labels = ", ".join(f"{key}={value}" for key, value in job.items() if key not in _STATUS_FIELDS)
        collector = f"{job['collector']} ({labels})" if labels else str(job["collector"])
        rows.append(
            f"<tr><td>{esc(str(job['target']))}</td><td>{esc(collector)}</td>"
            f"<td>{esc(result)}</td><td>{esc(_when(job.get('last_run'), now))}</td>"
            f"<td>{esc(_when(job.get('last_success'), now))}</td><td>{esc(str(job['duration_seconds']))}</td>"
            f"<td>{esc(str(job['last_error']))}</td></tr>")
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>regwatch</title></head><body>"
        f"<h1>regwatch {esc(__version__)}</h1>"
        '<p><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a>'
        ' · <a href="/status">/status</a> (JSON)</p>'
        f"<p>Page rendered {esc(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now)))}.</p>"
        "<table border=1 cellpadding=4><tr><th>target</th><th>collector</th><th>last result</th>"
        "<th>last run</th><th>last success</th><th>duration (s)</th><th>last error</th></tr>"
        f"{''.join(rows)}</table></body></html>")
