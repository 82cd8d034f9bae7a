"""Pure parsers for registry auth logs: a line (or a block of whole lines) in, auth events out.

No I/O here. Each format has a line function (``parse_distribution`` ...) that returns an
``Event`` or None, and a ``Parser`` that scans a block of complete lines and adds its events
to a ``Tally``. Most lines of a registry log are irrelevant (access-log lines, ``response
completed``...), so a parser first looks for cheap substrings in the whole block with
``bytes.find``/``bytes.count`` (C speed) and runs the line function only on the few lines
that contain one.

What counts (see docs/auth-logs.md for the evidence from a real docker-registry 2.8.2):

* An *attempt* is a request that presented credentials.
* A *failure* is an attempt that was refused; ``reason`` is a small fixed vocabulary.
* A *challenge* is the 401 an anonymous request gets before the client sends credentials:
  normal protocol, neither an attempt nor a failure.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

ATTEMPT, FAILURE, CHALLENGE, USER_HINT = "attempt", "failure", "challenge", "user_hint"

REASONS = ("bad_credentials", "invalid_token", "malformed_token", "insufficient_scope", "robot_disabled",
           "robot_expired", "other")

FORMATS = ("distribution", "harbor-core", "harbor-proxy", "nginx")


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    reason: str = ""
    user: str = ""
    client: str = ""
    request_id: str = ""


@dataclass
class Tally:
    """Counts from parsed lines. ``users``/``clients`` count failures and stay empty unless wanted."""

    requests: int = 0
    failures: Counter = field(default_factory=Counter)
    challenges: int = 0
    lines: int = 0
    binary_lines: int = 0
    users: Counter = field(default_factory=Counter)
    clients: Counter = field(default_factory=Counter)

    def add(self, event: Event, breakdown: bool) -> None:
        if event.kind == ATTEMPT:
            self.requests += 1
        elif event.kind == FAILURE:
            self.requests += 1
            self.failures[event.reason] += 1
            if breakdown:
                if event.user:
                    self.users[event.user] += 1
                if event.client:
                    self.clients[event.client] += 1
        elif event.kind == CHALLENGE:
            self.challenges += 1


# --------------------------------------------------------------------------- helpers


def _field(line: str, key: str) -> str:
    """A logrus field's value from a text (``key=value`` / ``key="v"``) or JSON (``"key":"v"``) line."""
    for prefix in (f' {key}="', f'"{key}":"'):
        start = line.find(prefix)
        if start >= 0:
            start += len(prefix)
            end = start
            while True:
                end = line.find('"', end)
                if end < 0:
                    return line[start:]
                if line[end - 1] != "\\":
                    return line[start:end]
                end += 1
    start = line.find(f" {key}=")
    if start >= 0:
        start += len(key) + 2
        end = line.find(" ", start)
        return line[start:] if end < 0 else line[start:end]
    return ""


def _host(addr: str) -> str:
    """The IP of ``ip:port`` / ``[v6]:port`` (a client label must not carry the ephemeral port)."""
    if addr.startswith("["):
        return addr[1:addr.find("]")] if "]" in addr else addr
    if addr.count(":") == 1:
        return addr.split(":", 1)[0]
    return addr


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
_USER_QUOTED = re.compile(r'error authenticating user \\"((?:[^"\\]|\\.)*)\\"')
_V3_USERNAME = re.compile(r'(?:\busername=|"username":)"?([^"\s]+)')


def parse_distribution(line: str) -> Event | None:
    """One line of a Docker Distribution log (logrus text or JSON formatter; access lines ignored).

    * ``authorized request`` -> an attempt that succeeded.
    * ``error authorizing context: ...: <suffix>`` -> a failure or a challenge by suffix. It is
      the only line counted for a refused request, so the ERROR ``error authenticating user``
      (2.x) and INFO ``user failed to authenticate`` (3.1+) lines that precede it for the same
      request only name the user (``USER_HINT``) and are never counted twice.
    """
    if 'msg="authorized request"' in line or '"msg":"authorized request"' in line:
        return Event(ATTEMPT, user=_field(line, "auth.user.name"))
    at = line.find("error authorizing context: ")
    if at >= 0 and ("msg=" in line[:at] or '"msg":' in line[:at]):
        tail = line[at:]
        request_id = _field(line, "http.request.id")
        client = _host(_field(line, "http.request.remoteaddr"))
        for suffix, kind, reason in _DISTRIBUTION_SUFFIXES:
            if suffix + '"' in tail:
                return Event(kind, reason, client=client, request_id=request_id)
        return Event(FAILURE, "other", client=client, request_id=request_id)
    if "error authenticating user" in line:
        match = _USER_QUOTED.search(line)
        if match:
            return Event(USER_HINT, user=match.group(1), request_id=_field(line, "http.request.id"))
    elif "user failed to authenticate" in line:
        match = _V3_USERNAME.search(line)
        if match:
            return Event(USER_HINT, user=match.group(1), request_id=_field(line, "http.request.id"))
    return None


# --------------------------------------------------------------------------- Harbor core

_HARBOR_REQUEST_ID = re.compile(r'requestID="([^"]+)"')
_HARBOR_CLIENT = re.compile(r'client IP="([^"]+)"')
_HARBOR_USER = re.compile(r"failed to authenticate (?:user:\s*)?([^,:\s]+)")
_HARBOR_ROBOT = re.compile(r"robot account(?: is expired)?: (\S+)")


def parse_harbor_core(line: str) -> Event | None:
    """One line of Harbor core's log (``core.log``, with or without the rsyslog prefix).

    Harbor logs no line for a successful login, so this format yields failures only; pair it
    with the ``harbor-proxy`` source for the request count. One failure per ``requestID``: the
    LDAP ``Failed to bind`` / ``Login failed, locking`` lines of the same request are ignored,
    only the middleware's ``failed to authenticate`` line counts.
    """
    if "the robot account is expired" in line:
        reason = "robot_expired"
    elif "failed to authenticate deactivated robot account" in line:
        reason = "robot_disabled"
    elif "failed to authenticate" in line and "]: failed to authenticate" in line:
        reason = "bad_credentials"
    elif "Error occurred in UserLogin: Failed to authenticate" in line:
        return Event(FAILURE, "bad_credentials")
    else:
        return None
    robot = _HARBOR_ROBOT.search(line) if "robot account" in line else None
    user = robot.group(1) if robot else (m.group(1) if (m := _HARBOR_USER.search(line)) else "")
    request_id = m.group(1) if (m := _HARBOR_REQUEST_ID.search(line)) else ""
    client = m.group(1) if (m := _HARBOR_CLIENT.search(line)) else ""
    return Event(FAILURE, reason, user=user, client=client, request_id=request_id)


# --------------------------------------------------------------------------- access logs

# nginx ``timed_combined`` as Harbor's proxy writes it: no user and no time field (the time is
# in the rsyslog prefix, or a ``[time]:`` prefix on Helm installs), so search, do not anchor.
_HARBOR_PROXY = re.compile(r'(\S+) - "([A-Z]+) (\S+)[^"]*" (\d{3}) ')
# nginx/ingress ``combined``: $remote_addr - $remote_user [$time_local] "$request" $status ...
_COMBINED = re.compile(r'^(\S+) - (\S+) \[[^\]]*\] "([A-Z]+) (\S+)[^"]*" (\d{3}) ')
_LOGIN_PATHS = ("/service/token", "/c/login")
_REGISTRY_PATHS = ("/v2/", "/v2?", "/v2 ", "/service/token", "/c/login", "/v1/")


def parse_harbor_proxy(line: str) -> Event | None:
    """One line of Harbor's nginx ``proxy.log``.

    Credentials are checked at ``/service/token`` (docker login, token requests) and
    ``/c/login`` (the UI): a request there is an attempt, a 401 there a failure. A 401 on
    ``/v2/`` is counted as a challenge: this log cannot show whether the request carried a
    token, and every docker client's first request gets exactly that 401.
    """
    match = _HARBOR_PROXY.search(line)
    if not match:
        return None
    client, _, path, status = match.groups()
    if path.startswith(_LOGIN_PATHS):
        return Event(FAILURE, "bad_credentials", client=client) if status == "401" else Event(ATTEMPT)
    if status == "401" and path.startswith("/v2"):
        return Event(CHALLENGE, client=client)
    return None


def parse_nginx(line: str) -> Event | None:
    """One line of an nginx/ingress ``combined`` access log in front of any registry.

    nginx fills ``$remote_user`` from a Basic ``Authorization`` header, so a request to the
    registry API with a user there presented credentials: an attempt, and with status 401 a
    failure. 401s without a user are challenges. Bearer-token requests show no user: with token
    auth, put this source in front of the token server, where clients send Basic credentials.
    """
    match = _COMBINED.match(line)
    if not match:
        return None
    client, user, _, path, status = match.groups()
    if not path.startswith(_REGISTRY_PATHS) and path != "/v2":
        return None
    if user == "-":
        return Event(CHALLENGE, client=client) if status == "401" else None
    if status == "401":
        return Event(FAILURE, "bad_credentials", user=user, client=client)
    return Event(ATTEMPT, user=user)


LINE_PARSERS = {
    "distribution": parse_distribution,
    "harbor-core": parse_harbor_core,
    "harbor-proxy": parse_harbor_proxy,
    "nginx": parse_nginx,
}


# --------------------------------------------------------------------------- sniffing

_SNIFFERS = (
    ("distribution", re.compile(r'^(time="\S+" level=|\{.*"msg":)')),
    ("harbor-core", re.compile(r'\d{4}-\d\d-\d\dT\S+Z \[(?:DEBUG|INFO|WARNING|ERROR|FATAL)\] \[/')),
    ("nginx", _COMBINED),
    ("harbor-proxy", _HARBOR_PROXY),
)


def sniff(lines: list[str]) -> str | None:
    """The format most of ``lines`` look like, or None if none matches any.

    A Distribution log mixes logrus lines and combined access lines; the logrus lines decide.
    """
    votes: Counter = Counter()
    for line in lines:
        for name, pattern in _SNIFFERS:
            if pattern.search(line):
                votes[name] += 1
                break
    if votes["distribution"]:
        return "distribution"
    return votes.most_common(1)[0][0] if votes else None


# --------------------------------------------------------------------------- block scanning


class Parser:
    """Scans blocks of complete lines of one format and adds the events to a ``Tally``.

    A parser keeps a little state across blocks: the user named by a request's ERROR line
    (to attribute the failure counted on its WARN line) and, for Harbor core, the request ids
    already counted. Both are bounded.
    """

    # Substrings one of which every line that matters contains. None: every line matters.
    needles: tuple[bytes, ...] | None = None

    def __init__(self, fmt: str, breakdown: bool = False):
        if fmt not in LINE_PARSERS:
            raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.format = fmt
        self.parse_line = LINE_PARSERS[fmt]
        self.breakdown = breakdown
        self.needles = _NEEDLES.get(fmt)
        self._hints: OrderedDict[str, str] = OrderedDict()
        self._seen_ids: OrderedDict[str, None] = OrderedDict()

    def feed(self, block: bytes, tally: Tally) -> None:
        """Count the complete lines of ``block`` (which ends with a newline) into ``tally``."""
        tally.lines += block.count(b"\n")
        if b"\x00" in block:
            tally.binary_lines += sum(1 for line in block.split(b"\n") if b"\x00" in line)
        if self.needles is None:
            for raw in block.split(b"\n"):
                if raw:
                    self._handle(raw, tally)
            return
        if self.format == "distribution" and not self.breakdown:
            # The fast path: most relevant lines are ``authorized request`` lines, counted
            # by C code; only the rare refused-request lines go through Python.
            tally.requests += block.count(b'msg="authorized request"') + block.count(b'"msg":"authorized request"')
            self._scan(block, (b"error authorizing context: ",), tally)
            return
        self._scan(block, self.needles, tally)

    def _scan(self, block: bytes, needles: tuple[bytes, ...], tally: Tally) -> None:
        lines: dict[int, bytes] = {}
        for needle in needles:
            pos = block.find(needle)
            while pos >= 0:
                start = block.rfind(b"\n", 0, pos) + 1
                end = block.find(b"\n", pos)
                lines[start] = block[start:end]
                pos = block.find(needle, end)
        for start in sorted(lines):
            self._handle(lines[start], tally)

    def _handle(self, raw: bytes, tally: Tally) -> None:
        event = self.parse_line(raw.decode("utf-8", "replace"))
        if event is None:
            return
        if event.kind == USER_HINT:
            if event.request_id:
                self._hints[event.request_id] = event.user
                while len(self._hints) > 256:
                    self._hints.popitem(last=False)
            return
        if event.request_id and event.kind == FAILURE:
            if self.format == "harbor-core":
                if event.request_id in self._seen_ids:
                    return
                self._seen_ids[event.request_id] = None
                while len(self._seen_ids) > 4096:
                    self._seen_ids.popitem(last=False)
            user = self._hints.pop(event.request_id, "")
            if user and not event.user:
                event = Event(event.kind, event.reason, user, event.client, event.request_id)
        if self.format == "distribution" and not self.breakdown and event.kind == ATTEMPT:
            return  # already counted by the fast path
        tally.add(event, self.breakdown)

    # State that must survive a restart with the positions (so a request split across the
    # save point is still counted once).
    def state(self) -> dict:
        return {"seen_ids": list(self._seen_ids)[-4096:]} if self._seen_ids else {}

    def restore(self, state: dict) -> None:
        for request_id in state.get("seen_ids", [])[-4096:]:
            if isinstance(request_id, str):
                self._seen_ids[request_id] = None


_NEEDLES: dict[str, tuple[bytes, ...] | None] = {
    "distribution": (b"authorized request", b"error authorizing context: ", b"error authenticating user",
                     b"user failed to authenticate"),
    "harbor-core": (b"failed to authenticate", b"Error occurred in UserLogin", b"the robot account is expired"),
    "harbor-proxy": (b"/service/token", b"/c/login", b'" 401 '),
    "nginx": None,
}
