"""The ``storage`` collector: capacity and use of the local volumes a registry stores its blobs on.

Example exposition::

    # HELP regwatch_storage_capacity_bytes Size of the file system holding the volume.
    # TYPE regwatch_storage_capacity_bytes gauge
    regwatch_storage_capacity_bytes{volume="registry-data"} 1.073741824e+09
    # HELP regwatch_storage_used_ratio Used share of the space usable by the registry, 0..1 (as df's Use%).
    # TYPE regwatch_storage_used_ratio gauge
    regwatch_storage_used_ratio{volume="registry-data"} 0.42

The ratio is ``used / (used + available)``, as ``df`` computes ``Use%``: it reaches 1 exactly
when an unprivileged process (the registry) can no longer write, even though the file
system keeps blocks reserved for root.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client.metrics_core import Metric

from regwatch.budget import Budget
from regwatch.collectors import Collector, Contexts, Job, job_factory
from regwatch.config import Config, StorageConfig
from regwatch.families import gauge


class StorageCollector(Collector):
    name = "storage"

    def __init__(self, volume: StorageConfig):
        self.volume = volume

    def collect(self) -> Iterable[Metric]:
        path = self.volume.path
        if not path.exists():
            raise FileNotFoundError(f"storage path {path} of volume {self.volume.name} does not exist; "
                                    "fix storage[].path or mount the volume")
        usage = psutil.disk_usage(str(path))
        usable = usage.used + usage.free
        labels = [self.volume.name]
        for name, doc, value in (
            ("regwatch_storage_capacity_bytes", "Size of the file system holding the volume.", usage.total),
            ("regwatch_storage_used_bytes", "Bytes in use on the file system holding the volume.", usage.used),
            ("regwatch_storage_available_bytes", "Bytes an unprivileged writer (the registry) can still use.",
             usage.free),
            ("regwatch_storage_used_ratio",
             "Used share of the space usable by the registry, 0..1 (as df's Use%).",
             usage.used / usable if usable else 0.0),
        ):
            yield gauge(name, doc, ["volume"], [(labels, value)])


@job_factory("storage", help="Capacity and use of the configured storage volumes.")
def storage_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for volume in config.storage:
        # statvfs talks to no peer; a hung network mount is what the budget guards against.
        yield Job(volume.name, StorageCollector(volume), volume.interval, Budget.local(min(volume.interval, 10.0)))
