"""A small TCP proxy for the probe tests: it sits in front of a real registry (or token server) and

- ``delay``: holds every request the client sends for ``delay`` seconds before passing it on, so each
  HTTP request costs exactly that much more (the probe opens one connection per request);
- ``fault="corrupt"``: flips one byte in the body of every 200 answer to a blob request;
- ``fault="truncate"``: passes on the headers and half the body of every 200 blob answer, then hangs up;
- ``rate``: passes answers on at no more than ``rate`` bytes per second per connection, like a network link;
- ``fault_skip=N``: leaves the first N blob answers alone (e.g. 1 lets the config through, damages layers).

It counts the requests it forwarded per URL kind, so a test can predict what the delay must add.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter

_REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")


def request_kind(path: str) -> str:
    """The probe phase a request path belongs to."""
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    if path.rstrip("/").endswith("/v2"):
        return "ping"
    return "auth"


class DelayProxy:
    def __init__(self, upstream_port: int, *, delay: float = 0.0, fault: str | None = None, fault_skip: int = 0,
                 rate: float | None = None, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.fault = fault
        self.fault_skip = fault_skip
        self.rate = rate
        self._blob_answers = 0
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        paths: list[str] = []
        threading.Thread(target=self._client_to_upstream, args=(client, upstream, paths), daemon=True).start()
        self._upstream_to_client(upstream, client, paths)

    def _client_to_upstream(self, client: socket.socket, upstream: socket.socket, paths: list[str]) -> None:
        try:
            while True:
                data = client.recv(65536)
                arrived = time.monotonic()
                if not data:
                    break
                match = _REQUEST_LINE.match(data)
                if match:
                    path = match.group(2).decode()
                    paths.append(path)
                    with self._lock:
                        self.requests[request_kind(path)] += 1
                if self.delay:
                    time.sleep(max(0.0, arrived + self.delay - time.monotonic()))
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):  # the peer is gone already
                upstream.shutdown(socket.SHUT_WR)

    def _send_shaped(self, client: socket.socket, data: bytes, state: dict) -> None:
        if not self.rate:
            client.sendall(data)
            return
        if state["start"] is None:
            state["start"] = time.monotonic()
        for i in range(0, len(data), 16384):
            piece = data[i:i + 16384]
            client.sendall(piece)
            state["sent"] += len(piece)
            time.sleep(max(0.0, state["start"] + state["sent"] / self.rate - time.monotonic()))

    def _upstream_to_client(self, upstream: socket.socket, client: socket.socket, paths: list[str]) -> None:
        head = b""
        body_seen = 0
        content_length = None
        mutate = False
        shaped = {"start": None, "sent": 0}
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if self.fault and content_length is None:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    status_ok = head.startswith(b"HTTP/1.1 200")
                    mutate = status_ok and bool(paths) and "/blobs/" in paths[-1]
                    if mutate:
                        with self._lock:
                            self._blob_answers += 1
                            mutate = self._blob_answers > self.fault_skip
                    match = re.search(rb"\r\ncontent-length: *(\d+)", head[:end], re.IGNORECASE)
                    content_length = int(match.group(1)) if match else 0
                    headers, data = head[: end + 4], head[end + 4:]
                    client.sendall(headers)
                if mutate and self.fault == "corrupt" and data and body_seen == 0:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if mutate and self.fault == "truncate":
                    keep = max(0, content_length // 2 - body_seen)
                    if len(data) >= keep:
                        client.sendall(data[:keep])
                        break
                body_seen += len(data)
                if data:
                    self._send_shaped(client, data, shaped)
        except OSError:
            pass
        finally:
            # shutdown, not just close: the other direction's thread may still be blocked in recv on these.
            for sock in (client, upstream):
                with contextlib.suppress(OSError):  # the peer is gone already
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
