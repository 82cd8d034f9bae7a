"""The first day's failures, as a new user meets them: each failure kind gets one reason and a whole
message naming host:port and the next step, the same in serve's /status, its log, the landing page and
drill's output (issue 14). Every registry here is real (docker-registry with TLS the test's PKI signs)
or a loopback server that fails the way the kind does (never answers, resets)."""

from __future__ import annotations

import html
import socket
import struct
import subprocess
import threading

import pytest
import requests
from cryptography import x509

from regwatch.localregistry import free_port
from tests.conftest import log_events, regwatch_cmd
from tests.helpers import PKI

HUNG = ("accepted the connection but did not answer within 0.5s; the registry (or a proxy in front of it) is hung "
        "or overloaded")


class Misbehaving:
    """``hang``: accepts and never answers; ``reset``: reads the request and resets the connection."""

    def __init__(self, mode: str):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.held: list[socket.socket] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "hang":
                self.held.append(conn)
                continue
            try:
                conn.recv(4096)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                conn.close()

    def stop(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def world(tmp_path, make_registry):
    """One real or misbehaving endpoint per failure kind, and the whole message each must produce."""
    pki = PKI(tmp_path)
    _, good = pki.leaf("good")
    _, expired = pki.leaf("expired", days_valid=(-30, -1))
    _, wrong = pki.leaf("wrong", san=x509.DNSName("elsewhere.example"))
    tls_good, tls_expired, tls_wrong = (make_registry(tls=t) for t in (good, expired, wrong))
    plain = make_registry()
    locked = make_registry(users={"alice": "alice-secret"})
    hang, reset = Misbehaving("hang"), Misbehaving("reset")
    refused = free_port()
    try:
        dns_error = socket.getaddrinfo("registry.invalid", 5000)
    except socket.gaierror as exc:
        dns_error = exc.strerror
    ca = {"tls": {"ca_file": str(pki.ca_file)}}
    secret = tmp_path / "wrong-pw"
    secret.write_text("not-alices-password")
    hp = lambda url: url.split("//")[1]  # noqa: E731 - a one-liner used in the table below
    cases = {
        "dns": ({"url": "http://registry.invalid:5000"},
                f"GET /v2/: cannot resolve registry.invalid: {dns_error}; check the host name in the URL and this "
                "machine's DNS"),
        "refused": ({"url": f"http://127.0.0.1:{refused}"},
                    f"GET /v2/: cannot connect to 127.0.0.1:{refused}: connection refused; is the registry running "
                    "and listening on that port?"),
        "hung": ({"url": f"http://127.0.0.1:{hang.port}"}, f"GET /v2/: 127.0.0.1:{hang.port} {HUNG}"),
        "reset": ({"url": f"http://127.0.0.1:{reset.port}"},
                  f"GET /v2/: 127.0.0.1:{reset.port} closed the connection before the answer was complete; look at "
                  "the registry's (or its proxy's) logs"),
        "unknown-ca": ({"url": tls_good.url},
                       f"GET /v2/: TLS to {hp(tls_good.url)}: unable to get local issuer certificate; the certificate "
                       "is not signed by a CA regwatch trusts; set tls.ca_file (or --ca-file) to the CA that signed "
                       "it"),
        "expired": ({"url": tls_expired.url, **ca},
                    f"GET /v2/: TLS to {hp(tls_expired.url)}: certificate has expired; renew the registry's "
                    "certificate (or, if it is valid, fix this machine's clock)"),
        "wrong-name": ({"url": tls_wrong.url, **ca},
                       f"GET /v2/: TLS to {hp(tls_wrong.url)}: IP address mismatch, certificate is not valid for "
                       "'127.0.0.1'; the certificate does not name this host; use the name it was issued for, or "
                       "reissue it with this name in subjectAltName"),
        "tls-to-plain": ({"url": plain.url.replace("http://", "https://")},
                         f"GET /v2/: TLS to {hp(plain.url)} failed: the other side does not speak TLS (a plain-HTTP "
                         "port?); use http:// in the URL, or the port the registry serves TLS on"),
        "plain-to-tls": ({"url": tls_good.url.replace("https://", "http://")},
                         "GET /v2/: HTTP 400; if the registry serves TLS on that port, use https:// in url"),
        "debug-port": ({"url": plain.debug_url},
                       f"GET /v2/ answered 404: nothing serves the registry API there; is url ({plain.debug_url}) "
                       "the registry's base URL (not its debug port, a web UI or a path)?"),
        "no-credentials": ({"url": locked.url},
                           f"GET /v2/: the registry needs credentials (HTTP 401); regwatch found no credentials for "
                           f"{hp(locked.url)} (looked in: the config (target no-credentials has no username, "
                           f"token_file or api_key_file); the docker config {tmp_path}/docker/config.json (no entry "
                           f"for {hp(locked.url)})); set username and password_file on the target, or export "
                           f"REGWATCH_USERNAME and REGWATCH_PASSWORD, or run `docker login {hp(locked.url)}`"),
        "wrong-password": ({"url": locked.url, "username": "alice", "password_file": str(secret)},
                           "GET /v2/: the registry rejected user alice (from the config) (HTTP 401); check the "
                           "username and password (or token)"),
    }
    yield cases
    hang.stop()
    reset.stop()


def test_each_failure_kind_reads_the_same_everywhere_serve_shows_it(world, tmp_path, write_config, serve,
                                                                     monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    targets = [{"name": name, "kind": "distribution", "timeout": "0.5s", "interval": "1h", **spec}
               for name, (spec, _) in world.items()]
    proc = serve(write_config({"targets": targets}))
    proc.wait_ready(timeout=60)
    expected = {name: f"target {name}: {message}" for name, (_, message) in world.items()}
    status = {s["target"]: s["last_error"] for s in requests.get(proc.url + "/status", timeout=5).json()}
    assert status == expected
    logged = {e["target"]: e["err"] for e in log_events(proc.log(), "collector failed")}
    assert logged == expected
    landing = requests.get(proc.url + "/", timeout=5).text
    for message in expected.values():
        assert html.escape(message) in landing
    assert "not-alices-password" not in proc.log() + landing + str(status)


@pytest.mark.parametrize("kind", ["refused", "unknown-ca", "dns"])
def test_drill_prints_the_same_whole_message(world, kind, tmp_path):
    spec, message = world[kind]
    out = subprocess.run(regwatch_cmd("drill", "--backup", "--source", spec["url"], "--repo", "lib/app",
                                      "--store", str(tmp_path / "store")),
                         capture_output=True, text=True, timeout=120,
                         env={"DOCKER_CONFIG": str(tmp_path / "d"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 1
    # Whichever request the drill makes first, what failed and what to do is the classifier's whole text.
    failure = message.split(": ", 1)[1]
    lines = [line.rstrip('"') for line in (out.stdout + out.stderr).splitlines()]
    assert any(line.endswith(failure) for line in lines), out.stdout + out.stderr
