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

from regwatch.collectors.harbor.api import HarborGroup, NotCollected, gauge


class StorageGroup(HarborGroup):
    group = "storage"
    endpoints = ("/systeminfo/volumes", "/quotas")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        volumes = self.optional(self.api.get, "/systeminfo/volumes")
        if volumes is not None:
            disks = volumes.get("storage") if isinstance(volumes, dict) else None
            if isinstance(volumes, list):  # Harbor before 2.2 answered one object, some proxies a bare list
                disks = volumes
            elif isinstance(volumes, dict) and "total" in volumes:
                disks = [volumes]
            disks = disks or []
            total = sum(int(d.get("total") or 0) for d in disks)
            free = sum(int(d.get("free") or 0) for d in disks)
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
                    ref = quota.get("ref") or {}
                    project = str(ref.get("name") or ref.get("id") or quota.get("id"))
                    hard = (quota.get("hard") or {}).get("storage")
                    used = (quota.get("used") or {}).get("storage")
                    if used is not None:
                        used_rows.append(([name, project], float(used)))
                    if hard is not None and hard >= 0:
                        hard_rows.append(([name, project], float(hard)))
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
