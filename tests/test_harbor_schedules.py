"""The schedule watchdogs (regwatch/collectors/harbor/schedules.py) against the fake Harbor
(tests/fakes/harbor.py, which follows goharbor/harbor's swagger at v2.15.2 and its handlers for how
runs record their trigger): each next-run figure is compared with the slot the test computes itself
from the run times it gave the fake, and, end to end, ``HarborScheduledJobMissed`` fires in a real
Prometheus (Debian's ``prometheus``) scraping a real ``regwatch serve`` for a stalled schedule and
stays silent for a healthy one."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, UTC

import pytest
import yaml

from tests.fakes.harbor import T0, FakeHarbor
from tests.promserver import PrometheusServer
from tests.harbor_support import Scrape, target_for

HOUR, DAY = 3600.0, 86400.0


def next_midnight(t: float) -> float:
    """The first 00:00:00 UTC strictly after ``t``: what Harbor's daily preset "0 0 0 * * *" fires at."""
    day = datetime.fromtimestamp(t, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).timestamp()


def next_hour(t: float) -> float:
    return (t // HOUR + 1) * HOUR


@pytest.fixture
def fake():
    with FakeHarbor(projects=4, repositories=20) as harbor:
        yield harbor


def only(tmp_path, fake, *groups: str, **harbor):
    everything = ("health", "projects", "storage", "replication", "gc", "scans", "jobservice", "robots", "members",
                  "signatures", "audit", "retention", "preheat", "artifacts")
    return target_for(fake, tmp_path, skip=[g for g in everything if g not in groups], **harbor)


def schedule(scrape: Scrape, metric: str, kind: str, policy: str = "") -> float | None:
    return scrape.get(f"regwatch_harbor_schedule_{metric}", target="h", schedule=kind, policy=policy)


def test_gc_next_run_counts_from_the_last_scheduled_run_not_a_manual_one(fake, tmp_path):
    scrape = Scrape(only(tmp_path, fake, "gc")).run()
    # The fake's runs: 3 manual (running, T0+7200), 2 scheduled (Error, T0+3600), 1 scheduled (Success, T0).
    assert schedule(scrape, "last_run_start_timestamp_seconds", "gc") == T0 + 3600
    assert schedule(scrape, "last_run_end_timestamp_seconds", "gc") == T0 + 3600 + 60
    assert schedule(scrape, "last_run_success", "gc") == 0
    assert schedule(scrape, "next_run_timestamp_seconds", "gc") == next_midnight(T0 + 3600)
    assert schedule(scrape, "period_seconds", "gc") == DAY
    # Harbor's own next_scheduled_time (counted from its now) is exported as it is, beside the watchdog.
    assert scrape.get("regwatch_harbor_gc_next_run_timestamp_seconds", target="h") == T0 + DAY
    # The audit-log purge runs weekly (Sunday 00:00); its last scheduled run was at T0 + 100.
    sunday = datetime(2023, 11, 19, tzinfo=UTC).timestamp()  # the first Sunday after T0 + 100
    assert schedule(scrape, "next_run_timestamp_seconds", "purge_audit") == sunday
    assert schedule(scrape, "period_seconds", "purge_audit") == 7 * DAY
    # Unscheduled (type None): no watchdog series for it.
    fake.purge_schedule = {"type": "None"}
    scrape.run()
    assert schedule(scrape, "next_run_timestamp_seconds", "purge_audit") is None
    scrape.close()


def test_a_schedule_that_never_ran_is_due_after_it_was_set_up(fake, tmp_path):
    fake.gc_runs = [fake.gc_run(1, "Success", T0, kind="MANUAL")]
    fake.gc_schedule_updated = T0 + 5000
    scrape = Scrape(only(tmp_path, fake, "gc")).run()
    assert schedule(scrape, "last_run_start_timestamp_seconds", "gc") is None
    assert schedule(scrape, "last_run_success", "gc") is None
    assert schedule(scrape, "next_run_timestamp_seconds", "gc") == next_midnight(T0 + 5000)
    scrape.close()


def test_a_harbor_that_never_had_a_schedule_answers_empty_bodies_and_gets_no_watchdog(fake, tmp_path):
    fake.gc_schedule = fake.purge_schedule = fake.scan_all_schedule = None
    scrape = Scrape(only(tmp_path, fake, "gc", "scans")).run()
    assert {s["collector"]: s["last_error"] for s in scrape.runner.status()} == {
        "harbor": "", "harbor_gc": "", "harbor_scans": ""}
    assert [k for k in scrape.samples if k[0].startswith("regwatch_harbor_schedule_")] == []
    assert scrape.get("regwatch_harbor_gc_last_run_succeeded", target="h") == 0  # the runs are still read
    scrape.close()


def test_replication_watchdog_for_enabled_cron_policies_only_and_the_trigger_type(fake, tmp_path):
    # Ten manual runs after the last scheduled one: regwatch asks Harbor for the scheduled one itself.
    fake.executions[1][:0] = [fake.execution(100 + k, 1, "Succeed", T0 + 9000 + k, trigger="manual")
                              for k in range(10)]
    scrape = Scrape(only(tmp_path, fake, "replication")).run()
    assert schedule(scrape, "last_run_start_timestamp_seconds", "replication", "to-dr") == T0 + 3600
    assert schedule(scrape, "last_run_success", "replication", "to-dr") == 0  # that run failed
    assert schedule(scrape, "next_run_timestamp_seconds", "replication", "to-dr") == next_hour(T0 + 3600)
    assert schedule(scrape, "period_seconds", "replication", "to-dr") == HOUR
    # "nightly" is disabled and "on-push" is event-based: neither is expected to fire by cron.
    assert schedule(scrape, "next_run_timestamp_seconds", "replication", "nightly") is None
    assert schedule(scrape, "next_run_timestamp_seconds", "replication", "on-push") is None
    triggers = {dict(k[1])["policy"]: dict(k[1])["trigger"] for k in scrape.samples
                if k[0] == "regwatch_harbor_replication_policy_trigger_info"}
    assert triggers == {"to-dr": "scheduled", "nightly": "scheduled", "on-push": "event_based"}
    scrape.close()


def test_retention_watchdog_and_last_execution(fake, tmp_path):
    scrape = Scrape(only(tmp_path, fake, "retention")).run()
    # library: daily retention whose last run (Schedule, Success) started at T0; proj3: manual only, failed.
    assert schedule(scrape, "next_run_timestamp_seconds", "retention", "library") == next_midnight(T0)
    assert schedule(scrape, "last_run_success", "retention", "library") == 1
    assert schedule(scrape, "next_run_timestamp_seconds", "retention", "proj3") is None  # no cron
    assert scrape.get("regwatch_harbor_retention_last_execution_success", target="h", policy="library") == 1
    assert scrape.get("regwatch_harbor_retention_last_execution_success", target="h", policy="proj3") == 0
    # A retention that never ran is due after its schedule's update_time, which only /schedules tells.
    fake.retentions[1]["executions"] = []
    fake.retentions[1]["updated"] = T0 + 7 * HOUR
    scrape.run()
    assert schedule(scrape, "next_run_timestamp_seconds", "retention", "library") == next_midnight(T0 + 7 * HOUR)
    scrape.close()


def test_scan_all_runs_are_observed_because_harbor_gives_no_times(fake, tmp_path):
    fake.scan_all = {"total": 0, "completed": 0, "metrics": {}, "ongoing": False, "trigger": ""}
    scrape = Scrape(only(tmp_path, fake, "scans"))
    before = time.time()
    scrape.run()
    # Never seen a run: due after regwatch first saw the daily 02:00 schedule, never before.
    first_due = schedule(scrape, "next_run_timestamp_seconds", "scan_all")
    day = datetime.fromtimestamp(before, UTC).replace(hour=2, minute=0, second=0, microsecond=0)
    expected = day.timestamp() if day.timestamp() > before else (day + timedelta(days=1)).timestamp()
    assert first_due == expected
    assert schedule(scrape, "last_run_start_timestamp_seconds", "scan_all") is None
    fake.scan_all = {"total": 10, "completed": 2, "metrics": {"Running": 8, "Success": 2}, "ongoing": True,
                     "trigger": "Schedule"}
    seen = time.time()
    scrape.run()
    start = schedule(scrape, "last_run_start_timestamp_seconds", "scan_all")
    assert seen <= start <= time.time()
    assert schedule(scrape, "last_run_success", "scan_all") is None  # still running
    fake.scan_all = {"total": 10, "completed": 10, "metrics": {"Success": 9, "Error": 1}, "ongoing": False,
                     "trigger": "Schedule"}
    scrape.run()
    assert schedule(scrape, "last_run_start_timestamp_seconds", "scan_all") == start
    assert schedule(scrape, "last_run_end_timestamp_seconds", "scan_all") >= start
    assert schedule(scrape, "last_run_success", "scan_all") == 0  # one scan errored
    assert scrape.get("regwatch_harbor_scan_all_scans", target="h") == 10
    scrape.close()


def test_a_cron_harbor_would_never_write_is_one_log_line_and_no_next_run(fake, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="regwatch.collectors.harbor")
    fake.gc_schedule = {"type": "Custom", "cron": "0 0 * *", "next_scheduled_time": "0001-01-01T00:00:00Z"}
    scrape = Scrape(only(tmp_path, fake, "gc"))
    scrape.run()
    scrape.run()
    assert scrape.get("regwatch_collector_success", target="h", collector="harbor_gc") == 1
    assert schedule(scrape, "next_run_timestamp_seconds", "gc") is None
    assert schedule(scrape, "last_run_start_timestamp_seconds", "gc") == T0 + 3600  # what is known stays
    lines = [r for r in caplog.records if r.getMessage().startswith("Harbor schedule has a cron")]
    assert [(r.schedule, r.cron, r.err) for r in lines] == [
        ("gc", "0 0 * *", "expected 6 fields (second minute hour day-of-month month day-of-week), found 4")]
    scrape.close()


def test_freed_bytes_come_from_the_last_successful_run_that_was_not_a_dry_run(fake, tmp_path):
    dry = fake.gc_run(4, "Success", T0 + 9000, freed=(999, 9, 9))
    dry["job_parameters"] = dry["job_parameters"].replace('"dry_run": false', '"dry_run": true')
    fake.gc_runs.insert(0, dry)
    scrape = Scrape(only(tmp_path, fake, "gc")).run()
    assert scrape.get("regwatch_harbor_gc_last_freed_bytes", target="h") == 512 * 1024 * 1024
    assert scrape.get("regwatch_harbor_gc_last_purged_blobs", target="h") == 120
    scrape.close()


# --------------------------------------------------------------------------- a real Prometheus


def missed_rule() -> dict:
    """HarborScheduledJobMissed as `regwatch generate alerts` writes it (default grace 1h), `for:` shortened to 1s."""
    from regwatch.generate import alerts
    from regwatch.generate.options import AlertOptions

    rules = alerts.render_rules(AlertOptions(for_durations={"HarborScheduledJobMissed": "1s"}))
    found = [rule for group in rules["groups"] for rule in group["rules"]
             if rule.get("alert") == "HarborScheduledJobMissed"]
    assert len(found) == 1 and found[0]["for"] == "1s"
    return found[0]


def test_harbor_scheduled_job_missed_fires_in_prometheus_for_a_stalled_schedule_only(fake, tmp_path, serve,
                                                                                    write_config):
    now = time.time()
    hour = now // HOUR * HOUR
    fake.policies = [{"id": 1, "name": "healthy", "enabled": True,
                      "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 0 * * * *"}}},
                     {"id": 2, "name": "stalled", "enabled": True,
                      "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 0 * * * *"}}}]
    # healthy ran at this hour's slot, so its next is the next hour; stalled last ran three slots ago.
    fake.executions = {1: [fake.execution(1, 1, "Succeed", hour + 2)],
                       2: [fake.execution(2, 2, "Succeed", hour - 3 * HOUR + 2)]}
    target = only(tmp_path, fake, "replication")
    config = write_config({"targets": [{"name": "h", "kind": "harbor", "url": fake.url, "username": "admin",
                                        "password_file": str(target.password_file), "interval": "1s",
                                        "harbor": {"skip": target.harbor.skip}}]})
    proc = serve(config)
    proc.wait_ready()
    rule = missed_rule()
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "harbor-schedules", "rules": [rule]}]}))
    with PrometheusServer(tmp_path / "prom", [f"127.0.0.1:{proc.port}"], rule_files=[str(rules)]) as prom:
        firing = prom.wait_for('ALERTS{alertname="HarborScheduledJobMissed",alertstate="firing"}', timeout=40)
        assert [a["metric"]["policy"] for a in firing] == ["stalled"]
        assert firing[0]["metric"]["schedule"] == "replication"
        # The late schedule's figure is the slot the test computed: two hours before this hour's top.
        value = prom.query('regwatch_harbor_schedule_next_run_timestamp_seconds{policy="stalled"}')
        assert float(value[0]["value"][1]) == hour - 2 * HOUR
        healthy = prom.query('regwatch_harbor_schedule_next_run_timestamp_seconds{policy="healthy"}')
        assert float(healthy[0]["value"][1]) == hour + HOUR
        time.sleep(3)  # several evaluations later, still only the stalled one
        alerts = prom.query('ALERTS{alertname="HarborScheduledJobMissed"}')
        assert {a["metric"]["policy"] for a in alerts} == {"stalled"}
