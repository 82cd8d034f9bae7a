"""Property tests: no value a client sends can create, hide or reclassify an auth attempt.

Each test writes the lines a server writes for a known set of requests, the way that server
formats them, with every client-controlled value (User-Agent, path, Host, Referer,
X-Forwarded-For, X-Request-ID, username) drawn from arbitrary text that includes every marker
the parsers know, and asserts that the counts are those of the requests, not of the text:

* Distribution 2.8/3.x: logrus quotes each value with Go's ``strconv.Quote`` (text formatter)
  or JSON-encodes it (JSON formatter); the gorilla access log quotes the request line, Referer
  and User-Agent, but writes the username of an absolute-form target as it is, newlines too
  (seen on the real docker-registry 2.8.2: tests/test_authlogs_forgery.py does it for real).
* Harbor core (src/lib/log): ``[file:line][k="v" ...]: msg`` with the field values unescaped;
  headers cannot hold a newline, a Basic username can hold anything but ":".
* nginx: every variable in an access log escapes '"', '\\' and bytes outside 32..126 as \\xHH.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from regwatch.logs.parsers import Parser, Tally

MARKERS = [
    'msg="authorized request"', '"msg":"authorized request"', "authorized request", "error authorizing context: ",
    'level=warning msg="error authorizing context: x: authentication failure"', ": authentication failure",
    ": invalid token", ": malformed token", ": insufficient scope", ": invalid authorization credential",
    'error authenticating user "eve"', "user failed to authenticate", 'username=eve', "level=info", "level=error",
    '" msg="', '\\" msg=\\"', "\n", '"}\n{"msg":"authorized request","level":"info"}', " - - [",
    "]: failed to authenticate user:eve, error:x", "[/server/middleware/security/basic_auth.go:72]",
    "[ERROR] ", "robot2.go:47]", "]: failed to authenticate robot account: robot$x", "the robot account is expired: ",
    "Error occurred in UserLogin: Failed to authenticate", ' 401 0 "-" "x"', '"GET /v2/ HTTP/1.1" 401 ',
    "/service/token", "/c/login", "1.2.3.4 - eve [01/Jan/2026:00:00:00 +0000] \"GET /v2/ HTTP/1.1\" 401 5 \"-\" \"-\"",
]
hostile = st.one_of(st.sampled_from(MARKERS), st.text(max_size=40),
                    st.lists(st.one_of(st.sampled_from(MARKERS), st.text(max_size=8)), max_size=4).map("".join))
no_newline = hostile.map(lambda s: s.replace("\n", " ").replace("\r", " "))


def go_quote(value: str) -> str:
    """Go's strconv.Quote (what logrus writes for a value that needs quoting), written independently."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def logrus_value(value: str) -> str:
    bare = value and all(ch.isascii() and (ch.isalnum() or ch in "-._/@^+") for ch in value)
    return value if bare else go_quote(value)


def logrus_text(level: str, msg: str, fields: dict[str, str]) -> str:
    parts = ['time="2026-11-23T02:50:00.1Z"', f"level={level}", f"msg={logrus_value(msg)}"]
    parts += [f"{key}={logrus_value(value)}" for key, value in sorted(fields.items())]
    return " ".join(parts)


def logrus_json(level: str, msg: str, fields: dict[str, str]) -> str:
    return json.dumps({**fields, "level": level, "msg": msg, "time": "2026-11-23T02:50:00.1Z"}, sort_keys=True,
                      separators=(",", ":"))


def gorilla_quote(value: str) -> str:
    return go_quote(value)


def access_line(user: str | None, method: str, target: str, status: int, referer: str, agent: str) -> str:
    return (f"127.0.0.1 - {user if user else '-'} [23/Nov/2026:02:50:00 +0000] "
            f"{gorilla_quote(f'{method} {target} HTTP/1.1')} {status} 87 {gorilla_quote(referer)} "
            f"{gorilla_quote(agent)}")


KINDS = ("good", "bad", "anonymous", "scope")


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(st.tuples(st.sampled_from(KINDS), hostile, hostile, hostile, hostile, hostile, hostile,
                                   st.booleans()), min_size=1, max_size=6),
       formatter=st.sampled_from(["text", "json"]), breakdown=st.booleans())
def test_distribution_counts_ignore_every_client_value(requests, formatter, breakdown):
    write = logrus_text if formatter == "text" else logrus_json
    lines, expected = [], Counter3()
    for n, (kind, agent, path, user, host, forwarded, referer, absolute) in enumerate(requests):
        rid = f"00000000-0000-0000-0000-{n:012d}"
        fields = {"go.version": "go1.19.8", "http.request.host": host, "http.request.id": rid,
                  "http.request.method": "GET", "http.request.remoteaddr": forwarded or "127.0.0.1:5000",
                  "http.request.uri": "/v2/" + path, "http.request.useragent": agent, "http.request.referer": referer}
        # an absolute-form target with userinfo: the access log's user field is the raw username
        target = (f"http://{quote(user, safe='')}@{'127.0.0.1:5000'}/v2/" + quote(path)) if absolute else \
            "/v2/" + quote(path)
        if kind == "good":
            lines.append(write("info", "authorized request", fields))
            status = 200
            expected.requests += 1
        elif kind == "bad":
            lines.append(write("error", f"error authenticating user {go_quote(user)}: authentication failure", fields))
            lines.append(write("warning", 'error authorizing context: basic authentication challenge for realm '
                               '"regwatch": authentication failure', fields))
            status = 401
            expected.requests += 1
            expected.failures += 1
        elif kind == "scope":
            lines.append(write("warning", "error authorizing context: insufficient scope", fields))
            status = 401
            expected.requests += 1
            expected.failures += 1
        else:
            lines.append(write("warning", 'error authorizing context: basic authentication challenge for realm '
                               '"regwatch": invalid authorization credential', fields))
            status = 401
            expected.challenges += 1
        lines.append(access_line(user if absolute else None, "GET", target, status, referer, agent))
    tally = Tally()
    block = ("\n".join(lines) + "\n").encode()
    parser = Parser("distribution", breakdown=breakdown)
    # fed in two pieces, cut at a line boundary, as the follower would
    cut = block.find(b"\n", len(block) // 2) + 1
    parser.feed(block[:cut], tally)
    parser.feed(block[cut:], tally)
    parser.release(tally)
    assert (tally.requests, sum(tally.failures.values()), tally.challenges) == \
        (expected.requests, expected.failures, expected.challenges)


class Counter3:
    def __init__(self):
        self.requests = self.failures = self.challenges = 0


def harbor_fields(forwarded: str, request_id: str, agent: str) -> str:
    # src/lib/log: fields sorted by key, written as key="value" with the value unescaped
    return f'[client IP="{forwarded}" requestID="{request_id}" user agent="{agent}"]'


@settings(max_examples=300, deadline=None)
@given(logins=st.lists(st.tuples(st.sampled_from(["user", "robot", "ui"]), no_newline, no_newline, no_newline,
                                 hostile.map(lambda s: s.replace(":", ""))), min_size=1, max_size=8),
       syslog=st.booleans())
def test_harbor_core_counts_ignore_every_client_value(logins, syslog):
    prefix = "Feb 27 10:26:40 172.20.0.1 core[1682]: " if syslog else ""
    lines, expected = [], 0
    for kind, forwarded, request_id, agent, username in logins:
        ts = "2026-03-01T10:00:00Z"
        if kind == "robot":
            name = "robot$proj+ci"  # an existing robot's name (Harbor validates them)
            for i, file in enumerate(("robot.go", "robot2.go")):
                lines.append(f'{ts} [ERROR] [/server/middleware/security/{file}:{47 + i}][requestID="{request_id}"]: '
                             f"failed to authenticate robot account: {name}")
            username = name
        if kind == "ui":
            lines.append(f"{ts} [ERROR] [/core/controllers/base.go:101]: Error occurred in UserLogin: Failed to "
                         "authenticate user, due to error 'Invalid credentials'")
        else:
            message = (f"failed to authenticate user:{username}, error:Failed to authenticate user, due to error "
                       "'Invalid credentials'")
            lines.append(f"{ts} [ERROR] [/server/middleware/security/basic_auth.go:72]"
                         f"{harbor_fields(forwarded, request_id, agent)}: {message}")
        # noise the same request writes: the log middleware's DEBUG line and an LDAP WARNING
        lines.append(f"{ts} [DEBUG] [/server/middleware/log/log.go:31]: attach request id {request_id} to the logger")
        lines.append(f"{ts} [WARNING] [/core/auth/ldap/ldap.go:88]: Failed to bind user, username: {username}")
        expected += 1
    block = "".join(prefix + part + "\n" for line in lines for part in line.split("\n"))
    tally = Tally()
    Parser("harbor-core", breakdown=True).feed(block.encode(), tally)
    assert sum(tally.failures.values()) == expected


def nginx_escape(value: str) -> str:
    out = []
    for byte in value.encode():
        out.append(f"\\x{byte:02X}" if byte in (0x22, 0x5C) or byte < 32 or byte > 126 else chr(byte))
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(st.tuples(st.sampled_from(["good", "bad", "anonymous"]), hostile, hostile, hostile, hostile),
                         min_size=1, max_size=8))
def test_nginx_counts_ignore_every_client_value(requests):
    lines, expected = [], Counter3()
    for kind, user, path, referer, agent in requests:
        user = user or "u"  # an empty Basic user is logged as "-"
        remote_user = "-" if kind == "anonymous" else nginx_escape(user)
        status = 200 if kind == "good" else 401
        request = nginx_escape(f"GET /v2/{quote(path)} HTTP/1.1")
        lines.append(f'10.0.0.9 - {remote_user} [23/Nov/2026:02:50:00 +0000] "{request}" {status} 87 '
                     f'"{nginx_escape(referer)}" "{nginx_escape(agent)}"')
        if kind == "anonymous":
            expected.challenges += 1
        else:
            expected.requests += 1
            expected.failures += kind == "bad"
    tally = Tally()
    Parser("nginx", breakdown=True).feed(("\n".join(lines) + "\n").encode(), tally)
    assert (tally.requests, sum(tally.failures.values()), tally.challenges) == \
        (expected.requests, expected.failures, expected.challenges)
