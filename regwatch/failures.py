"""Why a request to a registry failed: the error classes, one classifier for failed connections
and one mapping from HTTP status to reason.

The client (through requests and urllib3), the probe (through raw sockets) and everything
built on them (collectors, the drill) report a failure the same way: a bounded ``reason``
(a label value) and a message that names the peer (``host:port``) and says what to do next.
The classifier looks at the exception objects (``socket.gaierror``, ``ConnectionRefusedError``,
``ssl.SSLCertVerificationError.verify_code`` ...), never at the wording of a library's
message, so a urllib3 or OpenSSL upgrade cannot turn a message into noise.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
from dataclasses import dataclass

# --------------------------------------------------------------------------- error classes


class RegistryError(Exception):
    """A request to a registry failed. ``reason`` is a short, bounded word for a label."""

    reason = "error"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None, code: str = ""):
        super().__init__(message)
        self.status = status
        # The registry's error code (distribution-spec ``errors[0].code``), e.g. PAGINATION_NUMBER_INVALID.
        self.code = code
        if reason is not None:
            self.reason = reason


class Unreachable(RegistryError):
    reason = "connect"


class TLSError(Unreachable):
    reason = "tls"


class Timeout(Unreachable):
    reason = "timeout"


class DeadlineExceeded(Timeout):
    """The collection (or command) ran out of its overall time budget."""

    reason = "timeout"


class AuthFailed(RegistryError):
    reason = "auth"


class Forbidden(RegistryError):
    reason = "forbidden"


class NotFound(RegistryError):
    reason = "not_found"


class RateLimited(RegistryError):
    reason = "rate_limited"

    def __init__(self, message: str, *, status: int | None = 429, reset_at: float | None = None, code: str = ""):
        super().__init__(message, status=status, code=code)
        # Unix time the peer said its limit resets (Retry-After / RateLimit-Reset), if it said.
        self.reset_at = reset_at


class ServerError(RegistryError):
    reason = "server_error"


class ProtocolError(RegistryError):
    reason = "protocol"


class TooLarge(ProtocolError):
    """A body longer than regwatch reads from a peer (a manifest over 4 MiB, an endless JSON page)."""

    reason = "too_large"


class InsecureAuth(AuthFailed):
    """The target's auth would send a credential somewhere regwatch does not send it (an http realm
    for an https registry)."""

    reason = "insecure_auth"


# Every reason a RegistryError can carry (label values of failure counters).
CONNECTION_REASONS = ("dns", "connect", "timeout", "reset", "tls", "tls_unknown_ca", "tls_expired", "tls_hostname",
                      "tls_not_tls")
REASONS = CONNECTION_REASONS + ("auth", "insecure_auth", "forbidden", "not_found", "rate_limited", "server_error",
                                "protocol", "too_large", "wrong_kind", "error")

# --------------------------------------------------------------------------- connections

# OpenSSL X509_V_ERR_* codes (include/openssl/x509_vfy.h) -> reason.
VERIFY_REASONS = {
    10: "tls_expired",        # CERT_HAS_EXPIRED
    9: "tls_expired",         # CERT_NOT_YET_VALID: a clock or issuance problem, same remedy (reissue)
    62: "tls_hostname",       # HOSTNAME_MISMATCH
    64: "tls_hostname",       # IP_ADDRESS_MISMATCH
    18: "tls_unknown_ca",     # DEPTH_ZERO_SELF_SIGNED_CERT
    19: "tls_unknown_ca",     # SELF_SIGNED_CERT_IN_CHAIN
    20: "tls_unknown_ca",     # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "tls_unknown_ca",     # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    2: "tls_unknown_ca",      # UNABLE_TO_GET_ISSUER_CERT
}

TLS_ADVICE = {
    "tls_unknown_ca": "the certificate is not signed by a CA regwatch trusts; set tls.ca_file (or --ca-file) to "
                      "the CA that signed it",
    "tls_expired": "renew the registry's certificate (or, if it is valid, fix this machine's clock)",
    "tls_hostname": "the certificate does not name this host; use the name it was issued for, or reissue it "
                    "with this name in subjectAltName",
    "tls_not_tls": "use http:// in the URL, or the port the registry serves TLS on",
    "tls": "check the TLS set-up of the endpoint (protocol versions, ciphers, client certificates)",
}

# OpenSSL's library reason for a TLS ClientHello answered with something that is not TLS.
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
            "PACKET_LENGTH_TOO_LONG"}


@dataclass(frozen=True)
class ConnectionFailure:
    """A classified connection failure: ``reason`` for labels, ``message`` for people."""

    reason: str
    message: str


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (args, ``reason`` of urllib3's errors, causes), outermost first."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 20:
        item = todo.pop(0)
        if item in out:
            continue
        out.append(item)
        for nxt in (getattr(item, "reason", None), item.__cause__, item.__context__, *getattr(item, "args", ())):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return out


def classify_connection(exc: BaseException, host: str, port: int | None, *, timeout: float | None = None,
                        phase: str = "connect") -> ConnectionFailure:
    """Classify a failed connection or exchange with ``host:port``.

    ``phase`` is ``connect`` (no connection yet) or ``read`` (connected, waiting for the answer);
    ``timeout`` is the time allowed, for the message.
    """
    where = f"{host}:{port}" if port else host
    within = f" within {timeout:g}s" if timeout else ""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            reason = VERIFY_REASONS.get(item.verify_code, "tls")
            detail = (item.verify_message or item.reason or "verification failed").rstrip(".")
            return ConnectionFailure(reason, f"TLS to {where}: {detail}; {TLS_ADVICE[reason]}")
    for item in chain:
        if isinstance(item, socket.gaierror):
            detail = item.strerror or str(item)
            return ConnectionFailure("dns", f"cannot resolve {host}: {detail}; check the host name in the URL and "
                                            "this machine's DNS")
    for item in chain:
        if isinstance(item, ssl.SSLError):
            lib_reason = str(getattr(item, "reason", "") or "")
            if lib_reason in _NOT_TLS:
                return ConnectionFailure("tls_not_tls", f"TLS to {where} failed: the other side does not speak TLS "
                                                        f"(a plain-HTTP port?); {TLS_ADVICE['tls_not_tls']}")
            detail = lib_reason.lower().replace("_", " ") or (item.strerror or str(item))[:120]
            return ConnectionFailure("tls", f"TLS handshake with {where} failed ({detail}); {TLS_ADVICE['tls']}")
    for item in chain:
        if isinstance(item, ConnectionRefusedError):
            return ConnectionFailure("connect", f"cannot connect to {where}: connection refused; is the registry "
                                                "running and listening on that port?")
    timed_out = any(isinstance(item, (TimeoutError, socket.timeout)) for item in chain) or \
        bool(names & {"ConnectTimeoutError", "ReadTimeoutError", "ConnectTimeout", "ReadTimeout", "Timeout"})
    if timed_out:
        if phase == "connect" and not names & {"ReadTimeoutError", "ReadTimeout"}:
            return ConnectionFailure("timeout", f"no TCP connection to {where}{within}; is a firewall dropping "
                                                "packets, or is the host down?")
        return ConnectionFailure("timeout", f"{where} accepted the connection but did not answer{within}; the "
                                            "registry (or a proxy in front of it) is hung or overloaded")
    for item in chain:
        if isinstance(item, (ConnectionResetError, BrokenPipeError)) or type(item).__name__ in (
                "RemoteDisconnected", "IncompleteRead", "ProtocolError"):
            return ConnectionFailure("reset", f"{where} closed the connection before the answer was complete; "
                                              "look at the registry's (or its proxy's) logs")
    for item in chain:
        if isinstance(item, OSError) and item.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            return ConnectionFailure("connect", f"cannot reach {where}: {item.strerror}; check the network path "
                                                "(routes, VPN, firewall)")
    for item in chain:
        if isinstance(item, OSError) and item.strerror:
            return ConnectionFailure("connect", f"cannot connect to {where}: {item.strerror}")
    return ConnectionFailure("connect", f"cannot connect to {where} ({type(exc).__name__})")


# --------------------------------------------------------------------------- HTTP status


def error_detail(body: bytes) -> str:
    """The first message of a registry/Harbor ``{"errors": [...]}`` body, bounded and on one line."""
    try:
        errors = json.loads(body).get("errors")
        first = errors[0]
        text = str(first.get("message") or first.get("code"))
    except (ValueError, AttributeError, TypeError, IndexError, KeyError, RecursionError):
        return ""
    return " ".join(text.split())[:200]


def error_code(body: bytes) -> str:
    """The first ``code`` of a distribution-spec error body (``PAGINATION_NUMBER_INVALID``), or ""."""
    try:
        code = json.loads(body)["errors"][0]["code"]
    except (ValueError, AttributeError, TypeError, IndexError, KeyError, RecursionError):
        return ""
    return code if isinstance(code, str) and len(code) <= 64 else ""


def status_error(status: int, what: str, body: bytes = b"", *, reset_at: float | None = None) -> RegistryError:
    """The error for an unexpected HTTP ``status``; ``what`` names the request (``target hub: GET /v2/``)."""
    detail = error_detail(body)
    code = error_code(body)
    message = f"{what}: HTTP {status}{': ' + detail if detail else ''}"
    if status == 401:
        return AuthFailed(message + "; check the username and password", status=status, code=code)
    if status == 403:
        return Forbidden(message + "; the account lacks permission for this", status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 429:
        when = ""
        if reset_at is not None:
            import time
            when = f" (the limit resets in {max(0.0, reset_at - time.time()):.0f}s)"
        return RateLimited(message + f"; the registry is rate-limiting regwatch{when}", status=status,
                           reset_at=reset_at, code=code)
    if status >= 500:
        return ServerError(message + "; look at the registry's logs", status=status, code=code)
    return ProtocolError(message, status=status, code=code)
