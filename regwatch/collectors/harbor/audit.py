"""Harbor audit log: events counted incrementally by ``op_time``, feeding the common auth metrics.

Example exposition::

    regwatch_auth_requests_total{source="harbor"} 120.0
    regwatch_auth_failures_total{reason="bad_credentials",source="harbor"} 3.0
    regwatch_harbor_audit_events_total{operation="pull",target="harbor"} 5400.0
    regwatch_harbor_audit_failed_events_total{operation="delete",target="harbor"} 1.0

Harbor 2.13+ has ``/auditlog-exts`` (with ``operation_result``, and login events: operation
``login`` on resource type ``user``); older ones only ``/audit-logs`` (no result, no logins), so
there only the event counters exist. Each collection asks for events with ``op_time`` from the
high-water mark on, oldest first, and skips events at the mark it has already counted (by id),
so nothing is counted twice; with ``harbor.audit_state_file`` the mark survives restarts.
A fresh start counts only the last ``harbor.audit_lookback`` of history.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, UTC
from pathlib import Path

from prometheus_client.metrics_core import Metric

from regwatch.atomic import write_atomic
from regwatch.collectors.harbor.api import Fields, HarborGroup, NotCollected
from regwatch.families import counter
from regwatch.logs.tally import attempt_families

log = logging.getLogger("regwatch.collectors.harbor")

# Operations Harbor writes; anything else is counted as "other" so the label stays bounded.
OPERATIONS = frozenset({"create", "delete", "update", "pull", "push", "login", "logout"})
# Events read per collection at most; a backlog is worked off over the next collections.
MAX_PAGES = 50
_Q_TIME = "%Y-%m-%d %H:%M:%S"


class AuditState:
    """The high-water mark: the newest ``op_time`` counted and the ids counted at exactly that time."""

    def __init__(self, path: Path | None):
        self.path = path
        self.mark: float | None = None
        self.ids: set[int] = set()
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self.mark, self.ids = float(data["op_time"]), {int(i) for i in data["ids"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable audit state file; starting from the lookback window",
                            extra={"path": str(path), "err": str(exc),
                                   "hint": "delete the file if it is damaged; events of the lookback window "
                                           "may then be counted again"})

    def save(self) -> None:
        if self.path is None or self.mark is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic and durable: a crash leaves the old mark, never half a file.
        write_atomic(self.path, json.dumps({"op_time": self.mark, "ids": sorted(self.ids)}))


def new_events(events: Iterable[Fields], state: AuditState) -> list[Fields]:
    """The events not counted yet, and the state advanced past them (a pure step, tested directly).

    Events are judged against the mark as it was before this batch, so the batch's order does not matter.
    """
    mark, ids = state.mark, state.ids
    fresh: list[tuple[float, int, Fields]] = []
    for event in events:
        when = event.time("op_time")
        ident = event.integer("id")
        if when is None or ident is None:
            continue
        if mark is not None and (when < mark or (when == mark and ident in ids)):
            continue
        fresh.append((when, ident, event))
    if fresh:
        newest = max(when for when, _, _ in fresh)
        at_newest = {ident for when, ident, _ in fresh if when == newest}
        state.mark, state.ids = newest, (ids | at_newest) if newest == mark else at_newest
    return [event for _, _, event in fresh]


class AuditGroup(HarborGroup):
    group = "audit"
    endpoints = ("/auditlog-exts", "/audit-logs")

    def __init__(self, api):
        super().__init__(api)
        self.state = AuditState(self.target.harbor.audit_state_file)
        self.events: dict[str, int] = defaultdict(int)
        self.failed: dict[str, int] = defaultdict(int)
        self.logins = 0
        self.login_failures = 0
        self.extended: bool | None = None
        self._lock = threading.Lock()

    def gather(self) -> Iterable[Metric]:
        with self._lock:  # runs of one job never overlap, but keep the counters consistent regardless
            self._read()
            return self._families()

    def _read(self) -> None:
        since = self.state.mark if self.state.mark is not None else time.time() - self.target.harbor.audit_lookback
        start = datetime.fromtimestamp(int(since), UTC).strftime(_Q_TIME)
        end = (datetime.now(UTC) + timedelta(days=1)).strftime(_Q_TIME)
        params = {"q": f"op_time=[{start}~{end}]", "sort": "op_time"}
        if self.state.mark is None:
            self.state.mark, self.state.ids = float(int(since)) - 1e-6, set()
        for endpoint, extended in (("/auditlog-exts", True), ("/audit-logs", False)):
            try:
                pages = list(self.api.pages(endpoint, params, max_pages=MAX_PAGES))
            except NotCollected:
                continue
            self.extended = extended
            self._count([e for page in pages for e in page], extended)
            self.state.save()
            return
        self.extended = None

    def _count(self, events: list[Fields], extended: bool) -> None:
        for event in new_events(events, self.state):
            operation = event.text("operation").lower()
            operation = operation if operation in OPERATIONS else "other"
            self.events[operation] += 1
            failed = event.has("operation_result") and not event.flag("operation_result")
            if extended and failed:
                self.failed[operation] += 1
            if extended and operation == "login" and event.text("resource_type", "user").lower() == "user":
                self.logins += 1
                if failed:
                    self.login_failures += 1

    def _families(self) -> list[Metric]:
        if self.extended is None:
            return []
        name = self.target.name
        families: list[Metric] = [
            counter("regwatch_harbor_audit_events", "Harbor audit-log events by operation (cached).",
                    ["target", "operation"], [([name, op], n) for op, n in sorted(self.events.items())])]
        if self.extended:
            families += [
                counter("regwatch_harbor_audit_failed_events",
                        "Harbor audit-log events whose operation failed (2.13+; cached).",
                        ["target", "operation"], [([name, op], n) for op, n in sorted(self.failed.items())]),
                # The same families as every auth-log source; Harbor's audit log tells only failed logins
                # (bad_credentials) from good ones, so only that reason is pre-created.
                *attempt_families(name, self.logins, Counter(bad_credentials=self.login_failures),
                                  reasons=("bad_credentials",)),
            ]
        return families
