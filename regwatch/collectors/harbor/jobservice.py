"""Harbor job service: queue length and latency per job type, the worker pools and whether the
scheduler is paused (2.7+).

Example exposition::

    regwatch_harbor_jobservice_queue_length{job_type="REPLICATION",target="harbor"} 3.0
    regwatch_harbor_jobservice_queue_latency_seconds{job_type="REPLICATION",target="harbor"} 12.0
    regwatch_harbor_jobservice_queue_paused{job_type="REPLICATION",target="harbor"} 0.0
    regwatch_harbor_jobservice_pool_workers{pool="6d2e...",target="harbor"} 10.0
    regwatch_harbor_jobservice_pool_heartbeat_timestamp_seconds{pool="6d2e...",target="harbor"} 1.7e+09
    regwatch_harbor_jobservice_schedules_paused{target="harbor"} 0.0

A paused scheduler (``/schedules/all/paused``, 2.7+) stops every scheduled job at once: it is the
first thing to look at when ``HarborScheduledJobMissed`` fires.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected
from regwatch.families import gauge


class JobserviceGroup(HarborGroup):
    group = "jobservice"
    endpoints = ("/jobservice/queues", "/jobservice/pools", "/schedules/{job_type}/paused")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            queues = self.api.items("/jobservice/queues")
        except NotCollected:
            queues = None
        if queues is not None:
            rows = [([name, q.text("job_type")], q) for q in queues]
            yield gauge("regwatch_harbor_jobservice_queue_length", "Jobs waiting in the job service queue (cached).",
                        ["target", "job_type"], [(k, q.number("count", 0.0)) for k, q in rows])
            yield gauge("regwatch_harbor_jobservice_queue_latency_seconds",
                        "How long the oldest job of the queue has waited (cached).",
                        ["target", "job_type"], [(k, q.number("latency", 0.0)) for k, q in rows])
            yield gauge("regwatch_harbor_jobservice_queue_paused", "1 if the queue is paused (cached).",
                        ["target", "job_type"], [(k, 1.0 if q.flag("paused") else 0.0) for k, q in rows])
        paused = self.optional(self.api.obj, "/schedules/all/paused", endpoint="/schedules/{job_type}/paused")
        if paused is not None:
            yield gauge("regwatch_harbor_jobservice_schedules_paused",
                        "1 if Harbor's scheduler is paused: no scheduled job (GC, replication, retention, scan-all) "
                        "fires until it is resumed (cached).", ["target"], [([name], 1.0 if paused.flag("paused")
                                                                             else 0.0)])
        try:
            pools = self.api.items("/jobservice/pools")
        except NotCollected:
            return
        yield gauge("regwatch_harbor_jobservice_pool_workers", "Workers (concurrency) of a job service pool (cached).",
                    ["target", "pool"], [([name, p.text("worker_pool_id")], p.number("concurrency", 0.0))
                                         for p in pools])
        yield gauge("regwatch_harbor_jobservice_pool_heartbeat_timestamp_seconds",
                    "Last heartbeat of a job service pool; a stale one means a dead jobservice (cached).",
                    ["target", "pool"], [([name, p.text("worker_pool_id")], p.time("heartbeat_at")) for p in pools])
