"""Harbor storage: the registry volume from ``/systeminfo/volumes`` and per-project quotas from ``/quotas``.

Example exposition::

    regwatch_storage_capacity_bytes{target="harbor"} 1.0e+12
    regwatch_storage_used_ratio{target="harbor"} 0.42
    regwatch_harbor_project_quota_used_bytes{project="library",target="harbor"} 1.2e+09
    regwatch_harbor_project_quota_hard_bytes{project="library",target="harbor"} 1.0e+10
    regwatch_harbor_project_quota_used_ratio{project="library",target="harbor"} 0.12

``/systeminfo/volumes`` is an array since Harbor 2.2 and covers local disk only (object storage
has no size). A hard quota of -1 is unlimited: that project has no ``hard_bytes`` and no ratio.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import Fields, HarborGroup, NotCollected, items_of
from regwatch.families import gauge


class StorageGroup(HarborGroup):
    group = "storage"
    endpoints = ("/systeminfo/volumes", "/quotas")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        volumes = self.optional(self.api.get, "/systeminfo/volumes")
        if volumes is not None:
            where = self.api.where("/systeminfo/volumes")
            if isinstance(volumes, list):  # some proxies answer the bare list
                disks = items_of(volumes, where)
            elif isinstance(volumes, dict) and "total" in volumes:  # Harbor before 2.2: one object
                disks = [Fields(volumes, where)]
            else:
                disks = Fields(volumes, where).objects("storage")
            total = sum(d.number("total", 0.0) for d in disks)
            free = sum(d.number("free", 0.0) for d in disks)
            if disks and total:
                used = total - free
                for metric, doc, value in (
                    ("regwatch_storage_capacity_bytes", "Size of the registry volume Harbor reports.", total),
                    ("regwatch_storage_used_bytes", "Bytes in use on the registry volume Harbor reports.", used),
                    ("regwatch_storage_available_bytes", "Free bytes on the registry volume Harbor reports.", free),
                    ("regwatch_storage_used_ratio", "Used share of the registry volume Harbor reports, 0..1.",
                     used / total),
                ):
                    yield gauge(metric, doc, ["target"], [([name], value)])
        hard_rows, used_rows, ratio_rows = [], [], []
        try:
            for page in self.api.pages("/quotas", {"reference": "project"}):
                for quota in page:
                    ref = quota.obj("ref")
                    project = ref.text("name") or str(ref.integer("id") or quota.integer("id"))
                    hard = quota.obj("hard").number("storage")
                    used = quota.obj("used").number("storage")
                    if used is not None:
                        used_rows.append(([name, project], used))
                    if hard is not None and hard >= 0:
                        hard_rows.append(([name, project], hard))
                        if used is not None and hard > 0:
                            ratio_rows.append(([name, project], used / hard))
        except NotCollected:
            return
        yield gauge("regwatch_harbor_project_quota_used_bytes", "Storage a project uses against its quota.",
                    ["target", "project"], used_rows)
        yield gauge("regwatch_harbor_project_quota_hard_bytes",
                    "A project's storage quota; absent for unlimited (-1) quotas.", ["target", "project"], hard_rows)
        yield gauge("regwatch_harbor_project_quota_used_ratio",
                    "Used share of a project's storage quota, 0..1; absent for unlimited quotas.",
                    ["target", "project"], ratio_rows)
