"""Connections with every step timed: name lookup, TCP connect, TLS handshake, request, first byte.

``requests`` hides connect and handshake inside one call, so the prober opens its own
sockets and speaks HTTP/1.1 through ``http.client`` on them. That is the whole point of the
module: a phase measured here is the time the kernel and the peer actually took, with no
pooling or retry in between.

Failures become ``ProbeFailure`` with a bounded ``reason`` (a label value) and the phase
(also a label value) the pull was in.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from regwatch.failures import VERIFY_REASONS, classify_connection

# Label values of regwatch_probe_phase_duration_seconds, in the order a pull goes through them.
# dns/connect/tls are summed over every connection the probe opens; ping..blob are the HTTP exchanges
# after their connection is up. blob_first_byte is part of blob (the wait before the first layer's body).
PHASES = ("dns", "connect", "tls", "ping", "auth", "manifest", "config", "blob_first_byte", "blob")
ADDITIVE_PHASES = tuple(p for p in PHASES if p != "blob_first_byte")

# Label values of regwatch_probe_failures_total.
# The connection reasons are the client's (regwatch.failures): one classifier for both.
REASONS = (
    "dns", "connect", "timeout", "reset", "tls", "tls_unknown_ca", "tls_expired", "tls_hostname", "tls_not_tls",
    "auth", "insecure_auth", "auth_unreachable", "forbidden", "not_found", "rate_limited", "server_error", "protocol",
    "platform_not_found", "digest_mismatch", "truncated", "byte_limit",
)

class ProbeFailure(Exception):
    """The probe failed: ``reason`` is a bounded label value, ``phase`` where the pull was."""

    def __init__(self, reason: str, message: str, phase: str | None = None):
        if reason not in REASONS:  # a label value: the set must stay bounded
            raise ValueError(f"{reason!r} is not a probe failure reason (REASONS)")
        super().__init__(message)
        self.reason = reason
        self.phase = phase


class Deadline:
    """The probe's time budget; every socket operation waits at most what is left of it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self, phase: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise ProbeFailure("timeout", f"the probe ran out of its {self.seconds:g}s timeout during {phase}; "
                                          "raise the probe's timeout or look at the slow phase", phase)
        return left


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    connections: int = 0
    requests: int = 0

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] += seconds


def cert_chain_expiry(sock: ssl.SSLSocket) -> float | None:
    """The earliest notAfter (Unix time) of the chain the peer presented, verified or not."""
    try:
        chain = sock._sslobj.get_unverified_chain()  # public as SSLSocket.get_unverified_chain in 3.13
    except AttributeError:
        chain = None
    if chain:
        return min(ssl.cert_time_to_seconds(cert.get_info()["notAfter"]) for cert in chain)
    info = sock.getpeercert()
    return ssl.cert_time_to_seconds(info["notAfter"]) if info and "notAfter" in info else None


class Connector:
    """Opens (and, when ``reuse`` is on, keeps) one HTTP/1.1 connection per scheme, host and port.

    ``cert_origin`` is the registry's own (host, port): the earliest certificate expiry seen on
    connections to it is kept in ``cert_expiry``. Blob storage reached by a redirect, even on the
    same host at another port, is not the registry's certificate.
    """

    def __init__(self, context: ssl.SSLContext, *, reuse: bool = False,
                 cert_origin: tuple[str, int] | None = None):
        self.context = context
        self.reuse = reuse
        self.cert_origin = cert_origin
        self.cert_expiry: float | None = None
        self._pool: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def get(self, url: str, timings: Timings, deadline: Deadline, phase: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, host, port)
        conn = self._pool.pop(key, None)
        if conn is not None and conn.sock is not None:
            return conn
        sock = self._open(scheme, host, port, timings, deadline, phase)
        conn = http.client.HTTPConnection(host, port, timeout=deadline.seconds)
        if scheme == "https" and port == 443:
            conn.default_port = 443  # so the Host header carries no port, as for an HTTPSConnection
        conn.sock = sock
        return conn

    def release(self, url: str, conn: http.client.HTTPConnection, reusable: bool) -> None:
        if self.reuse and reusable and conn.sock is not None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            old = self._pool.pop((parts.scheme, parts.hostname or "", port), None)
            if old is not None:
                old.close()
            self._pool[(parts.scheme, parts.hostname or "", port)] = conn
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._pool.values():
            conn.close()
        self._pool.clear()

    def _open(self, scheme: str, host: str, port: int, timings: Timings, deadline: Deadline,
              phase: str) -> socket.socket:
        started = time.monotonic()
        try:
            # getaddrinfo has no timeout of its own; the resolver's (resolv.conf) applies.
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ProbeFailure("dns", classify_connection(exc, host, port).message, phase) from None
        finally:
            timings.add("dns", time.monotonic() - started)
        started = time.monotonic()
        sock = None
        error: OSError | None = None
        try:
            for family, kind, proto, _, address in infos:
                sock = socket.socket(family, kind, proto)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(deadline.remaining(phase))
                try:
                    sock.connect(address)
                    error = None
                    break
                except OSError as exc:
                    sock.close()
                    sock, error = None, exc
        finally:
            timings.add("connect", time.monotonic() - started)
        if sock is None:
            failure = classify_connection(error or OSError("no address"), host, port, timeout=deadline.seconds)
            raise ProbeFailure(failure.reason if failure.reason in ("timeout", "connect") else "connect",
                               failure.message, phase)
        timings.connections += 1
        if scheme != "https":
            return sock
        return self._handshake(sock, host, port, timings, deadline, phase)

    def _handshake(self, sock: socket.socket, host: str, port: int, timings: Timings, deadline: Deadline,
                   phase: str) -> ssl.SSLSocket:
        started = time.monotonic()
        try:
            tls = self.context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
            tls.settimeout(deadline.remaining(phase))
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            timings.add("tls", time.monotonic() - started)
            sock.close()
            if (host, port) == self.cert_origin:
                # Verification failed, but the alert on expiry must still see the chain: read it unverified.
                self._note_expiry(self._unverified_expiry(host, port, deadline, phase))
            failure = classify_connection(exc, host, port)
            raise ProbeFailure(VERIFY_REASONS.get(exc.verify_code, "tls"), failure.message, phase) from None
        except (ssl.SSLError, OSError) as exc:
            timings.add("tls", time.monotonic() - started)
            sock.close()
            if isinstance(exc, TimeoutError):
                raise ProbeFailure("timeout", f"TLS handshake with {host}:{port} did not finish within the "
                                              "probe's timeout", phase) from None
            failure = classify_connection(exc, host, port)
            raise ProbeFailure(failure.reason if failure.reason.startswith("tls") else "tls", failure.message,
                               phase) from None
        timings.add("tls", time.monotonic() - started)
        if (host, port) == self.cert_origin:
            self._note_expiry(cert_chain_expiry(tls))
        return tls

    def _note_expiry(self, expiry: float | None) -> None:
        if expiry is not None:
            self.cert_expiry = expiry if self.cert_expiry is None else min(self.cert_expiry, expiry)

    def _unverified_expiry(self, host: str, port: int, deadline: Deadline, phase: str) -> float | None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=deadline.remaining(phase)) as raw, \
                    context.wrap_socket(raw, server_hostname=host) as tls:
                return cert_chain_expiry(tls)
        except (OSError, ProbeFailure):
            return None
