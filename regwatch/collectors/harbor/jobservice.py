"""Harbor job service: queue length and latency per job type, and the worker pools (2.8+).

Example exposition::

    regwatch_harbor_jobservice_queue_length{job_type="REPLICATION",target="harbor"} 3.0
    regwatch_harbor_jobservice_queue_latency_seconds{job_type="REPLICATION",target="harbor"} 12.0
    regwatch_harbor_jobservice_queue_paused{job_type="REPLICATION",target="harbor"} 0.0
    regwatch_harbor_jobservice_pool_workers{pool="6d2e...",target="harbor"} 10.0
    regwatch_harbor_jobservice_pool_heartbeat_timestamp_seconds{pool="6d2e...",target="harbor"} 1.7e+09
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected, gauge, timestamp


class JobserviceGroup(HarborGroup):
    group = "jobservice"
    endpoints = ("/jobservice/queues", "/jobservice/pools")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            queues = self.api.get("/jobservice/queues") or []
        except NotCollected:
            queues = None
        if queues is not None:
            rows = [([name, str(q.get("job_type"))], q) for q in queues]
            yield gauge("regwatch_harbor_jobservice_queue_length", "Jobs waiting in the job service queue.",
                        ["target", "job_type"], [(k, q.get("count") or 0) for k, q in rows])
            yield gauge("regwatch_harbor_jobservice_queue_latency_seconds",
                        "How long the oldest job of the queue has waited.",
                        ["target", "job_type"], [(k, q.get("latency") or 0) for k, q in rows])
            yield gauge("regwatch_harbor_jobservice_queue_paused", "1 if the queue is paused.",
                        ["target", "job_type"], [(k, 1.0 if q.get("paused") else 0.0) for k, q in rows])
        try:
            pools = self.api.get("/jobservice/pools") or []
        except NotCollected:
            return
        yield gauge("regwatch_harbor_jobservice_pool_workers", "Workers (concurrency) of a job service pool.",
                    ["target", "pool"], [([name, str(p.get("worker_pool_id"))], p.get("concurrency") or 0)
                                         for p in pools])
        yield gauge("regwatch_harbor_jobservice_pool_heartbeat_timestamp_seconds",
                    "Last heartbeat of a job service pool; a stale one means a dead jobservice.",
                    ["target", "pool"], [([name, str(p.get("worker_pool_id"))], timestamp(p.get("heartbeat_at")))
                                         for p in pools if timestamp(p.get("heartbeat_at")) is not None])
