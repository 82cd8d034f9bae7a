"""Rate limits: a front before a real docker-registry announces a falling RateLimit-Remaining (Docker Hub's
headers, tests/fakes/registry_front.py) and answers 429 with an HTTP-date Retry-After; the drill's requests
must keep to what the headers said. The bounds asserted are lower bounds taken from the headers the front
sent (never "faster than"), so a slow machine cannot make them fail."""

from __future__ import annotations

import email.utils
import os
import re
import time

from regwatch.client import RegistryClient
from regwatch.images import build_image, push_image
from tests.drill_helpers import report_of, run_drill
from tests.fakes.registry_front import RegistryFront


def test_retry_after_date_and_falling_remaining_are_honoured(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        push_image(client, "app", "1", build_image([{"a": os.urandom(500)}, {"b": os.urandom(500)}]))
    with RegistryFront(reg.url, referrers=False, ratelimit=(4, 2, 6)) as front:
        proc = run_drill("--backup", "--source", front.url, "--store", tmp_path / "s", "--repo", "app",
                         "--parallel", "1", timeout=120)
        assert proc.returncode == 0, proc.stderr
        seen = [r for r in front.requests if r["path"].startswith("/v2")]
    limited = [i for i, r in enumerate(seen) if r["status"] == 429]
    assert limited, "the front never answered 429: the test did not test anything"
    for i in limited:
        retry_at = email.utils.parsedate_to_datetime(dict(seen[i]["reply"])["Retry-After"]).timestamp()
        assert i + 1 < len(seen) and seen[i + 1]["time"] >= retry_at, (i, seen[i + 1]["time"] - retry_at)
    spent = 0
    for before, after in zip(seen, seen[1:], strict=False):  # consecutive pairs
        headers = dict(before.get("reply") or [])
        remaining = int(headers.get("RateLimit-Remaining", "99;").split(";")[0])
        # spent (0): nothing goes out until the window resets (RateLimit-Reset has whole seconds)
        if before["status"] != 429 and remaining == 0:
            spent += 1
            assert after["time"] - before["time"] >= int(headers["RateLimit-Reset"]) - 1.0
    assert spent  # the budget did run out, and was waited for
    # so the only 429 is the one the headers could not announce (request 6, "another client drained it")
    assert [seen[i]["time"] for i in limited] == [seen[5]["time"]]
    assert report_of(tmp_path / "s")["summary"]["ok"] == 1


def test_max_rps_caps_the_request_rate(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        push_image(client, "app", "1", build_image([{"a": os.urandom(100)}]))
    with RegistryFront(reg.url, referrers=False) as front:
        proc = run_drill("--backup", "--source", front.url, "--store", tmp_path / "s", "--max-rps", "10")
        assert proc.returncode == 0, proc.stderr
        times = sorted(r["time"] for r in front.requests)
    assert len(times) >= 5
    # N requests at <= 10/s take at least (N-1)/10 s: an independent count from the front's own log
    assert times[-1] - times[0] >= (len(times) - 1) / 10 - 0.05


def test_a_drill_ending_on_429_says_when_the_limit_resets(make_registry, tmp_path):
    reg = make_registry()
    with RegistryClient(reg.url) as client:
        push_image(client, "app", "1", build_image([{"a": os.urandom(100)}]))
    with RegistryFront(reg.url, referrers=False, ratelimit=(2, 3600, 0)) as front:
        # 2 requests an hour: pacing would wait an hour, more than the 10 s this run may take
        proc = run_drill("--backup", "--source", front.url, "--store", tmp_path / "s", "--repo", "app",
                         "--timeout", "10s")
        reset = front.window_end
    assert proc.returncode == 1
    host = front.url.split("://")[1]
    [line] = [line for line in proc.stderr.splitlines() if line.startswith(f"{host} rate-limited")]
    # the reset the front announced (RateLimit-Reset, whole seconds) give or take the second it was rounded in
    ok = {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(reset + d)) for d in (-1, 0, 1)}
    match = re.fullmatch(rf"{host} rate-limited the drill \(\d+ request\(s\) refused or not sent\); the limit "
                         r"resets at (.*) \(in \d+ s\); run the drill again after that, or lower --max-rps", line)
    assert match and match.group(1) in ok, (line, ok)
