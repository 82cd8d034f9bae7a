"""Harbor vulnerability scanning: scan-all progress, scanners, and the security summary (2.10+).

Example exposition::

    regwatch_harbor_scan_all_total{target="harbor"} 100.0
    regwatch_harbor_scan_all_completed{target="harbor"} 90.0
    regwatch_harbor_scan_all_ongoing{target="harbor"} 1.0
    regwatch_harbor_scan_all_tasks{status="Error",target="harbor"} 2.0
    regwatch_harbor_scanner_enabled{default="true",scanner="Trivy",target="harbor"} 1.0
    regwatch_harbor_scanner_healthy{scanner="Trivy",target="harbor"} 1.0
    regwatch_harbor_vulnerabilities{severity="critical",target="harbor"} 3.0

``scanner_healthy`` exists only when Harbor filled a scanner's ``health`` (it does so after a
ping); regwatch does not ping scanners itself, since that reaches into the adapter.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected, gauge

_STATUSES = ("Pending", "Running", "Success", "Error", "Stopped")
_SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")


class ScansGroup(HarborGroup):
    group = "scans"
    endpoints = ("/scans/all/metrics", "/scanners", "/security/summary")

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        stats = self.optional(self.api.get, "/scans/all/metrics")
        if stats is not None:
            yield gauge("regwatch_harbor_scan_all_total", "Scans the last scan-all started.", ["target"],
                        [([name], stats.get("total") or 0)])
            yield gauge("regwatch_harbor_scan_all_completed", "Scans of the last scan-all that finished.",
                        ["target"], [([name], stats.get("completed") or 0)])
            yield gauge("regwatch_harbor_scan_all_ongoing", "1 while a scan-all runs.", ["target"],
                        [([name], 1.0 if stats.get("ongoing") else 0.0)])
            counts = stats.get("metrics") or {}
            yield gauge("regwatch_harbor_scan_all_tasks", "Scans of the last scan-all by status.",
                        ["target", "status"], [([name, s], counts.get(s) or 0) for s in _STATUSES])
        try:
            scanners = self.api.list_all("/scanners")
        except NotCollected:
            scanners = None
        if scanners is not None:
            yield gauge("regwatch_harbor_scanner_enabled", "1 for each enabled scanner registration.",
                        ["target", "scanner", "default"],
                        [([name, str(s.get("name")), "true" if s.get("is_default") else "false"],
                          0.0 if s.get("disabled") else 1.0) for s in scanners])
            yield gauge("regwatch_harbor_scanner_healthy",
                        "1 if Harbor reports the scanner healthy (only where Harbor has pinged it).",
                        ["target", "scanner"],
                        [([name, str(s.get("name"))], 1.0 if s.get("health") == "healthy" else 0.0)
                         for s in scanners if s.get("health")])
        summary = self.optional(self.api.get, "/security/summary")
        if summary is not None:
            yield gauge("regwatch_harbor_vulnerabilities", "Vulnerabilities over scanned artifacts, by severity.",
                        ["target", "severity"], [([name, s], summary.get(f"{s}_cnt") or 0) for s in _SEVERITIES])
            yield gauge("regwatch_harbor_fixable_vulnerabilities", "Vulnerabilities that have a fix.",
                        ["target"], [([name], summary.get("fixable_cnt") or 0)])
            yield gauge("regwatch_harbor_scanned_artifacts", "Artifacts with a scan report.", ["target"],
                        [([name], summary.get("scanned_cnt") or 0)])
            yield gauge("regwatch_harbor_artifacts", "Artifacts in Harbor, from the security summary.", ["target"],
                        [([name], summary.get("total_artifact") or 0)])
