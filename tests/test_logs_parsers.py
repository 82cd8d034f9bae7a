"""Parsers on real log lines: what is an attempt, a failure, a challenge, per format.

Distribution samples (tests/logsamples.py) were captured from the real docker-registry 2.8.2
(Debian) with htpasswd auth, text and JSON formatters: a good pull, a wrong password, and an
anonymous request. Harbor and token samples are lines quoted in public issues (see
/work/shared/research/authlogs-anchors.md for their provenance).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from regwatch.logs.parsers import (ATTEMPT, CHALLENGE, FAILURE, Parser, Tally, parse_distribution,
                                   parse_harbor_core, parse_harbor_proxy, parse_nginx, sniff)
from tests.logsamples import JSON_LINES, TEXT_ANON, TEXT_BAD, TEXT_GOOD

# fmt: off
# v3.1+ (derived from the source's format: no 2.8 capture exists), and token-auth WARN lines.
V3_USER_LINE = ('time="2025-01-01T00:00:00Z" level=info msg="user failed to authenticate" '
                'error="crypto/bcrypt: hashedPassword is not the hash of the given password" '
                'http.request.id=11111111-2222-3333-4444-555555555555 username=alice')
TOKEN_INVALID = ('level=warning msg="error authorizing context: invalid token" go.version=go1.12.7 '
                 'http.request.host="gitlab.company.com:4567" http.request.id=74613829-aaaa '
                 'http.request.method=GET http.request.remoteaddr=10.72.11.20 http.request.uri="/v2/"')
TOKEN_REQUIRED = ('time="2024-04-14T20:10:05.574098818Z" level=warning msg="error authorizing context: authorization '
                  'token required" go.version=go1.20.8 http.request.host=docker.MYDOMAIN.TLD '
                  'http.request.id=673dae2a-0000 http.request.method=GET http.request.remoteaddr=10.89.0.66 '
                  'http.request.uri="/v2/" http.request.useragent="containers/5.29.2 (github.com/containers/image)"')
HARBOR_BASIC = ('2022-07-06T06:53:45Z [ERROR] [/server/middleware/security/basic_auth.go:72]'
                '[client IP="192.168.122.123" requestID="2466ffd6-aaaa" user agent="Go-http-client/1.1"]: '
                'failed to authenticate user:testt, '
                "error:Failed to authenticate user, due to error 'Invalid credentials'")
HARBOR_SYSLOG = ('Feb 27 10:26:40 172.20.0.1 core[1682]: 2023-02-27T02:26:40Z [ERROR] '
                 '[/server/middleware/security/basic_auth.go:41][requestID="ac22b544-bbbb"]: failed to authenticate '
                 "admin: Failed to authenticate user, due to error 'Invalid credentials'")
HARBOR_LDAP = [
    '2025-09-05T16:14:45Z [WARNING] [/core/auth/ldap/ldap.go:88]: Failed to bind user, username: USER, dn: CN=USER,'
    'OU=x, error: LDAP Result Code 49 "Invalid Credentials": 80090308',
    '2025-09-05T16:14:45Z [WARNING] [/core/auth/authenticator.go:158]: Login failed, locking USER, and sleep for 1.5s',
    '2025-09-05T16:14:46Z [ERROR] [/server/middleware/security/basic_auth.go:72][client IP="10.7.3.12" '
    'requestID="cccc-1" user agent="docker/19.03.11"]: failed to authenticate user:USER error:Failed to authenticate '
    "user, due to error 'LDAP Result Code 49 \"Invalid Credentials\"'",
]
HARBOR_ROBOT = ('2021-12-01T00:00:00Z [ERROR] [/server/middleware/security/robot2.go:47][requestID="dddd-1"]: '
                'failed to authenticate robot account: robot-backend')
HARBOR_PROXY = [
    '172.16.99.6 - "HEAD /v2/hotpotcat/perm-check/blobs/sha256:17ee HTTP/1.1" 401 0 "-" "docker/28.4.0" 0.003 0.003 .',
    '[03/Sep/2021:08:41:05 +0000]:127.0.0.6 - "GET /service/token?account=bob&service=harbor-registry HTTP/1.1" 401 '
    '76 "-" "docker/20.10.7" 0.008 0.008 .',
    'Sep  3 08:41:05 172.18.0.1 proxy[1]: 10.0.0.9 - "GET /service/token?scope=repository:a/b:pull HTTP/1.1" 200 '
    '900 "-" "docker/20.10.7" 0.010 0.010 .',
]
NGINX = [
    '10.1.2.3 - alice [23/Nov/2026:02:50:00 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 200 525 "-" "docker/27"',
    '10.1.2.4 - mallory [23/Nov/2026:02:50:01 +0000] "GET /v2/ HTTP/1.1" 401 87 "-" "docker/27"',
    '10.1.2.5 - - [23/Nov/2026:02:50:02 +0000] "GET /v2/ HTTP/1.1" 401 87 "-" "docker/27"',
    '10.1.2.6 - alice [23/Nov/2026:02:50:03 +0000] "GET /index.html HTTP/1.1" 401 87 "-" "curl"',
]
# fmt: on


def test_distribution_text_good_bad_anonymous():
    assert parse_distribution(TEXT_GOOD).kind == ATTEMPT
    hint, warn, access = (parse_distribution(line) for line in TEXT_BAD)
    assert (hint.kind, hint.user) == ("user_hint", "alice")
    assert (warn.kind, warn.reason, warn.client) == (FAILURE, "bad_credentials", "127.0.0.1")
    assert access is None  # the access log cannot tell a challenge from a failure: never counted
    assert [parse_distribution(line) and parse_distribution(line).kind for line in TEXT_ANON] == [CHALLENGE, None]


def test_distribution_json_formatter():
    kinds = [(e.kind, e.reason) if (e := parse_distribution(line)) else None for line in JSON_LINES]
    assert kinds == [(ATTEMPT, ""), None, None, ("user_hint", ""), (FAILURE, "bad_credentials"), None]


def test_token_suffixes_and_v3_user_line():
    assert (parse_distribution(TOKEN_INVALID).kind, parse_distribution(TOKEN_INVALID).reason) == \
        (FAILURE, "invalid_token")
    assert parse_distribution(TOKEN_REQUIRED).kind == CHALLENGE
    scope = TOKEN_INVALID.replace("invalid token", "insufficient scope")
    assert parse_distribution(scope).reason == "insufficient_scope"
    v3 = parse_distribution(V3_USER_LINE)
    assert (v3.kind, v3.user) == ("user_hint", "alice")  # names the user; the WARN line is the one counted


@pytest.mark.parametrize("breakdown", [False, True])
def test_block_counts_one_failure_per_refused_request(breakdown):
    block = "\n".join([TEXT_GOOD] * 3 + TEXT_BAD + TEXT_ANON + JSON_LINES + [V3_USER_LINE]).encode() + b"\n"
    tally = Tally()
    Parser("distribution", breakdown=breakdown).feed(block, tally)
    # 3 text good + 1 JSON good + 1 text bad + 1 JSON bad; the ERROR/v3 lines add nothing
    assert (tally.requests, dict(tally.failures), tally.challenges) == (6, {"bad_credentials": 2}, 1)
    assert tally.lines == block.count(b"\n")
    if breakdown:
        assert tally.users == {"alice": 2} and tally.clients == {"127.0.0.1": 2}


def test_harbor_core_counts_every_failure_line_once():
    tally = Tally()
    # the LDAP lines of one login add nothing; the same requestID twice is two logins (the id is the client's)
    lines = [HARBOR_BASIC, HARBOR_SYSLOG, *HARBOR_LDAP, HARBOR_ROBOT, HARBOR_BASIC]
    Parser("harbor-core", breakdown=True).feed(("\n".join(lines) + "\n").encode(), tally)
    assert dict(tally.failures) == {"bad_credentials": 5}
    assert tally.users == {"testt": 2, "admin": 1, "USER": 1, "robot-backend": 1}
    assert parse_harbor_core(HARBOR_BASIC)[0].client == "192.168.122.123"
    expired = HARBOR_ROBOT.replace("failed to authenticate robot account", "the robot account is expired")
    assert parse_harbor_core(expired)[0].reason == "robot_expired"


def robot_chain(name: str, request_id: str, second: int, files=("robot.go", "robot2.go")) -> list[str]:
    """The lines Harbor core writes for one failed robot login: each robot generator, then basic_auth
    trying the same credentials as a user (src/server/middleware/security/security.go runs them in order)."""
    ts = f"2026-03-01T10:00:{second:02d}Z"
    lines = [f'{ts} [ERROR] [/server/middleware/security/{file}:{47 + i}][requestID="{request_id}"]: failed to '
             f"authenticate robot account: {name}" for i, file in enumerate(files)]
    lines.append(f'{ts} [ERROR] [/server/middleware/security/basic_auth.go:72][client IP="10.0.0.1" '
                 f'requestID="{request_id}" user agent="docker/27"]: failed to authenticate user:{name}, '
                 "error:Failed to authenticate user, due to error 'Invalid credentials'")
    return lines


def test_harbor_robot_login_logged_three_times_counts_once():
    block = robot_chain("robot$proj+ci", "r-1", 1) + robot_chain("robot$proj+ci", "r-2", 2, files=("robot2.go",))
    # two requests of the same robot interleaved, with one client-chosen request id for both
    first, second = robot_chain("robot$proj+ci", "same", 3), robot_chain("robot$proj+ci", "same", 3)
    block += [line for pair in zip(first, second, strict=True) for line in pair]
    tally = Tally()
    Parser("harbor-core").feed(("\n".join(block) + "\n").encode(), tally)
    assert dict(tally.failures) == {"bad_credentials": 4}


def test_harbor_1000_failed_logins_with_one_request_id_count_1000():
    line = ('2026-03-01T10:00:00Z [ERROR] [/server/middleware/security/basic_auth.go:72][client IP="10.0.0.1" '
            'requestID="constant" user agent="hydra"]: failed to authenticate user:admin, error:Failed to '
            "authenticate user, due to error 'Invalid credentials'")
    tally = Tally()
    parser = Parser("harbor-core")
    for _ in range(10):
        parser.feed(("\n".join([line] * 100) + "\n").encode(), tally)
    assert dict(tally.failures) == {"bad_credentials": 1000}


def test_harbor_proxy_and_nginx():
    assert [e.kind if (e := parse_harbor_proxy(line)) else None for line in HARBOR_PROXY] == \
        [CHALLENGE, FAILURE, ATTEMPT]
    assert [e.kind if (e := parse_nginx(line)) else None for line in NGINX] == [ATTEMPT, FAILURE, CHALLENGE, None]
    assert parse_nginx(NGINX[1]).user == "mallory"
    # the path is compared as nginx routes it: "//v2/" and "%2F" spellings are still the registry API
    for path in ("//v2/", "/v2//lib/app/manifests/v1", "/%76%32/", "/x/../v2/"):
        line = NGINX[1].replace('"GET /v2/ ', f'"GET {path} ')
        assert (parse_nginx(line).kind, parse_nginx(line).user) == (FAILURE, "mallory"), path
    # nginx escapes quotes in $remote_user but not spaces or brackets
    spaced = NGINX[1].replace(" mallory ", " a b [01/Jan/2026:00:00:00 +0000] c ")
    assert (parse_nginx(spaced).kind, parse_nginx(spaced).user) == (FAILURE, "a b [01/Jan/2026:00:00:00 +0000] c")


def test_sniff():
    assert sniff(TEXT_BAD + TEXT_ANON) == "distribution"
    assert sniff(JSON_LINES) == "distribution"
    assert sniff([HARBOR_BASIC, HARBOR_SYSLOG]) == "harbor-core"
    assert sniff(HARBOR_PROXY) == "harbor-proxy"
    assert sniff(NGINX) == "nginx"
    assert sniff(["\x00\x01garbage", ""]) is None


# --------------------------------------------------------------------------- lines a client writes into the log


def injection(username: bytes, status: int = 401) -> bytes:
    """The access line docker-registry 2.8.2 writes for ``GET http://<username>@host/v2/`` (gorilla writes
    the URL's username as it is, so its newlines end lines): head, injected lines, tail."""
    target = "http://" + quote(username, safe="") + "@127.0.0.1:5000/v2/"
    return (b"127.0.0.1 - " + username + b' [23/Nov/2026:02:50:00 +0000] "GET ' + target.encode() +
            b' HTTP/1.1" ' + str(status).encode() + b' 87 "" "curl/8"\n')


FORGED = [TEXT_GOOD.encode(), TEXT_BAD[1].encode(), JSON_LINES[0].encode()]


def test_lines_injected_through_an_access_log_username_are_not_counted():
    block = (TEXT_ANON[0] + "\n").encode() + injection(b"x\n" + b"\n".join(FORGED) + b"\ny")
    block += (TEXT_GOOD + "\n").encode()
    for cut in (None, block.index(FORGED[1]), block.index(b"y [23/Nov")):  # whole, and split at line boundaries
        tally, parser = Tally(), Parser("distribution")
        if cut is None:
            parser.feed(block, tally)
        else:
            parser.feed(block[:cut], tally)
            parser.feed(block[cut:], tally)
        assert (tally.requests, dict(tally.failures), tally.challenges) == (1, {}, 1)
        assert parser.errors["injected"] == 3 and not parser.holding


def test_held_lines_survive_a_restart_and_genuine_lines_among_them_count():
    head, forged_first, rest = injection(b"x\n" + b"\n".join(FORGED) + b"\ny").split(b"\n", 2)
    first = Parser("distribution")
    tally = Tally()
    first.feed((TEXT_ANON[0] + "\n").encode() + head + b"\n" + forged_first + b"\n" + (TEXT_GOOD + "\n").encode(),
               tally)
    assert first.holding and tally.requests == 0
    second = Parser("distribution")  # a restart resumes from the saved state
    second.restore(json.loads(json.dumps(first.state())))
    second.feed(rest, tally)  # the rest of the injection, then the tail
    # the genuine good request written between the head and the tail counts; the forged lines do not
    assert (tally.requests, dict(tally.failures), tally.challenges) == (1, {}, 1)
    assert second.errors["injected"] == 3


def test_a_head_without_tail_is_counted_after_release():
    tally, parser = Tally(), Parser("distribution")
    parser.feed(b"127.0.0.1 - x\n" + (TEXT_GOOD + "\n").encode(), tally)
    assert parser.holding and tally.requests == 0
    parser.release(tally)
    assert tally.requests == 1 and not parser.holding


def test_a_consistent_access_line_with_a_user_is_just_an_access_line():
    line = injection(b'a msg="authorized request" b')
    tally, parser = Tally(), Parser("distribution")
    parser.feed(line + (TEXT_GOOD + "\n").encode(), tally)
    assert tally.requests == 1 and not parser.holding


def test_client_address_connection_uses_only_the_peer_address():
    warn = TEXT_BAD[1]
    assert parse_distribution(warn).client == "127.0.0.1"
    assert parse_distribution(warn, "connection").client == ""  # remoteaddr comes from X-Forwarded-For
    assert parse_harbor_core(HARBOR_BASIC, "connection")[0].client == ""
    assert parse_nginx(NGINX[1], "connection").client == "10.1.2.4"  # $remote_addr is the peer
    tally = Tally()
    Parser("distribution", breakdown=True, client_source="connection").feed(("\n".join(TEXT_BAD) + "\n").encode(),
                                                                            tally)
    assert dict(tally.failures) == {"bad_credentials": 1} and not tally.clients
