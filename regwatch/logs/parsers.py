"""Pure parsers for registry auth logs: a line (or a block of whole lines) in, auth events out.

No I/O here. Each format has a line function (``parse_distribution`` ...) that parses the line
into its fields and returns an ``Event`` or None, and a ``Parser`` that scans blocks of complete
lines and adds their events to a ``Tally``.

Decide on fields, not on text. Every decision is made on what the *server* wrote: the
``level`` and ``msg`` of a logrus line (logfmt or JSON), the level and source file of a
Harbor core line, the status of an access-log line. Values a client sent (User-Agent, path,
username, Host, X-Forwarded-For, X-Request-ID) are data inside those fields: they can contain
any marker text and still never create, hide or reclassify an attempt. A cheap byte search
picks the few lines worth parsing; the decision is always on the parsed field.

What counts (see docs/auth-logs.md for the evidence from a real docker-registry 2.8.2):

* An *attempt* is a request that presented credentials.
* A *failure* is an attempt that was refused; ``reason`` is a small fixed vocabulary.
* A *challenge* is the 401 an anonymous request gets before the client sends credentials:
  normal protocol, neither an attempt nor a failure.

Two things the servers do that a line-at-a-time parser gets wrong:

* Distribution's access log (gorilla ``CombinedLoggingHandler``) writes the username of an
  absolute-form request target (``GET http://user@host/v2/``) unescaped, newlines included, so
  a client can write whole forged lines into the registry's log. The forged lines sit between
  the access line's head (``IP - <user up to the first newline>``) and its tail
  (``<rest of the user> [time] "GET http://<user, percent-encoded>@host/..." ...``), which
  names every byte injected. ``Parser`` holds the lines after such a head until its tail and
  drops exactly the injected ones (``regwatch_auth_log_read_errors_total{reason="injected"}``).
* Harbor core logs a failed robot login up to three times for one request: its ``robot.go``
  and ``robot2.go`` security generators, then ``basic_auth.go``, which tries the same
  credentials as a user. Those lines come in that fixed order, name the same account and are
  seconds apart at most, so such a chain counts once; the client-supplied request id is never
  used to merge lines.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from collections import Counter, OrderedDict
from datetime import datetime
from urllib.parse import unquote, unquote_to_bytes

from regwatch.logs.tally import ATTEMPT, CHALLENGE, FAILURE, REASONS, USER_HINT, Event, Tally

__all__ = ["ATTEMPT", "CHALLENGE", "FAILURE", "USER_HINT", "REASONS", "FORMATS", "Event", "Tally", "Parser",
           "parse_distribution", "parse_harbor_core", "parse_harbor_proxy", "parse_nginx", "sniff", "logfmt"]

FORMATS = ("distribution", "harbor-core", "harbor-proxy", "nginx")
# Where a per-client label comes from: the address the server logged (for Distribution and Harbor
# core taken from X-Forwarded-For, so any client can set it), or the connection's own peer address,
# which only access logs (nginx, Harbor's proxy) carry.
CLIENT_SOURCES = ("logged", "connection")

MAX_LABEL = 128  # a label taken from a request is cut to this many characters


# --------------------------------------------------------------------------- field helpers

_GO_ESCAPE = re.compile(r'\\(?:([abfnrtv\\"\'])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3}))')
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
           "'": "'"}


def _go_unescape(text: str) -> str:
    """The value of a Go ``strconv.Quote`` body (what logrus and ``%q`` write), quotes removed."""
    if "\\" not in text:
        return text

    def one(m: re.Match) -> str:
        simple, hex2, hex4, hex8, octal = m.groups()
        if simple:
            return _SIMPLE[simple]
        code = int(hex2 or hex4 or hex8 or "0", 16) if not octal else int(octal, 8)
        return chr(code) if code <= 0x10FFFF else "\ufffd"

    return _GO_ESCAPE.sub(one, text)


_TOKEN = re.compile(r'([^\s="]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))(?: |$)')


def logfmt(line: str) -> dict[str, str] | None:
    """A logrus text line (``key=value key="quoted \\"value\\""``) as a dict; None if it is not one.

    Strict: the whole line must be ``key=value`` tokens separated by single spaces, and no key
    may repeat (logrus renames a field that clashes with ``msg``/``level`` to ``fields.msg``),
    so a value cannot smuggle in a second ``msg``.
    """
    fields: dict[str, str] = {}
    pos, end = 0, len(line)
    while pos < end:
        m = _TOKEN.match(line, pos)
        if m is None:
            return None
        key, quoted, bare = m.groups()
        if key in fields:
            return None
        fields[key] = _go_unescape(quoted) if quoted is not None else bare
        pos = m.end()
    return fields


def _json_fields(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _ip(value: str) -> str:
    """The IP of ``ip``, ``ip:port``, ``[v6]:port`` or a forwarded-for list's first entry; "" if none."""
    value = value.split(",", 1)[0].strip()
    if value.startswith("["):
        value = value[1:value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


def _label(value: str) -> str:
    return value[:MAX_LABEL]


# --------------------------------------------------------------------------- Docker Distribution

# Suffixes of the one WARN line ``error authorizing context: <challenge>: <suffix>`` written for
# every refused request, in 2.x and 3.x alike (registry/auth/htpasswd and token access controllers).
_DISTRIBUTION_SUFFIXES = (
    ("authentication failure", FAILURE, "bad_credentials"),
    ("invalid token", FAILURE, "invalid_token"),
    ("malformed token", FAILURE, "malformed_token"),
    ("insufficient scope", FAILURE, "insufficient_scope"),
    ("invalid authorization credential", CHALLENGE, ""),
    ("authorization token required", CHALLENGE, ""),
    ("authorization header required", CHALLENGE, ""),
)
_AUTHORIZING = "error authorizing context: "
_AUTHENTICATING = 'error authenticating user "'
_QUOTED_PREFIX = re.compile(r'"((?:[^"\\]|\\.)*)"')


def distribution_fields(line: str) -> dict | None:
    """The fields of a Distribution app-log line (logrus text or JSON formatter), or None."""
    fields = _json_fields(line) if line.startswith("{") else logfmt(line)
    if fields is None or not isinstance(fields.get("msg"), str) or not isinstance(fields.get("level"), str):
        return None
    return fields


def parse_distribution(line: str, client_source: str = "logged") -> Event | None:
    """One line of a Docker Distribution log (logrus text or JSON; access-log lines are ignored).

    * ``level=info msg="authorized request"`` -> an attempt that succeeded.
    * ``level=warning msg="error authorizing context: ...: <suffix>"`` -> a failure or a challenge
      by the suffix of ``msg``. It is the only line counted for a refused request; the ERROR
      ``error authenticating user "<name>": ...`` (2.x) and INFO ``user failed to authenticate``
      (3.1+) lines before it only name the user (``USER_HINT``).

    ``http.request.remoteaddr`` is the first X-Forwarded-For entry when a client sends one, so
    it becomes the client label only with ``client_source="logged"``.
    """
    fields = distribution_fields(line)
    if fields is None:
        return None
    msg, level = fields["msg"], fields["level"]
    request_id = str(fields.get("http.request.id", ""))
    if msg == "authorized request" and level == "info":
        return Event(ATTEMPT, user=_label(str(fields.get("auth.user.name", ""))))
    if msg.startswith(_AUTHORIZING) and level == "warning":
        detail = msg[len(_AUTHORIZING):]
        client = _ip(str(fields.get("http.request.remoteaddr", ""))) if client_source == "logged" else ""
        for suffix, kind, reason in _DISTRIBUTION_SUFFIXES:
            if detail == suffix or detail.endswith(": " + suffix):
                return Event(kind, reason, client=client, request_id=request_id)
        return Event(FAILURE, "other", client=client, request_id=request_id)
    if msg.startswith(_AUTHENTICATING) and level == "error":
        match = _QUOTED_PREFIX.match(msg, len(_AUTHENTICATING) - 1)
        if match:
            return Event(USER_HINT, user=_label(_go_unescape(match.group(1))), request_id=request_id)
    elif msg == "user failed to authenticate" and isinstance(fields.get("username"), str):
        return Event(USER_HINT, user=_label(fields["username"]), request_id=request_id)
    return None


# The gorilla ``CombinedLoggingHandler`` access line Distribution writes beside its app log:
# host - user [time] "request" status size "referer" "user-agent". Everything but the user is
# quoted by gorilla; the user (from the URL's userinfo) is written as it is.
_TIME = r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"
_Q = r'"(?:[^"\\]|\\.)*"'
_ACCESS_TAIL = re.compile(rb"^(.*) \[" + _TIME.encode() + rb'\] "((?:[^"\\]|\\.)*)" \d{3} \d+ ' + _Q.encode() +
                          rb" " + _Q.encode() + rb"$", re.S)
_ACCESS_HEAD = re.compile(rb"^[0-9A-Fa-f.:]+(?:%[\w.-]+)? - ")
# An access line (at a line start) whose user is not "-": one regex pass over a block finds them all.
_USER_ACCESS_LINE = re.compile(rb"\n[0-9A-Fa-f.:]+(?:%[\w.-]+)? - (?!- \[)")
_ABSOLUTE = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_GORILLA_UNQUOTE = re.compile(rb'\\(["\\])')


def _target_username(request: bytes) -> bytes | None:
    """The (percent-decoded) username of an absolute-form request target in a quoted request line."""
    parts = _GORILLA_UNQUOTE.sub(rb"\1", request).split(b" ")
    if len(parts) < 2:
        return None
    match = _ABSOLUTE.match(parts[1])
    if not match or b"@" not in match.group(1):
        return None
    userinfo = match.group(1).rsplit(b"@", 1)[0]
    return unquote_to_bytes(userinfo.split(b":", 1)[0])


def access_user_part(line: bytes) -> bytes | None:
    """For an access line with a user other than ``-``: what follows ``host - `` (else None)."""
    head = _ACCESS_HEAD.match(line)
    if head is None or line.startswith(b"- [", head.end()):
        return None
    return line[head.end():]


def is_consistent_access_line(line: bytes) -> bool:
    """A complete access line whose user is exactly the username in its request target."""
    rest = access_user_part(line)
    if rest is None:
        return True
    tail = _ACCESS_TAIL.match(rest)
    return tail is not None and _target_username(tail.group(2)) == tail.group(1)


def injected_by(head_user: bytes, line: bytes) -> list[bytes] | None:
    """If ``line`` is the tail of the access line whose head carried ``head_user``: the injected lines."""
    tail = _ACCESS_TAIL.match(line)
    if tail is None:
        return None
    username = _target_username(tail.group(2))
    if username is None or b"\n" not in username:
        return None
    segments = username.split(b"\n")
    if segments[0] != head_user or segments[-1] != tail.group(1):
        return None
    return segments[1:-1]


# --------------------------------------------------------------------------- Harbor core

# ``<RFC3339> [LEVEL] [/path/file.go:N][k="v" ...]: message`` (src/lib/log), optionally behind an
# rsyslog prefix (``Feb 27 10:26:40 172.20.0.1 core[1682]: ``) or a CRI one (``<time> stdout F ``).
# Everything up to ``:N]`` is written by Harbor; the ``[k="v"]`` fields (client IP, request id,
# user agent) are client data, written unescaped.
_HARBOR_LINE = re.compile(r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.-]+(?:\[\d+\])?: "
                          r"|\S+ std(?:out|err) [FP] )?"
                          r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) "
                          r"\[(DEBUG|INFO|WARNING|ERROR|FATAL)\] \[(/[^\]\[:]+):\d+\]")
_ROBOT_MESSAGES = (
    ("failed to authenticate robot account: ", "bad_credentials"),
    ("failed to authenticate deactivated robot account: ", "robot_disabled"),
    ("failed to authenticate disabled robot account: ", "robot_disabled"),
    ("the robot account is expired: ", "robot_expired"),
)
# The security generators that log a failure, in the order Harbor runs them for one request.
HARBOR_STAGES = {"robot.go": 0, "robot2.go": 1, "basic_auth.go": 2}
_CLIENT_IP = re.compile(r'\[client IP="([^"]*)"')


def _harbor_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def harbor_core_fields(line: str) -> tuple[float | None, str, str, str] | None:
    """(time, level, source file name, the rest after ``:N]``) of a Harbor core line, or None."""
    match = _HARBOR_LINE.match(line)
    if match is None:
        return None
    when, level, path = match.groups()
    return _harbor_time(when), level, posixpath.basename(path), line[match.end():]


def _basic_auth_user(rest: str) -> str:
    # ``failed to authenticate user:%s, error:%v`` (2.2+) or ``failed to authenticate %s: %v``. The
    # fields before the message are client data, so take the last occurrence: a Basic username can
    # hold no ":" and therefore no "]: failed to authenticate" of its own.
    at = rest.rfind("]: failed to authenticate ")
    start = at + 3 if at >= 0 else (2 if rest.startswith(": failed to authenticate ") else -1)
    if start < 0:
        return ""
    name = rest[start + len("failed to authenticate "):]
    name = name.removeprefix("user:")
    name = name.split(":", 1)[0]
    for ending in (", error", " error"):
        if name.endswith(ending):
            name = name[: -len(ending)]
            break
    return _label(name.strip())


def parse_harbor_core(line: str, client_source: str = "logged") -> tuple[Event, int, float | None] | None:
    """One line of Harbor core's log: (failure event, security stage, time) or None.

    The decision is on what Harbor wrote before any client data: the level and the source
    file. ERROR lines of the security generators ``robot.go``/``robot2.go`` (the reason from
    their message, whose only variable part is an existing robot's name) and ``basic_auth.go``
    (whose only ERROR is a failed login) are failures; ``core/controllers/base.go``'s
    ``Error occurred in UserLogin: Failed to authenticate`` is a failed UI login. The stage
    (``HARBOR_STAGES``, or -1) lets ``Parser`` merge the chain one robot login writes. Harbor
    logs no line for a good login: this format has failures only.
    """
    parsed = harbor_core_fields(line)
    if parsed is None:
        return None
    when, level, source, rest = parsed
    if level != "ERROR":
        return None
    client = ""
    if client_source == "logged" and (m := _CLIENT_IP.match(rest)):
        client = _ip(m.group(1))  # X-Forwarded-For (Harbor's TRUE_CLIENT_IP_HEADER), else the peer
    if source == "basic_auth.go":
        return Event(FAILURE, "bad_credentials", user=_basic_auth_user(rest), client=client), 2, when
    if source in ("robot.go", "robot2.go"):
        at = rest.rfind("]: ")
        message = rest[at + 3:] if at >= 0 else rest.removeprefix(": ")
        for prefix, reason in _ROBOT_MESSAGES:
            if message.startswith(prefix):
                return Event(FAILURE, reason, user=_label(message[len(prefix):]), client=client), \
                    HARBOR_STAGES[source], when
        return None  # "failed to list robots": a database error, not a login
    if source == "base.go" and rest.startswith(": Error occurred in UserLogin: Failed to authenticate"):
        return Event(FAILURE, "bad_credentials"), -1, when
    return None


# --------------------------------------------------------------------------- access logs

# nginx escapes '"', '\' and bytes outside 32..126 in every variable (\xHH), so a quote in these
# lines is always structural; $remote_user may still hold spaces and brackets, so it is matched
# lazily up to the one `` [time] "`` that can follow it.
_COMBINED = re.compile(r'^(\S+) - (.*?) \[' + _TIME + r'\] "((?:[^"\\]|\\.)*)" (\d{3}) (?:\d+|-) ' + _Q + " " + _Q +
                       r"(?: .*)?$")
# Harbor's proxy ``timed_combined``: $remote_addr - "$request" $status $body_bytes_sent "$http_referer"
# "$http_user_agent" $request_time $upstream_response_time $pipe, behind an rsyslog or ``[time]:`` prefix.
_HARBOR_PROXY = re.compile(r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ [\w.-]+(?:\[\d+\])?: |\[[^\]]*\]:)?"
                           r'(\S+) - "((?:[^"\\]|\\.)*)" (\d{3}) (?:\d+|-) ' + _Q + " " + _Q + r" \S+ .+ [p.]$")
_LOGIN_PATHS = ("/service/token", "/c/login")
_REGISTRY_PREFIXES = ("/v2/", "/v1/", "/service/token", "/c/login")


def request_path(request: str) -> str:
    """The path of a logged request line, normalised as nginx does before it picks a location:
    query dropped, %XX decoded, ``//`` merged, ``.``/``..`` resolved. So ``//v2/`` and
    ``/service/%74oken`` are what nginx and the registry see, not a way around a path check."""
    parts = request.split(" ")
    if len(parts) < 2:
        return ""
    target = parts[1].split("?", 1)[0]
    if "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    path = unquote(target.replace("\\x", "%"))
    if not path.startswith("/"):
        return ""
    normal = posixpath.normpath(re.sub("/+", "/", path))
    return normal + "/" if path.endswith("/") and normal != "/" else normal


def _is_registry_path(path: str) -> bool:
    return path == "/v2" or path.startswith(_REGISTRY_PREFIXES)


def parse_harbor_proxy(line: str, client_source: str = "logged") -> Event | None:
    """One line of Harbor's nginx ``proxy.log``.

    Credentials are checked at ``/service/token`` (docker login, token requests) and
    ``/c/login`` (the UI): a request there is an attempt, a 401 there a failure. A 401 on
    ``/v2/`` is counted as a challenge: this log cannot show whether the request carried a
    token, and every docker client's first request gets exactly that 401. ``$remote_addr`` is
    the connection's peer, so the client label is the same for both ``client_source`` values.
    """
    match = _HARBOR_PROXY.match(line)
    if not match:
        return None
    client, request, status = match.groups()
    client = _ip(client)
    path = request_path(request)
    if path.startswith(_LOGIN_PATHS):
        return Event(FAILURE, "bad_credentials", client=client) if status == "401" else Event(ATTEMPT)
    if status == "401" and (path == "/v2" or path.startswith("/v2/")):
        return Event(CHALLENGE, client=client)
    return None


def parse_nginx(line: str, client_source: str = "logged") -> Event | None:
    """One line of an nginx/ingress ``combined`` access log in front of any registry.

    nginx fills ``$remote_user`` from a Basic ``Authorization`` header, so a request to the
    registry API with a user there presented credentials: an attempt, and with status 401 a
    failure. 401s without a user are challenges. Bearer-token requests show no user: with token
    auth, put this source in front of the token server, where clients send Basic credentials.
    """
    match = _COMBINED.match(line)
    if not match:
        return None
    client, user, request, status = match.groups()
    if not _is_registry_path(request_path(request)):
        return None
    client = _ip(client)
    if user == "-":
        return Event(CHALLENGE, client=client) if status == "401" else None
    if status == "401":
        return Event(FAILURE, "bad_credentials", user=_label(user), client=client)
    return Event(ATTEMPT, user=_label(user))


LINE_PARSERS = {
    "distribution": parse_distribution,
    "harbor-core": parse_harbor_core,
    "harbor-proxy": parse_harbor_proxy,
    "nginx": parse_nginx,
}


# --------------------------------------------------------------------------- sniffing

_SNIFFERS = (
    ("distribution", lambda line: (line.startswith(("time=", "level=")) or line.startswith("{"))
     and distribution_fields(line) is not None),
    ("harbor-core", lambda line: harbor_core_fields(line) is not None),
    ("nginx", lambda line: _COMBINED.match(line) is not None),
    ("harbor-proxy", lambda line: _HARBOR_PROXY.match(line) is not None),
)


def sniff(lines: list[str]) -> str | None:
    """The format most of ``lines`` look like, or None if none matches any.

    A Distribution log mixes logrus lines and combined access lines; the logrus lines decide.
    """
    votes: Counter = Counter()
    for line in lines:
        for name, test in _SNIFFERS:
            if test(line):
                votes[name] += 1
                break
    if votes["distribution"]:
        return "distribution"
    return votes.most_common(1)[0][0] if votes else None


# --------------------------------------------------------------------------- block scanning

# Go's HTTP server refuses a request line plus headers over 1 MiB (+4 KiB), so no tail can come
# after more than this many held bytes: past it, what was held is counted as it is.
HOLD_LIMIT = (1 << 20) + (64 << 10)
# A Harbor robot-login chain is written within one request; lines further apart are not one chain.
CHAIN_SECONDS = 30.0
CHAIN_LINES = 10_000
MAX_CHAINS = 1024


class Parser:
    """Scans blocks of complete lines of one format and adds the events to a ``Tally``.

    A parser keeps a little bounded state across blocks: the user a request's ERROR line named
    (to attribute the failure counted on its WARN line), Harbor's open robot-login chains, and
    the lines held after an injecting access-log head. ``state()``/``restore()`` carry the last
    two through a restart, saved with the positions they belong to.
    """

    def __init__(self, fmt: str, breakdown: bool = False, client_source: str = "logged"):
        if fmt not in LINE_PARSERS:
            raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
        if client_source not in CLIENT_SOURCES:
            raise ValueError(f"unknown client source {client_source!r}; use one of {', '.join(CLIENT_SOURCES)}")
        self.format = fmt
        self.breakdown = breakdown
        self.client_source = client_source
        self.needles = _NEEDLES[fmt]
        self._hints: OrderedDict[str, str] = OrderedDict()
        self._chains: OrderedDict[int, tuple[str, int, float | None, int]] = OrderedDict()  # id: name, stage, t, line
        self._chain_ids = 0
        self._line_no = 0
        self._held: list[bytes] | None = None  # lines after an injecting access-log head
        self._held_user = b""
        self._held_bytes = 0
        self.errors: Counter = Counter()  # "injected" lines dropped

    # ------------------------------------------------------------------ feeding

    def feed(self, block: bytes, tally: Tally) -> None:
        """Count the complete lines of ``block`` (which ends with a newline) into ``tally``."""
        tally.lines += block.count(b"\n")
        if b"\x00" in block:
            tally.binary_lines += sum(1 for line in block.split(b"\n") if b"\x00" in line)
        if self.format == "distribution":
            self._feed_distribution(block, tally)
        elif self.needles is None:
            for raw in block.split(b"\n"):
                if raw:
                    self._handle(raw, tally)
        else:
            self._scan(block, self.needles, tally)

    @property
    def holding(self) -> bool:
        return self._held is not None

    def release(self, tally: Tally) -> None:
        """Count held lines as they are (their tail never came; e.g. the writer died mid-line)."""
        if self._held is None:
            return
        held, self._held, self._held_bytes = self._held, None, 0
        if held:
            self._feed_distribution(b"\n".join(held) + b"\n", tally)

    def _feed_distribution(self, block: bytes, tally: Tally) -> None:
        while block:
            if self._held is not None:
                block = self._hold(block, tally)
                continue
            head, in_users = self._find_head(block)
            if head is None:
                self._count_distribution(block, tally, in_users)
                return
            start, end = head
            if start:
                self._count_distribution(block[:start], tally, in_users)
            self._held, self._held_bytes = [], 0
            self._held_user = access_user_part(block[start:end]) or b""
            block = block[end + 1:]

    @staticmethod
    def _find_head(block: bytes) -> tuple[tuple[int, int] | None, int]:
        """(start, end) of the first access line whose user part does not match its own request, and how
        often the ``authorized request`` marker occurs in the user parts of the access lines before it."""
        in_users = 0
        starts = [m.start() + 1 for m in _USER_ACCESS_LINE.finditer(block)]
        if _ACCESS_HEAD.match(block) and not block.startswith(b"- [", _ACCESS_HEAD.match(block).end()):
            starts.insert(0, 0)
        for start in starts:  # usually none: every access line has the user "-"
            end = block.find(b"\n", start)
            line = block[start:end]
            if not is_consistent_access_line(line):
                return (start, end), in_users
            in_users += line.count(b' msg="authorized request"') + line.count(b'"msg":"authorized request"')
        return None, in_users

    def _hold(self, block: bytes, tally: Tally) -> bytes:
        """Hold lines until the injecting access line's tail; return what follows it (or b"")."""
        assert self._held is not None  # noqa: S101 - type narrowing: only called while lines are held
        pos = 0
        while pos < len(block):
            end = block.find(b"\n", pos)
            line = block[pos:end]
            pos = end + 1
            injected = injected_by(self._held_user, line)
            if injected is not None:
                held, self._held, self._held_bytes = self._held, None, 0
                for fake in injected:
                    if fake in held:
                        held.remove(fake)
                        self.errors["injected"] += 1
                if held:
                    self._feed_distribution(b"\n".join(held) + b"\n", tally)
                return block[pos:]
            self._held.append(line)
            self._held_bytes += len(line) + 1
            if self._held_bytes > HOLD_LIMIT:
                self.release(tally)
                return block[pos:]
        return b""

    def _count_distribution(self, block: bytes, tally: Tally, in_users: int) -> None:
        if self.breakdown:
            self._scan(block, self.needles, tally)
            return
        # The fast path: most relevant lines are ``authorized request`` lines, counted by C code.
        # logrus quotes and escapes every value, so this exact byte sequence is only ever its own
        # msg field, except in the user part of an access line (``in_users``, found by _find_head).
        tally.requests += block.count(b' msg="authorized request"') + block.count(b'"msg":"authorized request"') - \
            in_users
        # Without the breakdown the user hints are not needed: only the refused-request lines are parsed.
        # Text lines take a shortcut that still decides on the parsed msg field: the field at its place
        # (``time="..." level=warning msg="..."`` at the line's start, as logrus writes it), its quoted
        # value read to its closing quote; JSON lines go through json.loads.
        pos = block.find(_WARN_TEXT)
        while pos >= 0:
            start = block.rfind(b"\n", 0, pos) + 1
            end = block.find(b"\n", pos)
            event = _warn_text_event(block[start:end], pos - start)
            if event is None:
                event = parse_distribution(block[start:end].decode("utf-8", "replace"), self.client_source)
            if event is not None and event.kind != USER_HINT:
                tally.add(event, False)
            pos = block.find(_WARN_TEXT, end)
        self._scan(block, (b'"msg":"error authorizing context: ',), tally)

    def _scan(self, block: bytes, needles: tuple[bytes, ...], tally: Tally) -> None:
        lines: dict[int, bytes] = {}
        for needle in needles:
            pos = block.find(needle)
            while pos >= 0:
                start = block.rfind(b"\n", 0, pos) + 1
                end = block.find(b"\n", pos)
                lines[start] = block[start:end]
                pos = block.find(needle, end)
        if self.format == "harbor-core":
            # chains are matched by line distance: count the lines between the ones parsed
            last = 0
            for start in sorted(lines):
                self._line_no += block.count(b"\n", last, start)
                last = start
                self._handle(lines[start], tally)
            self._line_no += block.count(b"\n", last)
            return
        for start in sorted(lines):
            self._handle(lines[start], tally)

    def _handle(self, raw: bytes, tally: Tally) -> None:
        line = raw.decode("utf-8", "replace")
        if self.format == "harbor-core":
            parsed = parse_harbor_core(line, self.client_source)
            if parsed is not None and self._harbor_new(*parsed):
                tally.add(parsed[0], self.breakdown)
            return
        event = LINE_PARSERS[self.format](line, self.client_source)
        if event is None:
            return
        if event.kind == USER_HINT:
            if event.request_id:
                self._hints[event.request_id] = event.user
                while len(self._hints) > 256:
                    self._hints.popitem(last=False)
            return
        if event.request_id and event.kind == FAILURE:
            user = self._hints.pop(event.request_id, "")
            if user and not event.user:
                event = Event(event.kind, event.reason, user, event.client, event.request_id)
        if self.format == "distribution" and not self.breakdown and event.kind == ATTEMPT:
            return  # already counted by the fast path
        tally.add(event, self.breakdown)

    def _harbor_new(self, event: Event, stage: int, when: float | None) -> bool:
        """False if this line continues an open robot-login chain (the same request, logged again)."""
        if stage < 0:
            return True
        for chain_id, (name, last_stage, t, line_no) in list(self._chains.items()):
            too_old = self._line_no - line_no > CHAIN_LINES or (
                when is not None and t is not None and abs(when - t) > CHAIN_SECONDS)
            if too_old:
                del self._chains[chain_id]
            elif name == event.user and last_stage < stage:
                if stage == HARBOR_STAGES["basic_auth.go"]:
                    del self._chains[chain_id]
                else:
                    self._chains[chain_id] = (name, stage, when, self._line_no)
                return False
        if stage < HARBOR_STAGES["basic_auth.go"]:
            self._chain_ids += 1
            self._chains[self._chain_ids] = (event.user, stage, when, self._line_no)
            while len(self._chains) > MAX_CHAINS:
                self._chains.popitem(last=False)
        return True

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict:
        """What must survive a restart together with the positions it was read up to."""
        state: dict = {}
        if self._chains:
            state["chains"] = [[name, stage, t, self._line_no - line_no] for name, stage, t, line_no in
                               self._chains.values()]
        if self._held is not None:
            state["held"] = [line.decode("latin-1") for line in self._held]
            state["held_user"] = self._held_user.decode("latin-1")
        return state

    def restore(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise ValueError("'parser' must be a mapping")
        for entry in state.get("chains", [])[-MAX_CHAINS:]:
            name, stage, t, age = entry
            if not (isinstance(name, str) and type(stage) is int and type(age) is int and
                    (t is None or isinstance(t, (int, float)))):
                raise ValueError("a saved robot-login chain is malformed")
            self._chain_ids += 1
            self._chains[self._chain_ids] = (name, stage, t, -age)
        held = state.get("held")
        if held is not None:
            if not isinstance(held, list) or not all(isinstance(line, str) for line in held) or \
                    not isinstance(state.get("held_user"), str):
                raise ValueError("saved held lines are malformed")
            self._held = [line.encode("latin-1") for line in held]
            self._held_user = state["held_user"].encode("latin-1")
            self._held_bytes = sum(len(line) + 1 for line in self._held)


_REFUSED_NEEDLES = (b"error authorizing context: ", b"error authenticating user", b"user failed to authenticate")
_WARN_TEXT = b' level=warning msg="error authorizing context: '
_QUOTED_AT = re.compile(rb'"((?:[^"\\\n]|\\.)*)"(?: |$)')


def _warn_text_event(line: bytes, at: int) -> Event | None:
    """The event of a logrus text WARN line whose msg field starts at ``at`` (the space before
    ``level=``), when the line starts exactly ``time="<no quote>" level=warning msg="``; None to
    let the full parser decide."""
    if not line.startswith(b'time="') or line.find(b'"', 6) != at - 1:
        return None
    quoted = _QUOTED_AT.match(line, at + len(b" level=warning msg="))
    if quoted is None:
        return None
    msg = quoted.group(1).decode("utf-8", "replace")
    detail = _go_unescape(msg)[len(_AUTHORIZING):]
    for suffix, kind, reason in _DISTRIBUTION_SUFFIXES:
        if detail == suffix or detail.endswith(": " + suffix):
            return Event(kind, reason)
    return Event(FAILURE, "other")
_NEEDLES: dict[str, tuple[bytes, ...] | None] = {
    "distribution": (b"authorized request",) + _REFUSED_NEEDLES,
    "harbor-core": (b"basic_auth.go:", b"robot.go:", b"robot2.go:", b"Error occurred in UserLogin"),
    "harbor-proxy": None,
    "nginx": None,
}
