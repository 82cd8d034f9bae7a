"""Harbor's cron expressions, evaluated as Harbor evaluates them.

Harbor parses every schedule (GC, audit-log purge, scan-all, replication, tag retention) with
robfig/cron v3 and the fields ``Second | Minute | Hour | Dom | Month | Dow``
(goharbor/harbor ``src/common/utils/utils.go: CronParser``): six fields, **seconds first**, no
``@daily`` descriptors, and its job service fires them in UTC (``src/jobservice/period/enqueuer.go``).
This module follows robfig/cron v3.0.1 ``parser.go`` and ``spec.go`` (``Next``) exactly, UTC only:

- a field is a comma list of ``*``/``?``, ``N``, ``N-M`` and ``.../step``; ``N/step`` means
  ``N-max/step``; months and weekdays also take names (``jan``, ``mon``); weekdays are 0-6;
- day of month and day of week: if either field has a ``*`` (or ``?``) not stepped by more than
  1, both must match; if both are restricted, either may (``0 0 0 1,15 * sun`` fires on the
  1st, the 15th and every Sunday);
- ``next`` returns the first time strictly after the given one, or None if none comes within
  five years (``0 0 0 30 feb *``).

A library was not used: croniter and its kin put seconds last and follow Vixie cron's
day-of-month/day-of-week rule, which differs from robfig's for stepped stars (``*/2``).
A ``TZ=``/``CRON_TZ=`` prefix (robfig accepts one; Harbor's UI never writes one) is refused,
so a time is never silently evaluated in the wrong zone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC

_INT = re.compile(r"[+-]?[0-9]{1,9}")
_MONTHS = {name: i + 1 for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name for messages, min, max, names)
_FIELDS = (("second", 0, 59, None), ("minute", 0, 59, None), ("hour", 0, 23, None),
           ("day of month", 1, 31, None), ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _WEEKDAYS))
_LAST_YEAR = 9999 - 6  # datetime's range, less the five years Next looks ahead


class CronError(ValueError):
    """The expression is not one Harbor's cron parser accepts (the message says why)."""


def _number(text: str, names: dict[str, int] | None, field: str, expr: str) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    if not _INT.fullmatch(text):
        raise CronError(f"{field}: {expr[:20]!r} is not a number" if text == expr else
                        f"{field}: {text[:20]!r} in {expr[:20]!r} is not a number")
    value = int(text)
    if value < 0:
        raise CronError(f"{field}: negative number {value} not allowed")
    return value


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it counts as a star for the day rule."""
    field, low, high, names = _FIELDS[index]
    values: set[int] = set()
    star = False
    for expr in (piece for piece in text.split(",") if piece):
        range_and_step = expr.split("/")
        low_and_high = range_and_step[0].split("-")
        extra = False
        if low_and_high[0] in ("*", "?"):
            start, end, extra = low, high, True
        else:
            start = _number(low_and_high[0], names, field, expr)
            if len(low_and_high) == 1:
                end = start
            elif len(low_and_high) == 2:
                end = _number(low_and_high[1], names, field, expr)
            else:
                raise CronError(f"{field}: too many hyphens in {expr[:20]!r}")
        step = 1
        if len(range_and_step) == 2:
            step = _number(range_and_step[1], None, field, expr)
            if len(low_and_high) == 1:
                end = high  # "N/step" means "N-max/step"
            if step > 1:
                extra = False
        elif len(range_and_step) > 2:
            raise CronError(f"{field}: too many slashes in {expr[:20]!r}")
        if start < low:
            raise CronError(f"{field}: {start} is below the minimum {low}")
        if end > high:
            raise CronError(f"{field}: {end} is above the maximum {high}")
        if start > end:
            raise CronError(f"{field}: range {start}-{end} runs backwards")
        if step == 0:
            raise CronError(f"{field}: a step must be positive")
        values.update(range(start, end + 1, step))
        star = star or extra
    return frozenset(values), star


@dataclass(frozen=True)
class Cron:
    """A parsed Harbor cron expression (see the module docstring)."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday, as in Go
    days_star: bool
    weekdays_star: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        spec = text.strip()
        if not spec:
            raise CronError("the expression is empty")
        if spec.startswith(("TZ=", "CRON_TZ=")):
            raise CronError("a time-zone prefix (TZ=...) is not supported; Harbor runs its schedules in UTC")
        if spec.startswith("@"):
            raise CronError("descriptors such as @daily are not accepted by Harbor's cron parser")
        fields = spec.split()
        if len(fields) != 6:
            raise CronError(f"expected 6 fields (second minute hour day-of-month month day-of-week), found "
                            f"{len(fields)}")
        parsed = [_field(f, i) for i, f in enumerate(fields)]
        return cls(spec, parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], parsed[4][0], parsed[5][0],
                   parsed[3][1], parsed[5][1])

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.weekday() + 1) % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def next(self, after: float) -> float | None:
        """The first time (Unix seconds) the schedule fires strictly after ``after``; None within five years."""
        if not math.isfinite(after) or not -62135596800 < after < 253402300799:
            return None
        try:
            return self._next(datetime.fromtimestamp(math.floor(after), UTC) + timedelta(seconds=1))
        except (OverflowError, ValueError):  # past the year 9999
            return None

    def _next(self, t: datetime) -> float | None:
        """robfig/cron v3 ``SpecSchedule.Next`` from ``t`` (the upcoming second), in UTC."""
        if t.year > _LAST_YEAR:
            return None
        added = False
        year_limit = t.year + 5
        while t.year <= year_limit:
            wrapped = False
            while t.month not in self.months:
                if not added:
                    added = True
                    t = t.replace(day=1, hour=0, minute=0, second=0)
                t = t.replace(year=t.year + 1, month=1) if t.month == 12 else t.replace(month=t.month + 1)
                if t.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(t):
                if not added:
                    added = True
                    t = t.replace(hour=0, minute=0, second=0)
                t += timedelta(days=1)
                if t.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            for unit, values, attr in ((timedelta(hours=1), self.hours, "hour"),
                                       (timedelta(minutes=1), self.minutes, "minute"),
                                       (timedelta(seconds=1), self.seconds, "second")):
                while getattr(t, attr) not in values:
                    if not added:
                        added = True
                        if attr == "hour":
                            t = t.replace(minute=0, second=0)
                        elif attr == "minute":
                            t = t.replace(second=0)
                    t += unit
                    if getattr(t, attr) == 0:
                        wrapped = True
                        break
                if wrapped:
                    break
            if wrapped:
                continue
            return t.timestamp()
        return None

    def period(self, after: float) -> float | None:
        """Seconds between the first two runs after ``after`` (the schedule's period there)."""
        first = self.next(after)
        second = self.next(first) if first is not None else None
        return second - first if second is not None else None
