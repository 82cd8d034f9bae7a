"""kill -9 in the middle of a backup leaves a store --verify accepts; the rerun resumes without downloading
finished blobs again (counted by a proxy in front of the real registry)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from tests.drill_helpers import run_drill

BLOB = re.compile(r"/v2/.+/blobs/(sha256:[0-9a-f]{64})$")


class CountingProxy:
    """Forwards to the registry; counts blob GETs per digest and slows each one down a little."""

    def __init__(self, upstream: str, delay: float = 0.0, corrupt: int = 0):
        """``corrupt``: flip a byte in the first ``corrupt`` GET replies of each blob."""
        self.counts: Counter[str] = Counter()
        up = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                m = BLOB.match(self.path.split("?")[0])
                if m and self.command == "GET":
                    proxy.counts[m.group(1)] += 1
                    time.sleep(delay)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if m and self.command == "GET" and proxy.counts[m.group(1)] <= corrupt and body:
                    body = bytes([body[0] ^ 1]) + body[1:]
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else
                                                       resp.getheader("Content-Length") or 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            do_GET = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_kill_9_then_resume(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        tags = {f"r{i}:v": push_image(client, f"r{i}", "v", build_image([{"a": os.urandom(100_000)},
                                                                         {"b": os.urandom(100_000)}]))
                for i in range(8)}
    proxy = CountingProxy(reg.url, delay=0.3)
    store = tmp_path / "store"
    blobs = store / "blobs" / "sha256"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "regwatch", "drill", "--backup", "--source", proxy.url,
                                 "--store", str(store), "--parallel", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = [p for p in blobs.iterdir() if not p.name.startswith(".")] if blobs.is_dir() else []
            # index.json is written every couple of seconds: kill once it lists some images, not all
            if len(done) >= 8 and (store / "index.json").is_file() and \
                    json.loads((store / "index.json").read_text())["manifests"]:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        finished = {"sha256:" + p.name for p in blobs.iterdir() if not p.name.startswith(".")}
        indexed = json.loads((store / "index.json").read_text())["manifests"]
        assert len(finished) > 0 and len(indexed) < len(tags)  # it really was interrupted mid-way

        check = run_drill("--verify", "--store", store, "--report-dir", tmp_path / "r1")
        assert check.returncode == 0, check.stderr

        stale, live = blobs / ".tmp-abandoned", blobs / ".tmp-being-written"
        stale.write_bytes(b"partial")
        live.write_bytes(b"partial")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        again = run_drill("--backup", "--source", proxy.url, "--store", store, "--parallel", "1")
        assert not stale.exists() and live.exists()  # an hour-old temp file is cleaned, a fresh one is not
        assert again.returncode == 0, again.stderr
        layers_finished = {d for d in finished if d in proxy.counts}
        assert layers_finished  # blobs (not only manifests) finished before the kill
        assert {d: proxy.counts[d] for d in layers_finished} == {d: 1 for d in layers_finished}
        # every blob is now fetched exactly once overall (the kill hit at most one in flight)
        assert sum(c > 1 for c in proxy.counts.values()) <= 1

        check = run_drill("--verify", "--store", store)
        assert check.returncode == 0, check.stderr
        report = json.loads((store / "report.json").read_text())
        assert report["summary"]["images"] == len(tags)
    finally:
        proxy.close()


def test_corrupt_transfer_is_retried_then_refused(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        digest = push_image(client, "app", "1", build_image([{"a": os.urandom(5000)}]))
    flaky = CountingProxy(reg.url, corrupt=1)
    broken = CountingProxy(reg.url, corrupt=99)
    try:
        proc = run_drill("--backup", "--source", flaky.url, "--store", tmp_path / "ok")
        assert proc.returncode == 0, proc.stderr
        assert set(flaky.counts.values()) == {2}  # config and layer: one corrupt reply, one retry each
        assert run_drill("--verify", "--store", tmp_path / "ok").returncode == 0

        proc = run_drill("--backup", "--source", broken.url, "--store", tmp_path / "bad")
        assert proc.returncode == 1 and "FAILED backup app:1:" in proc.stderr
        assert set(broken.counts.values()) == {3}
        stored = {p.name for p in (tmp_path / "bad" / "blobs" / "sha256").iterdir()}
        assert stored == set() and digest  # nothing corrupt (nor the manifest of an incomplete image) was kept
        assert json.loads((tmp_path / "bad" / "index.json").read_text())["manifests"] == []
    finally:
        flaky.close()
        broken.close()
