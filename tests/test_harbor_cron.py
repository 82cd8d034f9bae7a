"""Harbor's cron evaluator (regwatch/collectors/harbor/cron.py) against robfig/cron v3.0.1, the parser
Harbor uses: the expected times are robfig's own test table (``spec_test.go``: TestNext, TestActivation,
without the time-zone cases), read in UTC, plus a brute-force search over every hour as an independent
check of the search itself. Fast tier: no server, no sleep."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, UTC

import pytest

from regwatch.collectors.harbor.cron import Cron, CronError


def ts(text: str) -> float:
    for fmt in ("%a %b %d %H:%M:%S %Y", "%a %b %d %H:%M %Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise AssertionError(text)


# robfig/cron v3.0.1 spec_test.go TestNext (the cases without TZ=).
NEXT = [
    ("Mon Jul 9 14:45 2012", "0 0/15 * * * *", "Mon Jul 9 15:00 2012"),
    ("Mon Jul 9 14:59 2012", "0 0/15 * * * *", "Mon Jul 9 15:00 2012"),
    ("Mon Jul 9 14:59:59 2012", "0 0/15 * * * *", "Mon Jul 9 15:00 2012"),
    ("Mon Jul 9 15:45 2012", "0 20-35/15 * * * *", "Mon Jul 9 16:20 2012"),
    ("Mon Jul 9 23:46 2012", "0 */15 * * * *", "Tue Jul 10 00:00 2012"),
    ("Mon Jul 9 23:45 2012", "0 20-35/15 * * * *", "Tue Jul 10 00:20 2012"),
    ("Mon Jul 9 23:35:51 2012", "15/35 20-35/15 * * * *", "Tue Jul 10 00:20:15 2012"),
    ("Mon Jul 9 23:35:51 2012", "15/35 20-35/15 1/2 * * *", "Tue Jul 10 01:20:15 2012"),
    ("Mon Jul 9 23:35:51 2012", "15/35 20-35/15 10-12 * * *", "Tue Jul 10 10:20:15 2012"),
    ("Mon Jul 9 23:35:51 2012", "15/35 20-35/15 1/2 */2 * *", "Thu Jul 11 01:20:15 2012"),
    ("Mon Jul 9 23:35:51 2012", "15/35 20-35/15 * 9-20 * *", "Wed Jul 10 00:20:15 2012"),
    ("Mon Jul 9 23:35:51 2012", "15/35 20-35/15 * 9-20 Jul *", "Wed Jul 10 00:20:15 2012"),
    ("Mon Jul 9 23:35 2012", "0 0 0 9 Apr-Oct ?", "Thu Aug 9 00:00 2012"),
    ("Mon Jul 9 23:35 2012", "0 0 0 */5 Apr,Aug,Oct Mon", "Tue Aug 1 00:00 2012"),
    ("Mon Jul 9 23:35 2012", "0 0 0 */5 Oct Mon", "Mon Oct 1 00:00 2012"),
    ("Mon Jul 9 23:35 2012", "0 0 0 * Feb Mon", "Mon Feb 4 00:00 2013"),
    ("Mon Jul 9 23:35 2012", "0 0 0 * Feb Mon/2", "Fri Feb 1 00:00 2013"),
    ("Mon Dec 31 23:59:45 2012", "0 * * * * *", "Tue Jan 1 00:00:00 2013"),
    ("Mon Jul 9 23:35 2012", "0 0 0 29 Feb ?", "Mon Feb 29 00:00 2016"),
    ("Mon Jul 9 23:35 2012", "0 0 0 30 Feb ?", None),
    ("Mon Jul 9 23:35 2012", "0 0 0 31 Apr ?", None),
]


@pytest.mark.parametrize("start, spec, expected", NEXT)
def test_next_matches_robfig_cron(start, spec, expected):
    assert Cron.parse(spec).next(ts(start)) == (ts(expected) if expected else None)


# robfig/cron v3.0.1 spec_test.go TestActivation: (time, 5-field spec, fires at that time?); seconds 0 prepended.
ACTIVATION = [
    ("Mon Jul 9 15:00 2012", "0/15 * * * *", True), ("Mon Jul 9 15:45 2012", "0/15 * * * *", True),
    ("Mon Jul 9 15:40 2012", "0/15 * * * *", False), ("Mon Jul 9 15:05 2012", "5/15 * * * *", True),
    ("Mon Jul 9 15:20 2012", "5/15 * * * *", True), ("Mon Jul 9 15:50 2012", "5/15 * * * *", True),
    ("Sun Jul 15 15:00 2012", "0/15 * * Jul *", True), ("Sun Jul 15 15:00 2012", "0/15 * * Jun *", False),
    ("Sun Jul 15 08:30 2012", "30 08 ? Jul Sun", True), ("Sun Jul 15 08:30 2012", "30 08 15 Jul ?", True),
    ("Mon Jul 16 08:30 2012", "30 08 ? Jul Sun", False), ("Mon Jul 16 08:30 2012", "30 08 15 Jul ?", False),
    # Both day fields restricted: either may match.
    ("Sun Jul 15 00:00 2012", "* * 1,15 * Sun", True), ("Fri Jun 15 00:00 2012", "* * 1,15 * Sun", True),
    ("Wed Aug 1 00:00 2012", "* * 1,15 * Sun", True), ("Sun Jul 15 00:00 2012", "* * */10 * Sun", True),
    # One has a star: both must match.
    ("Sun Jul 15 00:00 2012", "* * * * Mon", False), ("Mon Jul 9 00:00 2012", "* * 1,15 * *", False),
    ("Sun Jul 15 00:00 2012", "* * 1,15 * *", True), ("Sun Jul 15 00:00 2012", "* * */2 * Sun", True),
]


@pytest.mark.parametrize("when, spec, fires", ACTIVATION)
def test_activation_matches_robfig_cron(when, spec, fires):
    at = ts(when)
    assert (Cron.parse("0 " + spec).next(at - 1) == at) is fires


def test_harbor_presets_and_the_period():
    # What Harbor's UI writes for Hourly, Daily and Weekly (src/portal cron presets).
    t = ts("Wed Jan 3 10:20:30 2024")
    hourly, daily, weekly = (Cron.parse(s) for s in ("0 0 * * * *", "0 0 0 * * *", "0 0 0 * * 0"))
    assert hourly.next(t) == ts("Wed Jan 3 11:00 2024") and hourly.period(t) == 3600
    assert daily.next(t) == ts("Thu Jan 4 00:00 2024") and daily.period(t) == 86400
    assert weekly.next(t) == ts("Sun Jan 7 00:00 2024") and weekly.period(t) == 7 * 86400
    # Strictly after: a run that started at its slot expects the next slot, not itself.
    assert daily.next(ts("Thu Jan 4 00:00 2024")) == ts("Fri Jan 5 00:00 2024")
    assert daily.next(ts("Thu Jan 4 00:00 2024") + 0.75) == ts("Fri Jan 5 00:00 2024")


@pytest.mark.parametrize("spec, message", [
    ("", "the expression is empty"),
    ("0 0 * * *", "expected 6 fields (second minute hour day-of-month month day-of-week), found 5"),
    ("0 0 0 * * * *", "expected 6 fields (second minute hour day-of-month month day-of-week), found 7"),
    ("@daily", "descriptors such as @daily are not accepted by Harbor's cron parser"),
    ("TZ=Europe/Berlin 0 0 0 * * *", "a time-zone prefix (TZ=...) is not supported; Harbor runs its schedules in UTC"),
    ("* 5 j * * *", "hour: 'j' is not a number"),
    ("60 * * * * *", "second: 60 is above the maximum 59"),
    ("0 0 0 0 * *", "day of month: 0 is below the minimum 1"),
    ("0 0 0 * * 7", "day of week: 7 is above the maximum 6"),
    ("0 0 5-2 * * *", "hour: range 5-2 runs backwards"),
    ("0 */0 * * * *", "minute: a step must be positive"),
    ("0 1-2-3 * * * *", "minute: too many hyphens in '1-2-3'"),
    ("0 1/2/3 * * * *", "minute: too many slashes in '1/2/3'"),
    ("0 -5 * * * *", "minute: '' in '-5' is not a number"),
    ("0 ٥ * * * *", "minute: '٥' is not a number"),
    ("0 99999999999 * * * *", "minute: '99999999999' is not a number"),
])
def test_what_harbor_refuses_is_refused_with_the_reason(spec, message):
    with pytest.raises(CronError) as caught:
        Cron.parse(spec)
    assert str(caught.value) == message


def test_names_are_case_insensitive_and_times_out_of_range_have_no_next():
    assert Cron.parse("0 0 12 * JAN-mar MON-fri").next(ts("Sat Mar 30 13:00 2024")) == ts("Wed Jan 1 12:00 2025")
    every = Cron.parse("0 0 * * * *")
    assert every.next(float("nan")) is None and every.next(float("inf")) is None
    assert every.next(1e300) is None and every.next(253402300000.0) is None


def _matches(cron: Cron, t: datetime) -> bool:
    """Whether the schedule fires at ``t``: the rule written out independently of the search."""
    dom, dow = t.day in cron.days, (t.weekday() + 1) % 7 in cron.weekdays
    day = (dom and dow) if (cron.days_star or cron.weekdays_star) else (dom or dow)
    return (day and t.month in cron.months and t.hour in cron.hours and t.minute in cron.minutes
            and t.second in cron.seconds)


def test_the_search_agrees_with_a_brute_force_walk_over_every_hour():
    rng = random.Random(20261202)
    pieces = {"hour": ["*", "3", "*/5", "1-4", "22,2", "7/8"],
              "dom": ["*", "?", "1", "*/2", "13", "29-31", "1,15"],
              "month": ["*", "feb", "2-3", "*/4", "dec", "Jun,Sep"],
              "dow": ["*", "?", "0", "mon-fri", "5", "*/3", "sat"]}
    for _ in range(12):
        spec = " ".join(["0", "0"] + [rng.choice(pieces[k]) for k in ("hour", "dom", "month", "dow")])
        cron = Cron.parse(spec)
        start = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(3 * 8760),
                                                                      minutes=rng.randrange(60))
        got = cron.next(start.timestamp())
        t = start.replace(minute=0, second=0) + timedelta(hours=1)
        limit = datetime(start.year + 6, 1, 1, tzinfo=UTC)
        while t < limit and not _matches(cron, t):
            t += timedelta(hours=1)
        assert got == (t.timestamp() if t < limit else None), spec
