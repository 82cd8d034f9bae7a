"""One pull-latency probe: a real pull over the registry API, as a container runtime does it.

The sequence (containerd's and Docker's): ``GET /v2/`` (ping; a 401 carries the auth challenge),
the token from the challenge's realm with the pull scope (Bearer) or Basic credentials,
the manifest by tag (an index picks the platform, then the platform's manifest by digest),
the config blob, then every layer, following redirects to blob storage. Every byte is read and
hashed; a body whose sha256 or size differs from its descriptor fails the probe with
``digest_mismatch``, one that ends early with ``truncated``.

Each HTTP exchange is timed from the request leaving to the last byte read; opening the
connection for it (dns, connect, tls) is timed separately, so the phases add up to the total.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urljoin, urlsplit

from regwatch.auth import TOKEN_LIMIT, Authenticator, origin_of, repository_scope
from regwatch.client import INDEX_MEDIA_TYPES, MANIFEST_ACCEPT, USER_AGENT
from regwatch.credentials import NONE, Credentials
from regwatch.failures import RegistryError, classify_connection, status_error
from regwatch.probes.conn import PHASES, REASONS, Connector, Deadline, ProbeFailure, Timings
from regwatch.tls import ssl_context, warn_verification_off

_READ_CHUNK = 1 << 20
_MAX_MANIFEST = 4 << 20  # Distribution's own limit on manifest bodies
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class ProbeSpec:
    """What to pull and how. ``base_url`` is the registry (or mirror) endpoint."""

    base_url: str
    repository: str
    reference: str  # a tag or a sha256 digest
    mode: str = "full"
    platform: str = "linux/amd64"
    max_bytes: int = 100 * 1024 * 1024
    timeout: float = 10.0
    credentials: Credentials = NONE
    name: str = ""  # the target's name, for messages

    def __repr__(self) -> str:  # never show a credential
        return (f"ProbeSpec(base_url={self.base_url!r}, repository={self.repository!r}, "
                f"reference={self.reference!r}, mode={self.mode!r})")


@dataclass
class ProbeResult:
    success: bool
    phases: dict[str, float]
    total_seconds: float
    bytes_pulled: int
    reason: str | None = None
    failed_phase: str | None = None
    message: str = ""
    manifest_digest: str | None = None
    image_bytes: int | None = None
    layers: int = 0
    cert_expiry: float | None = None
    connections: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["phases"] = {p: round(v, 6) for p, v in self.phases.items()}
        out["total_seconds"] = round(self.total_seconds, 6)
        return out


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes  # empty when the body was streamed into a hasher
    length: int
    url: str


@dataclass
class _Pull:
    """The state of one pull in progress."""

    spec: ProbeSpec
    connector: Connector
    timings: Timings = field(default_factory=Timings)
    deadline: Deadline | None = None
    auth: Authenticator | None = None
    auth_headers: dict[str, str] = field(default_factory=dict)
    bytes_pulled: int = 0
    insecure: bool = False


class Prober:
    """Runs probes for one endpoint. With ``reuse_connections`` the connections outlive a probe (a warm node);
    by default every request opens its own, so connect and TLS are measured as a cold node sees them."""

    def __init__(self, *, ca_file: str | None = None, insecure_skip_verify: bool = False,
                 reuse_connections: bool = False, name: str = "probe"):
        if insecure_skip_verify:
            warn_verification_off(name, "set tls.ca_file (or --ca-file) instead of tls.insecure_skip_verify "
                                        "(or --insecure)")
        self.context = ssl_context(ca_file, insecure_skip_verify)
        self.insecure = insecure_skip_verify
        self.reuse = reuse_connections
        self._connector: Connector | None = None

    def close(self) -> None:
        if self._connector is not None:
            self._connector.close()

    def probe(self, spec: ProbeSpec) -> ProbeResult:
        _, host, port = origin_of(spec.base_url)
        if self._connector is None or not self.reuse:
            self._connector = Connector(self.context, reuse=self.reuse, cert_origin=(host, port))
        self._connector.cert_expiry = None
        pull = _Pull(spec, self._connector, deadline=Deadline(spec.timeout), insecure=self.insecure)
        started = time.monotonic()
        result = ProbeResult(False, pull.timings.phases, 0.0, 0)
        try:
            _run(pull, result)
            result.success = True
        except ProbeFailure as exc:
            result.reason, result.failed_phase, result.message = exc.reason, exc.phase, str(exc)
        finally:
            result.total_seconds = time.monotonic() - started
            result.bytes_pulled = pull.bytes_pulled
            result.cert_expiry = self._connector.cert_expiry
            result.connections = pull.timings.connections
            result.requests = pull.timings.requests
            if not self.reuse:
                self._connector.close()
        return result


def _run(pull: _Pull, result: ProbeResult) -> None:
    spec = pull.spec
    _authorize(pull)
    manifest, digest = _fetch_manifest(pull, spec.reference)
    if manifest.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in manifest:
        child = _pick_platform(manifest, spec.platform)
        manifest, digest = _fetch_manifest(pull, child)
    result.manifest_digest = digest
    config = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise ProbeFailure("protocol", f"manifest {digest} has no config or layers (mediaType "
                                       f"{manifest.get('mediaType')!r}); is it an image manifest?", "manifest")
    descriptors = [config, *layers]
    try:
        sizes = [int(d["size"]) for d in descriptors]
        digests = [str(d["digest"]) for d in descriptors]
    except (KeyError, TypeError, ValueError):
        raise ProbeFailure("protocol", f"manifest {digest} has a descriptor without digest or size",
                           "manifest") from None
    result.image_bytes = sum(sizes)
    result.layers = len(layers)
    if spec.mode == "manifest":
        return
    if result.image_bytes > spec.max_bytes:
        raise ProbeFailure("byte_limit", f"the image's config and layers are {result.image_bytes} bytes, over the "
                                         f"probe's max_bytes {spec.max_bytes}; raise max_bytes, probe a smaller "
                                         "image, or use mode: manifest", "manifest")
    _fetch_blob(pull, digests[0], sizes[0], "config")
    for i, (layer_digest, size) in enumerate(zip(digests[1:], sizes[1:], strict=True)):
        _fetch_blob(pull, layer_digest, size, "blob", first_byte_phase="blob_first_byte" if i == 0 else None)


# --------------------------------------------------------------------------- auth


def _authorize(pull: _Pull) -> None:
    """Ping, then answer the registry's challenge with the client's own auth code (``regwatch.auth``); the
    token request is timed as the ``auth`` phase."""
    spec = pull.spec
    auth = Authenticator(spec.base_url, spec.credentials, name=spec.name or urlsplit(spec.base_url).netloc,
                         fetch=lambda method, url, headers, form: _token_exchange(pull, method, url, headers, form),
                         tls_verified=not pull.insecure, cache=False)
    pull.auth = auth
    ping = f"{spec.base_url}/v2/"
    pull.auth_headers = auth.headers_for(ping)
    resp = _exchange(pull, "ping", "GET", ping, {})
    if resp.status == 200:
        return
    if resp.status != 401:
        raise _status_failure(resp, "ping", f"GET {urlsplit(resp.url).path}")
    if not auth.answer(ping, resp.headers.get("WWW-Authenticate", ""), bool(pull.auth_headers)):
        raise ProbeFailure("auth", str(auth.rejected(401, f"GET {urlsplit(ping).path}")), "ping")
    try:
        pull.auth_headers = auth.headers_for(ping, repository_scope(spec.repository))
    except RegistryError as exc:
        raise ProbeFailure(_reason(exc), str(exc), "auth") from None


def _token_exchange(pull: _Pull, method: str, url: str, headers: dict[str, str],
                    form: bytes | None) -> tuple[int, bytes]:
    try:
        resp = _exchange(pull, "auth", method, url, headers, send_auth=False, body=form, limit=TOKEN_LIMIT)
    except ProbeFailure as exc:
        if exc.reason in ("dns", "connect", "timeout") or exc.reason.startswith("tls"):
            _, host, port = origin_of(url)
            raise ProbeFailure("auth_unreachable", f"the token server {host}:{port} cannot be reached: {exc}",
                               "auth") from None
        raise
    return resp.status, resp.body


def _reason(exc: RegistryError) -> str:
    return exc.reason if exc.reason in REASONS else "protocol"


# --------------------------------------------------------------------------- manifests


def _fetch_manifest(pull: _Pull, reference: str) -> tuple[dict, str]:
    spec = pull.spec
    path = f"/v2/{spec.repository}/manifests/{reference}"
    resp = _exchange(pull, "manifest", "GET", spec.base_url + path, {"Accept": MANIFEST_ACCEPT},
                     limit=_MAX_MANIFEST)
    if resp.status == 404:
        raise ProbeFailure("not_found", f"{spec.repository}:{reference} does not exist on the registry (HTTP 404); "
                                        "check the probe's image and tag", "manifest")
    if resp.status != 200:
        raise _status_failure(resp, "manifest", f"GET {path}")
    digest = "sha256:" + hashlib.sha256(resp.body).hexdigest()
    expected = reference if reference.startswith("sha256:") else resp.headers.get("Docker-Content-Digest")
    if expected and expected != digest:
        raise ProbeFailure("digest_mismatch", f"manifest {spec.repository}:{reference} hashes to {digest}, not "
                                              f"{expected}; the registry or something in between altered it",
                           "manifest")
    try:
        manifest = json.loads(resp.body)
    except ValueError:
        raise ProbeFailure("protocol", f"manifest {spec.repository}:{reference} is not JSON", "manifest") from None
    if not isinstance(manifest, dict):
        raise ProbeFailure("protocol", f"manifest {spec.repository}:{reference} is not a JSON object", "manifest")
    return manifest, digest


def _pick_platform(index: dict, platform: str) -> str:
    want_os, want_arch, *rest = platform.split("/")
    want_variant = rest[0] if rest else None
    seen = []
    for entry in index.get("manifests") or []:
        plat = entry.get("platform") or {}
        seen.append("/".join(filter(None, [plat.get("os"), plat.get("architecture"), plat.get("variant")])))
        if plat.get("os") == want_os and plat.get("architecture") == want_arch and \
                (want_variant is None or plat.get("variant") == want_variant) and entry.get("digest"):
            return str(entry["digest"])
    raise ProbeFailure("platform_not_found", f"the index has no {platform} image (it has: "
                                             f"{', '.join(seen) or 'none'}); set the probe's platform", "manifest")


# --------------------------------------------------------------------------- blobs


def _fetch_blob(pull: _Pull, digest: str, size: int, phase: str, first_byte_phase: str | None = None) -> None:
    spec = pull.spec
    url = f"{spec.base_url}/v2/{spec.repository}/blobs/{digest}"
    hasher = hashlib.sha256()
    resp = _exchange(pull, phase, "GET", url, {}, limit=size + 1, hasher=hasher, first_byte_phase=first_byte_phase,
                     follow_redirects=True)
    if resp.status == 404:
        raise ProbeFailure("not_found", f"blob {digest} of {spec.repository} is missing (HTTP 404): the image is "
                                        "broken on the registry", phase)
    if resp.status != 200:
        raise _status_failure(resp, phase, f"GET blob {digest}")
    got = resp.length
    actual = "sha256:" + hasher.hexdigest()
    if got > size or (got == size and actual != digest):
        raise ProbeFailure("digest_mismatch", f"blob {digest} of {spec.repository} arrived as {actual} ({got} bytes, "
                                              f"expected {size}); the registry's storage or a proxy corrupted it",
                           phase)
    if got < size:
        raise ProbeFailure("truncated", f"blob {digest} of {spec.repository} ended after {got} of {size} bytes; "
                                        "the registry or a proxy cut the transfer", phase)


# --------------------------------------------------------------------------- HTTP exchange


def _exchange(pull: _Pull, phase: str, method: str, url: str, headers: dict[str, str], *, send_auth: bool = True,
              limit: int | None = None, hasher=None, first_byte_phase: str | None = None,
              follow_redirects: bool = False, body: bytes | None = None) -> _Response:
    """One request, timed into ``phase`` (connection set-up into dns/connect/tls), body read in full.

    With ``hasher`` a 200 body is hashed as it streams and not kept. At most ``limit`` bytes are read.
    Redirects are followed without the registry's Authorization when they leave the registry's host.
    """
    started_first = time.monotonic()
    for _ in range(6):
        all_headers = {"User-Agent": USER_AGENT, **headers}
        if send_auth and pull.auth is not None and pull.auth.same_origin(url):
            all_headers.update(pull.auth_headers)
        if body is not None:
            all_headers["Content-Length"] = str(len(body))
        if not pull.connector.reuse:
            all_headers["Connection"] = "close"
        conn = pull.connector.get(url, pull.timings, pull.deadline, phase)
        started = time.monotonic()
        pull.timings.requests += 1
        reusable = False
        try:
            conn.sock.settimeout(pull.deadline.remaining(phase))
            target = urlsplit(url)
            conn.putrequest(method, target.path + (f"?{target.query}" if target.query else ""),
                            skip_accept_encoding=True)
            for key, value in all_headers.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            resp = conn.getresponse()
            if first_byte_phase and resp.status not in _REDIRECTS:
                pull.timings.add(first_byte_phase, time.monotonic() - started_first)
            if follow_redirects and resp.status in _REDIRECTS and resp.getheader("Location"):
                resp.read()
                pull.timings.add(phase, time.monotonic() - started)
                reusable = not resp.will_close
                url = urljoin(url, resp.getheader("Location"))
                continue
            ok = resp.status == 200
            body, length = _read_body(pull, resp, phase, limit if ok else 64 * 1024, hasher if ok else None,
                                      count=ok and phase in ("manifest", "config", "blob"))
            pull.timings.add(phase, time.monotonic() - started)
            reusable = not resp.will_close and resp.isclosed()
            return _Response(resp.status, resp.msg, body, length, url)
        except ProbeFailure as exc:
            pull.timings.add(phase, time.monotonic() - started)
            if exc.reason == "truncated":
                raise ProbeFailure("truncated", f"{method} {urlsplit(url).path}: {exc}", phase) from None
            raise
        except TimeoutError:
            pull.timings.add(phase, time.monotonic() - started)
            raise ProbeFailure("timeout", f"{method} {urlsplit(url).path} got no answer within the probe's "
                                          f"{pull.deadline.seconds:g}s timeout", phase) from None
        except (http.client.HTTPException, OSError) as exc:
            pull.timings.add(phase, time.monotonic() - started)
            if isinstance(exc, (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionResetError)):
                raise ProbeFailure("truncated", f"{method} {urlsplit(url).path}: the connection closed before the "
                                                f"answer was complete ({exc.__class__.__name__})", phase) from None
            if isinstance(exc, (ssl.SSLError, OSError)):
                _, host, port = origin_of(url)
                failure = classify_connection(exc, host, port, timeout=pull.deadline.seconds, phase="read")
                reason = failure.reason if failure.reason in REASONS else "connect"
                raise ProbeFailure(reason, f"{method} {urlsplit(url).path}: {failure.message}", phase) from None
            raise ProbeFailure("protocol", f"{method} {urlsplit(url).path}: bad HTTP answer "
                                           f"({exc.__class__.__name__})", phase) from None
        finally:
            pull.connector.release(url, conn, reusable)
    raise ProbeFailure("protocol", f"more than 5 redirects from {urlsplit(url).path}", phase)


def _read_body(pull: _Pull, resp: http.client.HTTPResponse, phase: str, limit: int | None,
               hasher, count: bool) -> tuple[bytes, int]:
    """Read the body (at most ``limit`` bytes); ``count`` adds it to the bytes pulled (image content only)."""
    chunks: list[bytes] = []
    got = 0
    while limit is None or got < limit:
        want = _READ_CHUNK if limit is None else min(_READ_CHUNK, limit - got)
        chunk = resp.read(want)
        if not chunk:
            break
        got += len(chunk)
        if count:
            pull.bytes_pulled += len(chunk)
        if hasher is not None:
            hasher.update(chunk)
        else:
            chunks.append(chunk)
        pull.deadline.remaining(phase)
    return b"".join(chunks), got


def _status_failure(resp: _Response, phase: str, what: str) -> ProbeFailure:
    """The probe's failure for an unexpected status: the same mapping (and words) as the client's."""
    error = status_error(resp.status, what, resp.body)
    return ProbeFailure(_reason(error), str(error), phase)


__all__ = ["PHASES", "ProbeFailure", "ProbeResult", "ProbeSpec", "Prober"]
