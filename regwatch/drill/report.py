"""The drill's outputs: report.json, a self-contained report.html, Prometheus metrics as a textfile
(node_exporter textfile collector) and, optionally, pushed to a Pushgateway.

Metrics (label ``store`` is the store directory)::

    regwatch_drill_success{store}                        1 if the last drill passed every phase
    regwatch_drill_last_run_timestamp_seconds{store}
    regwatch_drill_last_success_timestamp_seconds{store} kept from the previous report when this run failed
    regwatch_drill_duration_seconds{store,phase}         phase = backup | restore | verify
    regwatch_drill_images{store,result}                  result = ok | failed | skipped
    regwatch_drill_bytes{store,result}                   result = ok | failed | skipped | transferred
    regwatch_drill_rpo_seconds{store}                    age of the backed-up data when the drill ended
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.drill.common import PhaseResult

TEXTFILE_NAME = "regwatch_drill.prom"


def build_report(store: str, phases: list[PhaseResult], *, started: float, source: str | None = None,
                 dest: str | None = None, previous: dict | None = None) -> dict:
    ended = time.time()
    by = {p.phase: p for p in phases}
    success = all(p.ok for p in phases) and bool(phases)
    failed_images = sorted({f.image for p in phases for f in p.failures})
    first = by.get("backup") or by.get("verify") or by.get("restore")
    total_images = first.tags if first else 0
    if "verify" in by and "backup" not in by:
        total_images = by["verify"].images_ok + by["verify"].images_failed
    content = by.get("verify") or by.get("backup") or by.get("restore")
    prev_success = (previous or {}).get("last_success_timestamp")
    backup = by.get("backup")
    restore = by.get("restore")
    rto = (restore.duration + (by["verify"].duration if "verify" in by else 0.0)) if restore else None
    return {
        "store": store,
        "source": source,
        "dest": dest,
        "started": started,
        "ended": ended,
        "success": success,
        "last_success_timestamp": ended if success else prev_success,
        "rto_seconds": rto,
        "rpo_seconds": ended - backup.started if backup and backup.ok else (previous or {}).get("rpo_seconds"),
        "images": {"total": total_images, "failed": len(failed_images),
                   "skipped": backup.images_skipped if backup else 0,
                   "ok": max(total_images - len(failed_images), 0)},
        "tags": first.tags if first else 0,
        "blobs": content.blobs if content else 0,
        "bytes": {"ok": content.bytes_ok if content else 0,
                  "failed": content.bytes_failed if content else 0,
                  "skipped": backup.bytes_skipped if backup else 0,
                  "transferred": sum(p.bytes_transferred for p in phases if p.phase != "verify")},
        "phases": {p.phase: p.as_dict() for p in phases},
        "failures": [{"phase": p.phase, **f.as_dict()} for p in phases for f in p.failures],
        "failed_images": failed_images,
    }


def families(report: dict) -> Iterable[Metric]:
    store = [report["store"]]

    def gauge(name: str, doc: str, value: float | None, extra: dict[str, str] | None = None) -> Metric | None:
        fam = GaugeMetricFamily(name, doc, labels=["store", *(extra or {})])
        if value is not None:
            fam.add_metric(store + list((extra or {}).values()), value)
        return fam

    yield gauge("regwatch_drill_success", "1 if the last drill passed every phase, else 0.",
                1.0 if report["success"] else 0.0)
    yield gauge("regwatch_drill_last_run_timestamp_seconds", "When the last drill ended (Unix time).",
                report["ended"])
    yield gauge("regwatch_drill_last_success_timestamp_seconds", "When the last successful drill ended.",
                report.get("last_success_timestamp"))
    dur = GaugeMetricFamily("regwatch_drill_duration_seconds", "Duration of each phase of the last drill.",
                            labels=["store", "phase"])
    for phase, data in sorted(report["phases"].items()):
        dur.add_metric(store + [phase], data["duration_seconds"])
    yield dur
    for name, doc, key, results in (
        ("regwatch_drill_images", "Images (tags) of the last drill by result.", "images", ("ok", "failed", "skipped")),
        ("regwatch_drill_bytes", "Blob bytes of the last drill by result (transferred: sent over the network).",
         "bytes", ("ok", "failed", "skipped", "transferred")),
    ):
        fam = GaugeMetricFamily(name, doc, labels=["store", "result"])
        for result in results:
            fam.add_metric(store + [result], report[key].get(result, 0))
        yield fam
    yield gauge("regwatch_drill_rpo_seconds",
                "Recovery point: age of the backed-up data when the last successful backup's drill ended.",
                report.get("rpo_seconds"))


class _ReportCollector:
    def __init__(self, report: dict):
        self.report = report

    def collect(self) -> Iterable[Metric]:
        return families(self.report)


def metrics_registry(report: dict) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_ReportCollector(report))
    return reg


def read_previous(report_dir: Path) -> dict | None:
    try:
        return json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_reports(report: dict, report_dir: Path) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = report_dir / "report.json", report_dir / "report.html"
    _atomic_write(json_path, json.dumps(report, indent=2, sort_keys=True))
    _atomic_write(html_path, render_html(report))
    return json_path, html_path


def write_textfile(report: dict, textfile_dir: Path) -> Path:
    textfile_dir.mkdir(parents=True, exist_ok=True)
    path = textfile_dir / TEXTFILE_NAME
    write_to_textfile(str(path), metrics_registry(report))  # writes a temp file and renames it
    return path


def push(report: dict, url: str) -> None:
    push_to_gateway(url, job="regwatch_drill", registry=metrics_registry(report),
                    grouping_key={"store": report["store"]}, timeout=30)


def _ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value)) if value else "-"


def render_html(report: dict) -> str:
    e = html.escape
    status = "PASSED" if report["success"] else "FAILED"
    rows = "".join(
        f"<tr><td>{e(p)}</td><td>{d['duration_seconds']:.2f} s</td><td>{d['images_ok']}</td>"
        f"<td>{d['images_failed']}</td><td>{d['images_skipped']}</td><td>{d['blobs']}</td>"
        f"<td>{d['bytes_transferred']}</td><td>{d['rate_bytes_per_second'] / 1e6:.1f} MB/s</td></tr>"
        for p, d in report["phases"].items())
    failures = "".join(f"<tr><td>{e(f['phase'])}</td><td>{e(f['image'])}</td><td>{e(f['message'])}</td></tr>"
                       for f in report["failures"]) or "<tr><td colspan=3>none</td></tr>"

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} s"

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>regwatch drill: {e(status)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;text-align:left}}
.PASSED{{color:#070}}.FAILED{{color:#b00}}</style></head><body>
<h1>regwatch drill <span class="{status}">{status}</span></h1>
<table>
<tr><th>store</th><td>{e(report['store'])}</td></tr>
<tr><th>source</th><td>{e(str(report.get('source') or '-'))}</td></tr>
<tr><th>destination</th><td>{e(str(report.get('dest') or '-'))}</td></tr>
<tr><th>started</th><td>{_ts(report['started'])}</td></tr>
<tr><th>ended</th><td>{_ts(report['ended'])}</td></tr>
<tr><th>RTO (restore + verify)</th><td>{secs(report.get('rto_seconds'))}</td></tr>
<tr><th>RPO (data age at end)</th><td>{secs(report.get('rpo_seconds'))}</td></tr>
<tr><th>images</th><td>{report['images']['total']} ({report['images']['failed']} failed,
 {report['images']['skipped']} unchanged)</td></tr>
<tr><th>tags</th><td>{report['tags']}</td></tr>
<tr><th>blobs</th><td>{report['blobs']}</td></tr>
<tr><th>bytes</th><td>{report['bytes']['ok']} ({report['bytes']['transferred']} transferred)</td></tr>
</table>
<h2>Phases</h2>
<table><tr><th>phase</th><th>duration</th><th>ok</th><th>failed</th><th>unchanged</th><th>blobs</th>
<th>bytes transferred</th><th>rate</th></tr>{rows}</table>
<h2>Failures</h2>
<table><tr><th>phase</th><th>image</th><th>problem</th></tr>{failures}</table>
</body></html>
"""
