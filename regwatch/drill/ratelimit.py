"""Pacing the drill's requests to one registry: ``--max-rps``, ``Retry-After`` in both its forms and
``RateLimit-Remaining``.

Interim: the client (regwatch/client.py, the lead's) is getting ``max_rps``, both ``Retry-After``
forms, ``RateLimit-Remaining`` pacing and a ``RateLimited`` error that carries when the limit resets.
Until it has them, ``Pacer.attach`` wraps the client's session so every HTTP attempt (retries and
token fetches included) passes through ``before()`` and ``after()`` here. When the client has them,
this module shrinks to passing ``max_rps`` and reading ``RateLimited.reset_at``.

- ``max_rps``: a token bucket, one request per 1/max_rps seconds, burst 1.
- ``Retry-After`` (RFC 9110 10.2.3): delay-seconds or an HTTP-date. After a 429 or 503 carrying it,
  no request goes out before that moment; a wait longer than ``MAX_WAIT`` is not waited for: the
  request fails and the report says when the limit resets.
- ``RateLimit-Remaining`` / ``RateLimit-Reset`` / ``RateLimit-Limit`` (Docker Hub's ``ratelimit-*``,
  ``76;w=21600``, and the IETF draft's): when what remains falls under ``LOW_WATER`` of the limit, the
  remaining requests are spread over the time to the reset (the window ``w`` when no reset is given),
  unless that means more than ``MAX_SPACING`` between requests (Docker Hub's 6-hour window): then the
  drill spends what is left and, if it runs out, says when the limit resets.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("regwatch.drill")

MAX_WAIT = 300.0
MAX_SPACING = 10.0  # slower than one request per 10 s is no drill: spend the rest, then report the reset
LOW_WATER = 0.2
MIN_LOW = 5


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    now = time.time() if now is None else now
    if value.isdigit():
        return float(int(value[:9]))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(when.timestamp() - now, 0.0)


def _first_number(value: str | None) -> tuple[float | None, float | None]:
    """``76;w=21600`` -> (76, 21600); ``76`` -> (76, None)."""
    if not value:
        return None, None
    head, *params = value.split(";")
    try:
        number = float(head.split(",")[0].strip())
    except ValueError:
        return None, None
    window = None
    for param in params:
        key, _, val = param.strip().partition("=")
        if key == "w":
            try:
                window = float(val)
            except ValueError:
                pass
    return number, window


@dataclass
class LimitState:
    blocked_until: float = 0.0      # wall clock: no request before this (Retry-After)
    spacing: float = 0.0            # seconds between requests while RateLimit-Remaining is low
    limited: int = 0                # 429 answers seen
    last_reset_at: float | None = None


class Pacer:
    """One per registry (source, destination)."""

    def __init__(self, host: str, max_rps: float | None = None):
        self.host = host
        self.interval = 1.0 / max_rps if max_rps else 0.0
        self.state = LimitState()
        self._next = 0.0  # monotonic time of the next allowed request
        self._lock = threading.Lock()
        self.waited = 0.0

    def attach(self, client) -> None:  # noqa: ANN001 - a RegistryClient
        session = client.session
        send = session.request
        pacer = self

        def paced(method, url, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            pacer.before()
            resp = send(method, url, *args, **kwargs)
            pacer.after(resp.status_code, resp.headers)
            return resp

        session.request = paced

    def before(self) -> None:
        with self._lock:
            now_m, now_w = time.monotonic(), time.time()
            wait = max(self._next - now_m, self.state.blocked_until - now_w, 0.0)
            step = max(self.interval, self.state.spacing)
            self._next = max(self._next, now_m + wait) + step
        if wait > 0:
            self.waited += wait
            time.sleep(wait)

    def after(self, status: int, headers) -> None:  # noqa: ANN001 - a case-insensitive mapping
        now = time.time()
        with self._lock:
            st = self.state
            if status in (429, 503):
                delay = parse_retry_after(headers.get("Retry-After"), now)
                if status == 429:
                    st.limited += 1
                if delay is not None:
                    st.last_reset_at = now + delay
                    if delay <= MAX_WAIT:
                        st.blocked_until = max(st.blocked_until, now + delay)
                        if delay > 1:
                            log.warning("drill: %s is rate-limiting; waiting %.0f s (Retry-After: %s)", self.host,
                                        delay, headers.get("Retry-After"))
            remaining, window = _first_number(headers.get("RateLimit-Remaining"))
            if remaining is None:
                return
            limit, lwindow = _first_number(headers.get("RateLimit-Limit"))
            reset, _ = _first_number(headers.get("RateLimit-Reset"))
            horizon = reset if reset is not None else (window or lwindow)
            low = max(MIN_LOW, (limit or 0) * LOW_WATER)
            if remaining <= 0 and horizon:
                if horizon <= MAX_WAIT:
                    st.blocked_until = max(st.blocked_until, now + horizon)
            elif remaining < low and horizon and horizon / remaining <= MAX_SPACING:
                st.spacing = horizon / remaining
            else:
                st.spacing = 0.0

    def describe_reset(self) -> str | None:
        """For the final message when the drill ended on 429s: when the limit resets."""
        st = self.state
        if not st.limited:
            return None
        if st.last_reset_at is None:
            return f"{self.host} answered 429 (rate limited) {st.limited} time(s) without saying when the limit resets"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.last_reset_at))
        left = max(st.last_reset_at - time.time(), 0.0)
        return (f"{self.host} answered 429 (rate limited) {st.limited} time(s); the limit resets at {when} "
                f"(in {left:.0f} s); run the drill again after that, or lower --max-rps")
