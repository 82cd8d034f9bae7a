"""The pieces of serve's HTTP surface that are pure functions: the landing page, the request-head
parser and the connection cap. No server starts here (serve end to end: tests/test_serve.py)."""

from __future__ import annotations

import resource
import time

import pytest

from regwatch import server
from regwatch.server import _BadRequest, _parse_head, connection_cap, landing

NOW = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC


def row(**job) -> dict:
    base = {"target": "hub", "collector": "distribution", "runs": 1, "success": True, "duration_seconds": 0.25,
            "last_run": NOW - 12, "last_success": NOW - 12, "last_error": ""}
    return {**base, **job}


def rows_of(page: str) -> list[str]:
    return page.split("<th>last error</th></tr>", 1)[1].removesuffix("</table></body></html>").split("</tr>")[:-1]


def test_each_row_says_when_the_collector_last_ran_and_last_succeeded():
    page = landing([row(), row(target="down", success=False, last_run=NOW - 125, last_success=NOW - 7300,
                            last_error="target down: GET /v2/: cannot connect"),
                    row(target="new", collector="storage", runs=0, success=None, last_run=None, last_success=None,
                        duration_seconds=0.0)], NOW)
    assert rows_of(page) == [
        "<tr><td>hub</td><td>distribution</td><td>ok</td><td>2026-05-28 20:26:28 UTC (12 s ago)</td>"
        "<td>2026-05-28 20:26:28 UTC (12 s ago)</td><td>0.25</td><td></td>",
        "<tr><td>down</td><td>distribution</td><td>FAILED</td><td>2026-05-28 20:24:35 UTC (2 min ago)</td>"
        "<td>2026-05-28 18:25:00 UTC (2 h ago)</td><td>0.25</td><td>target down: GET /v2/: cannot connect</td>",
        "<tr><td>new</td><td>storage</td><td>pending</td><td>never</td><td>never</td><td>0.0</td><td></td>",
    ]
    assert "<p>Page rendered 2026-05-28 20:26:40 UTC.</p>" in page
    assert 'href="/metrics"' in page


def test_a_jobs_own_labels_tell_two_probes_of_one_target_apart():
    page = landing([row(collector="probe", image="team/api:1.2.0"), row(collector="probe", image="lib/x:1")], NOW)
    assert [r.split("</td>")[1] for r in rows_of(page)] == ["<td>probe (image=team/api:1.2.0)",
                                                            "<td>probe (image=lib/x:1)"]


def test_every_value_from_outside_is_escaped():
    hostile = '<script>alert("x")</script>&'
    page = landing([row(target=hostile, collector=hostile, last_error=hostile, duration_seconds=hostile)], NOW)
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"
    assert "<script>" not in page
    assert rows_of(page) == [
        f"<tr><td>{escaped}</td><td>{escaped}</td><td>ok</td><td>2026-05-28 20:26:28 UTC (12 s ago)</td>"
        f"<td>2026-05-28 20:26:28 UTC (12 s ago)</td><td>{escaped}</td><td>{escaped}</td>"]


def test_ages_read_in_the_unit_a_person_would_use():
    when = server._when
    assert when(None, NOW) == "never"
    assert when(NOW + 3, NOW).endswith("(0 s ago)")  # a clock step back is not a negative age
    assert when(NOW - 89, NOW).endswith("(89 s ago)")
    assert when(NOW - 600, NOW).endswith("(10 min ago)")
    assert when(NOW - 5 * 3600, NOW).endswith("(5 h ago)")
    assert when(NOW - 3 * 86400, NOW) == time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW - 3 * 86400)) + \
        " (3 d ago)"


@pytest.mark.parametrize(("lines", "method", "path", "keep_alive"), [
    ([b"GET /metrics HTTP/1.1\r\n", b"Host: x\r\n"], "GET", "/metrics", True),
    ([b"GET /metrics?debug=1 HTTP/1.1\r\n", b"Connection: close\r\n"], "GET", "/metrics", False),
    ([b"HEAD http://x:9732/ HTTP/1.1\n"], "HEAD", "/", True),
    ([b"GET / HTTP/1.0\r\n"], "GET", "/", False),
])
def test_request_heads_are_parsed_by_their_fields(lines, method, path, keep_alive):
    request = _parse_head(lines)
    assert (request.method, request.path, request.keep_alive) == (method, path, keep_alive)


@pytest.mark.parametrize(("lines", "status", "message"), [
    ([b"GET /metrics\r\n"], 400, "malformed request line; expected METHOD /path HTTP/1.1"),
    ([b"G3T / HTTP/1.1\r\n"], 400, "malformed request line; expected METHOD /path HTTP/1.1"),
    ([b"GET / HTTP/2.0\r\n"], 505, "regwatch speaks HTTP/1.0 and HTTP/1.1"),
    ([b"GET / HTTP/1.1\r\n", *[b"X: y\r\n"] * 101], 400, "malformed request headers"),
])
def test_bad_request_heads_are_refused_with_a_reason(lines, status, message):
    with pytest.raises(_BadRequest) as info:
        _parse_head(lines)
    assert (info.value.status, str(info.value)) == (status, message)


@pytest.mark.parametrize(("soft", "cap"), [(256, 192), (1024, 512), (20000, 512), (100, 36),
                                           (resource.RLIM_INFINITY, 512)])
def test_the_connection_cap_leaves_descriptors_to_the_rest_of_serve(monkeypatch, soft, cap):
    monkeypatch.setattr(server.resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    assert connection_cap(512) == cap
