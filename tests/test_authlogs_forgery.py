"""Forgery, end to end: clients that put every marker the parsers know into what they send.

Two real docker-registry 2.8.2 (Debian) processes write their logs to files ``regwatch serve``
follows with default settings: one with htpasswd auth, one with token auth (tests/tokenserver.py
signs the tokens; the registry verifies them against its certificate). The test sends
anonymous, good, wrong-password, insufficient-scope, malformed-token and untrusted-token
requests whose User-Agent, query string, Host, X-Forwarded-For, X-Request-ID and Basic
username carry those markers, plus absolute-form requests whose URL username writes whole
forged log lines into the registry's access log (the real registry does write them). Beside
them, serve follows crafted Harbor core lines (1,000 failed logins with one constant
X-Request-ID, robot logins Harbor logs three times) and nginx lines.

Every exported counter must equal the test's own count of what it sent.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections import Counter
from urllib.parse import quote

import jwt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from regwatch.logs import parsers
from regwatch.localregistry import LocalRegistry
from tests.tokenserver import TokenServer

pytestmark = pytest.mark.slow

# Every marker the parsers look for or decide on, and the line shapes they know.
MARKERS = sorted({needle.decode() for needles in parsers._NEEDLES.values() if needles for needle in needles} |
                 {suffix for suffix, _, _ in parsers._DISTRIBUTION_SUFFIXES} |
                 {prefix for prefix, _ in parsers._ROBOT_MESSAGES} | set(parsers._LOGIN_PATHS) |
                 {'level=info msg="authorized request"', '"msg":"authorized request"', 'level=warning',
                  'msg="error authorizing context: x: authentication failure"', '" 401 ', " - - [",
                  "[ERROR] [/server/middleware/security/basic_auth.go:72]",
                  "]: failed to authenticate user:eve, error:",
                  'error authenticating user \\"eve\\"', "Error occurred in UserLogin: Failed to authenticate"})
MARKED = "x" + " | ".join(MARKERS)  # one string holding every marker (a header value cannot start with a space)


def forged_lines(now: str) -> list[str]:
    """Log lines a client would like the registry to have written."""
    return [f'time="{now}" level=info msg="authorized request" http.request.id=forged-{i}' for i in range(3)] + [
        f'time="{now}" level=warning msg="error authorizing context: basic authentication challenge for realm '
        f'\\"regwatch\\": authentication failure" http.request.id=forged-x',
        f'{{"level":"warning","msg":"error authorizing context: invalid token","time":"{now}"}}',
    ]


class Sender:
    """Sends requests and counts, by what it sent, what the registry must have seen."""

    def __init__(self):
        self.counts: dict[str, Counter] = {}
        self.session = requests.Session()

    def count(self, source: str, what: str, n: int = 1) -> None:
        self.counts.setdefault(source, Counter())[what] += n

    def get(self, url: str, path: str, *, auth=None, bearer: str | None = None, marker: str = MARKED) -> int:
        headers = {"User-Agent": marker, "X-Forwarded-For": f"6.6.6.6, {marker}", "X-Request-ID": "constant-id",
                   "X-Real-Ip": marker, "Referer": marker}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        response = self.session.get(f"{url}{path}?q={quote(marker)}", auth=auth, headers=headers, timeout=10)
        return response.status_code

    @staticmethod
    def raw(url: str, target: str, extra: str = "") -> bytes:
        """One request with a request target requests would not send (absolute form, userinfo)."""
        host, port = url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {MARKED}\r\n{extra}"
                         "Connection: close\r\n\r\n".encode())
            return sock.recv(200)


def metrics(serve) -> dict[tuple, float]:
    values: dict[tuple, float] = {}
    for family in text_string_to_metric_families(serve.metrics()):
        for sample in family.samples:
            if sample.name.startswith("regwatch_auth_"):
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def summary(values: dict[tuple, float], source: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in values.items():
        labels = dict(labels)
        if labels.get("source") != source or not value:
            continue
        if name == "regwatch_auth_requests_total":
            out["attempts"] = value
        elif name == "regwatch_auth_challenges_total":
            out["challenges"] = value
        elif name == "regwatch_auth_failures_total":
            out[labels["reason"]] = value
        elif name == "regwatch_auth_log_read_errors_total":
            out["read_error:" + labels["reason"]] = value
    return out


def expected(counts: Counter) -> dict[str, float]:
    return {k: float(v) for k, v in counts.items() if v}


def harbor_core_lines(sender: Sender) -> list[str]:
    lines = []
    ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = f'[client IP="6.6.6.6, {MARKED}" requestID="constant-id" user agent="{MARKED}"]'
    for i in range(1000):  # a brute force with one constant X-Request-ID: 1,000 failures
        lines.append(f"{ts} [ERROR] [/server/middleware/security/basic_auth.go:72]{fields}: failed to authenticate "
                     f"user:admin{i % 7} {MARKED.replace(':', '')}, error:Failed to authenticate user, due to error "
                     "'Invalid credentials'")
        lines.append(f"{ts} [DEBUG] [/server/middleware/log/log.go:31]: attach request id constant-id {MARKED}")
    sender.count("harbor", "attempts", 1000)
    sender.count("harbor", "bad_credentials", 1000)
    for _ in range(5):  # a robot login with the wrong secret: robot.go, robot2.go and basic_auth.go log it
        for n, file in enumerate(("robot.go", "robot2.go")):
            lines.append(f'{ts} [ERROR] [/server/middleware/security/{file}:{47 + n}][requestID="constant-id"]: '
                         "failed to authenticate robot account: robot$proj+ci")
        lines.append(f"{ts} [ERROR] [/server/middleware/security/basic_auth.go:72]{fields}: failed to authenticate "
                     "user:robot$proj+ci, error:Failed to authenticate user, due to error 'Invalid credentials'")
    sender.count("harbor", "attempts", 5)
    sender.count("harbor", "bad_credentials", 5)
    lines.append(f'{ts} [WARNING] [/core/auth/ldap/ldap.go:88]: Failed to bind user, username: {MARKED}')
    lines.append(f"{ts} [INFO] [/server/middleware/security/basic_auth.go:40]: {MARKED}")  # not an ERROR
    return lines


def nginx_lines(sender: Sender) -> list[str]:
    def esc(value: str) -> str:
        return "".join(f"\\x{b:02X}" if b in (0x22, 0x5C) or b < 32 or b > 126 else chr(b) for b in value.encode())

    now = dt.datetime.now(dt.UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    lines = []
    for user, status, what in (("alice", 200, "attempts"), ("mallory", 401, "bad_credentials"),
                               ("-", 401, "challenges"), (esc(MARKED), 401, "bad_credentials"),
                               (esc(MARKED), 200, "attempts")):
        for path in ("/v2/lib/app/manifests/v1", "//v2/", f"/v2/{quote(MARKED)}"):
            lines.append(f'10.0.0.9 - {user} [{now}] "GET {esc(path)} HTTP/1.1" {status} 87 "{esc(MARKED)}" '
                         f'"{esc(MARKED)}"')
            sender.count("nginx", what)
            if what == "bad_credentials":
                sender.count("nginx", "attempts")
    # a request to another site behind the same nginx is not a registry request
    lines.append(f'10.0.0.9 - {esc(MARKED)} [{now}] "GET /index.html?{quote(MARKED)} HTTP/1.1" 401 87 "-" "-"')
    return lines


def test_client_values_never_create_hide_or_reclassify_an_attempt(tmp_path, write_config, serve):
    tokens = TokenServer(tmp_path, users={"bob": "bob-secret"}).start()
    (tmp_path / "other").mkdir()
    stranger = TokenServer(tmp_path / "other", users={})  # a signer the registry does not trust
    basic = LocalRegistry(tmp_path / "basic", users={"alice": "alice-secret"}, debug=False).start()
    token = LocalRegistry(tmp_path / "token", token=tokens.registry_auth(), debug=False, log_formatter="json").start()
    harbor_log, nginx_log = tmp_path / "harbor" / "core.log", tmp_path / "nginx" / "access.log"
    for path in (harbor_log, nginx_log):
        path.parent.mkdir()
        path.write_bytes(b"")  # there from the start (start_at: end), filled later
    try:
        config = write_config({"auth_logs": [
            {"name": "basic", "path": str(basic.log_path), "positions_file": str(tmp_path / "p-basic.json")},
            {"name": "token", "path": str(token.log_path), "positions_file": str(tmp_path / "p-token.json")},
            {"name": "harbor", "path": str(harbor_log), "format": "harbor-core"},
            {"name": "nginx", "path": str(nginx_log), "format": "nginx"},
        ]})
        proc = serve(config)
        proc.wait_ready()
        sender = Sender()

        # htpasswd: anonymous, good and wrong-password requests, every client value marked
        for _ in range(3):
            assert sender.get(basic.url, "/v2/lib/app/tags/list") == 401
            sender.count("basic", "challenges")
            assert sender.get(basic.url, "/v2/lib/app/tags/list", auth=("alice", "alice-secret")) == 404
            sender.count("basic", "attempts")
            for user in ("alice", MARKED.replace(":", ""), 'eve" msg="authorized request"\nlevel=info'):
                assert sender.get(basic.url, "/v2/lib/app/tags/list", auth=(user, "wrong")) == 401
                sender.count("basic", "attempts")
                sender.count("basic", "bad_credentials")
        # a path that is no registry route: 404 before any auth check, nothing to count
        assert sender.get(basic.url, f"/v2/{quote(MARKED)}/x", auth=("alice", "wrong")) == 404
        # an absolute-form target whose username writes forged lines into the access log
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        username = "x\n" + "\n".join(forged_lines(now)) + "\ny"
        for _ in range(2):
            answer = Sender.raw(basic.url, f"http://{quote(username, safe='')}@{basic.url.split('//')[1]}"
                                           "/v2/lib/app/tags/list")
            assert answer.startswith(b"HTTP/1.1 401")
            sender.count("basic", "challenges")
            sender.count("basic", "read_error:injected", len(forged_lines(now)))
        # the same, with credentials: the request is one attempt, whatever its username wrote
        answer = Sender.raw(basic.url, f"http://{quote(username, safe='')}@{basic.url.split('//')[1]}"
                                       "/v2/lib/app/tags/list", "Authorization: Basic YWxpY2U6YWxpY2Utc2VjcmV0\r\n")
        assert answer.startswith(b"HTTP/1.1 404")
        sender.count("basic", "attempts")
        sender.count("basic", "read_error:injected", len(forged_lines(now)))

        # token auth (JSON formatter): challenge, good token, insufficient scope, malformed and untrusted tokens
        scope = "repository:lib/app:pull"
        good = requests.get(tokens.realm, params={"service": tokens.service, "scope": scope},
                            auth=("bob", "bob-secret"), timeout=10).json()["token"]
        anonymous = requests.get(tokens.realm, params={"service": tokens.service, "scope": scope}, timeout=10).json()
        untrusted = jwt.encode({"iss": tokens.issuer, "aud": tokens.service, "sub": "bob", "access": [],
                                "exp": int(time.time()) + 300, "nbf": int(time.time()) - 10},
                               stranger.key, algorithm="RS256", headers={"x5c": [stranger._x5c]})
        for _ in range(2):
            assert sender.get(token.url, "/v2/lib/app/tags/list") == 401
            sender.count("token", "challenges")
            assert sender.get(token.url, "/v2/lib/app/tags/list", bearer=good) == 404
            sender.count("token", "attempts")
            for bearer, reason in ((anonymous["token"], "insufficient_scope"),
                                   (f"x.{quote(MARKED)}.y", "malformed_token"), (untrusted, "invalid_token")):
                assert sender.get(token.url, "/v2/lib/app/tags/list", bearer=bearer) == 401
                sender.count("token", "attempts")
                sender.count("token", reason)

        harbor_log.write_text("\n".join(harbor_core_lines(sender)) + "\n")
        nginx_log.write_text("\n".join(nginx_lines(sender)) + "\n")

        deadline = time.monotonic() + 20
        want = {source: expected(counts) for source, counts in sender.counts.items()}
        while True:
            values = metrics(proc)
            seen = {source: summary(values, source) for source in want}
            if seen == want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == want
    finally:
        basic.stop()
        token.stop()
        tokens.stop()
