"""The drill's outputs: report.json, a self-contained report.html, Prometheus metrics as a textfile
(node_exporter textfile collector) and, optionally, pushed to a Pushgateway.

Metrics (label ``store`` is the store directory)::

    regwatch_drill_success{store}                           1 if the last full drill passed: backup, restore into
                                                            the destination and verify of that store, in one run
    regwatch_drill_last_success_timestamp_seconds{store}    end of the last passing full drill
    regwatch_drill_last_run_timestamp_seconds{store}        end of the last full drill
    regwatch_drill_phase_success{store,phase}               1 if that phase passed the last time it ran
    regwatch_drill_phase_last_success_timestamp_seconds{store,phase}
    regwatch_drill_duration_seconds{store,phase}            last run of each phase
    regwatch_drill_images{store,result}                     images (tags) of the last run: ok | failed
    regwatch_drill_bytes{store,result}                      bytes of the last run: ok | failed | skipped | transferred
    regwatch_drill_coverage_ratio{store}                    covered / selected tags of the last backup+verify
    regwatch_drill_rpo_seconds{store}                       age of the oldest covered image's copy

A phase run alone (``--backup``, ``--restore``, ``--verify``) updates only its phase series; the full
drill series keep the values of the last full drill (carried in report.json). ``--dry-run`` writes
nothing.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile
from prometheus_client.metrics_core import Metric

from regwatch.atomic import write_atomic
from regwatch.drill.common import PHASES, Ledger, PhaseResult, human_bytes, human_seconds
from regwatch.families import gauge

TEXTFILE_NAME = "regwatch_drill.prom"

DEFINITIONS = {
    "images": "tags the backup selected from the source (a restore or verify without a backup: the tags in the "
              "store); signature and referrer tags are images too, referrers found through the referrers API are "
              "listed under their subject",
    "copied / unchanged": "backup: the tag's manifest was fetched / the store already held the digest the "
                          "source serves",
    "pushed / present": "restore: the manifest was pushed / the destination already served that digest",
    "planned": "restore --dry-run: would be pushed (nothing was)",
    "verified": "every manifest, config and layer the image reaches re-read from the store and hashed, "
                "layers decompressed and matched with the config's rootfs.diff_ids",
    "ok": "images that every phase of this run passed",
    "covered": "images in the store and verified (and, when restore ran, not failed there); an older copy counts "
               "when this run's backup of the tag failed, its age then shows in the RPO",
    "coverage": "covered / images, over the backup's selection (a run with backup and verify)",
    "objects": "manifests and blobs (configs and layers), each counted once per phase; restore counts once "
               "per destination repository (a layer in 3 repositories is 3 placements)",
    "moved": "backup: downloaded from the source; restore: uploaded to the destination",
    "mounted": "restore: cross-repository mounted from a repository of this restore (no bytes sent)",
    "present": "already where it had to be (in the store for a backup, at the destination for a restore)",
    "checked": "verify: re-read and hashed",
    "rate": "moved bytes / phase duration ('-' when nothing moved)",
    "RTO": "restore + verify duration of a full drill",
    "RPO": "age, at the end of this run, of the copy of the oldest covered image (since a backup last saw the "
           "source serve that digest)",
    "sizes": "decimal units: 1 MB = 1,000,000 bytes",
}


def _phase_outcomes(ledger: Ledger, phase: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in ledger.rows.values():
        if phase in row.status:
            out[row.status[phase]] = out.get(row.status[phase], 0) + 1
    return out


def build_report(store: str, phases: list[PhaseResult], ledger: Ledger, *, started: float, full: bool,
                 source: str | None = None, dest: str | None = None, previous: dict | None = None,
                 found_by: str | None = None, generation: int | None = None, notes: list[str] | None = None,
                 selected: int | None = None) -> dict:
    ended = time.time()
    prev = previous if isinstance(previous, dict) else {}
    by = {p.phase: p for p in phases}
    rows = ledger.sorted()
    image_count = len(rows)
    run_ok = bool(phases) and all(p.ok for p in phases) and image_count > 0 and all(r.ok for r in rows)

    prev_drill = prev.get("drill") if isinstance(prev.get("drill"), dict) else {}
    drill_state = {k: prev_drill.get(k) for k in ("success", "last_success_timestamp", "last_run_timestamp")}
    if full:
        drill_state = {"success": run_ok, "last_run_timestamp": ended,
                       "last_success_timestamp": ended if run_ok else prev_drill.get("last_success_timestamp")}

    prev_phase = prev.get("phase_state") if isinstance(prev.get("phase_state"), dict) else {}
    phase_state = {p: dict(prev_phase[p]) for p in PHASES if isinstance(prev_phase.get(p), dict)}
    for p in phases:
        ok = p.ok and bool(_phase_outcomes(ledger, p.phase)) and not _phase_outcomes(ledger, p.phase).get("failed")
        if p.phase == "restore" and _phase_outcomes(ledger, "restore").get("planned"):
            continue  # a dry run records nothing
        state = phase_state.setdefault(p.phase, {})
        state.update({"success": ok, "duration_seconds": p.duration, "last_run_timestamp": p.ended,
                      "last_success_timestamp": p.ended if ok else state.get("last_success_timestamp")})

    ok_rows = [r for r in rows if r.ok]
    covered = [r for r in rows if r.status.get("verify") == "verified" and r.status.get("restore") != "failed"]
    coverage = prev.get("coverage") if isinstance(prev.get("coverage"), dict) else None
    rpo, rpo_image = prev.get("rpo_seconds"), prev.get("rpo_image")
    if "backup" in by and "verify" in by:
        coverage = {"selected": image_count, "covered": len(covered),
                    "ratio": len(covered) / image_count if image_count else 0.0}
    if "verify" in by:
        dated = [r for r in covered if r.confirmed]
        if dated:
            oldest = min(dated, key=lambda r: r.confirmed)
            rpo, rpo_image = ended - oldest.confirmed, oldest.name
        else:
            rpo, rpo_image = None, None

    restore, verify = by.get("restore"), by.get("verify")
    rto = restore.duration + (verify.duration if verify else 0.0) if restore and full else None
    failed_rows = [r.name for r in rows if not r.ok]
    phase_dicts = {p.phase: p.as_dict() for p in phases}
    content = verify or by.get("backup") or restore
    ct = content.totals() if content else {}
    moved = sum(phase_dicts[p]["moved_bytes"] for p in phase_dicts if p != "verify")
    skipped = sum(phase_dicts[p]["present_bytes"] + phase_dicts[p]["mounted_bytes"] for p in phase_dicts
                  if p != "verify")
    failures = [{"phase": p.phase, **f.as_dict()} for p in phases for f in p.failures]
    return {
        "store": store, "source": source, "dest": dest, "started": started, "ended": ended,
        "full_drill": full, "phases_run": [p.phase for p in phases], "success": run_ok,
        "dry_run": bool(restore and _phase_outcomes(ledger, "restore").get("planned")),
        "drill": drill_state, "phase_state": phase_state,
        "repositories_found_by": found_by, "generation": generation,
        "coverage": coverage, "rpo_seconds": rpo, "rpo_image": rpo_image, "rto_seconds": rto,
        "summary": {
            "images": image_count, "ok": len(ok_rows), "failed": len(failed_rows),
            "covered": len(covered) if "verify" in by else None,
            "by_phase": {p.phase: _phase_outcomes(ledger, p.phase) for p in phases},
            "content_objects": ct.get("objects", 0), "content_bytes": ct.get("bytes", 0),
            "bytes": {"ok": ct.get("bytes", 0) - ct.get("failed_bytes", 0), "failed": ct.get("failed_bytes", 0),
                      "skipped": skipped, "transferred": moved},
        },
        "definitions": DEFINITIONS,
        "images": [r.as_dict() for r in rows],
        "phases": phase_dicts,
        "failures": failures,
        "failed_images": failed_rows,
        "notes": list(notes or []) + [n for p in phases for n in p.notes],
    }


def summary_lines(report: dict) -> list[str]:
    """The figures a person reads at the end of a run; each adds up (see DEFINITIONS)."""
    s = report["summary"]
    n = s["images"]
    lines = [f"images: {n} ({s['ok']} ok, {s['failed']} failed)"]
    words = {"backup": ("copied", "unchanged", "failed"), "restore": ("pushed", "present", "planned", "failed"),
             "verify": ("verified", "failed")}
    for phase, data in report["phases"].items():
        outcomes = s["by_phase"].get(phase, {})
        parts = [f"{outcomes.get(w, 0)} {w}" for w in words[phase] if outcomes.get(w, 0) or w != "planned"]
        line = f"{phase}: {' + '.join(parts)} = {sum(outcomes.values())} images"
        objs = [f"{data[k + '_objects']} {label} ({human_bytes(data[k + '_bytes'])})" for k, label in (
            ("moved", "downloaded" if phase == "backup" else "uploaded"), ("mounted", "mounted"),
            ("present", "already stored" if phase == "backup" else "already present"), ("checked", "checked"),
            ("failed", "failed")) if data[k + "_objects"]]
        unit = "placements" if phase == "restore" else "objects"
        line += (f"; {data['objects']} {unit} ({data['manifests']} manifests, {data['blobs']} blobs), "
                 f"{human_bytes(data['bytes'])}" + (": " + " + ".join(objs) if objs else ""))
        rate = data["rate_bytes_per_second"]
        line += f"; {human_seconds(data['duration_seconds'])}" + (f", {human_bytes(rate)}/s" if rate else "")
        lines.append(line)
    if report.get("coverage") and "verify" in report["phases"] and "backup" in report["phases"]:
        c = report["coverage"]
        lines.append(f"coverage: {c['covered']} of {c['selected']} selected images ({c['ratio']:.0%})")
    if report.get("rpo_seconds") is not None and report.get("rpo_image"):
        lines.append(f"RPO: {human_seconds(report['rpo_seconds'])} (oldest covered copy: {report['rpo_image']})")
    if report.get("rto_seconds") is not None:
        lines.append(f"RTO: {human_seconds(report['rto_seconds'])} (restore + verify)")
    return lines


def families(report: dict) -> Iterable[Metric]:
    store = report.get("store", "")
    drill = report.get("drill") if isinstance(report.get("drill"), dict) else {}
    phase_state = report.get("phase_state") if isinstance(report.get("phase_state"), dict) else {}

    def one(value: float | None) -> list:
        return [([store], value)] if value is not None else []

    success = drill.get("success")
    yield gauge("regwatch_drill_success", "1 if the last full drill (backup, restore into the destination and verify "
                "of the same store, in one run) passed, else 0. Cached: from the last drill's report.",
                ["store"], one(None if success is None else float(bool(success))))
    yield gauge("regwatch_drill_last_success_timestamp_seconds", "When the last passing full drill ended (Unix time).",
                ["store"], one(drill.get("last_success_timestamp")))
    yield gauge("regwatch_drill_last_run_timestamp_seconds", "When the last full drill ended (Unix time).",
                ["store"], one(drill.get("last_run_timestamp")))
    rows = [(p, s) for p, s in sorted(phase_state.items()) if isinstance(s, dict)]
    yield gauge("regwatch_drill_phase_success", "1 if the phase passed the last time it ran (alone or in a drill).",
                ["store", "phase"], [([store, p], float(bool(s.get("success")))) for p, s in rows])
    yield gauge("regwatch_drill_phase_last_success_timestamp_seconds", "When the phase last passed (Unix time).",
                ["store", "phase"], [([store, p], s.get("last_success_timestamp")) for p, s in rows])
    yield gauge("regwatch_drill_duration_seconds", "Duration of the last run of each phase.", ["store", "phase"],
                [([store, p], s.get("duration_seconds")) for p, s in rows])
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    if summary:
        yield gauge("regwatch_drill_images", "Images (tags) of the last drill run: ok (every phase passed) or failed.",
                    ["store", "result"], [([store, "ok"], summary.get("ok", 0)),
                                          ([store, "failed"], summary.get("failed", 0))])
        b = summary.get("bytes") or {}
        yield gauge("regwatch_drill_bytes", "Bytes of the last drill run: ok (content that passed), failed, skipped "
                    "(already there or mounted: not sent), transferred (downloaded + uploaded).", ["store", "result"],
                    [([store, r], b.get(r, 0)) for r in ("ok", "failed", "skipped", "transferred")])
    coverage = report.get("coverage") if isinstance(report.get("coverage"), dict) else {}
    yield gauge("regwatch_drill_coverage_ratio", "Share of the source's selected tags that are in the store and "
                "verified, from the last run with a backup and a verify.", ["store"], one(coverage.get("ratio")))
    yield gauge("regwatch_drill_rpo_seconds", "Recovery point: age of the copy of the oldest covered image (since a "
                "backup last saw the source serve it) when the last verify ended.", ["store"],
                one(report.get("rpo_seconds")))


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
        data = json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_reports(report: dict, report_dir: Path) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = report_dir / "report.json", report_dir / "report.html"
    write_atomic(json_path, json.dumps(report, indent=2, sort_keys=True))
    write_atomic(html_path, render_html(report))
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
    phases = report["phases"]
    phase_rows = "".join(
        f"<tr><td>{e(p)}</td><td>{human_seconds(d['duration_seconds'])}</td>"
        f"<td>{e(', '.join(f'{v} {k}' for k, v in sorted(d['images'].items())) or '-')}</td>"
        f"<td>{d['objects']} ({d['manifests']} manifests, {d['blobs']} blobs)</td><td>{human_bytes(d['bytes'])}</td>"
        f"<td>{d['moved_objects']} ({human_bytes(d['moved_bytes'])})</td>"
        f"<td>{d['mounted_objects']} ({human_bytes(d['mounted_bytes'])})</td>"
        f"<td>{d['present_objects']} ({human_bytes(d['present_bytes'])})</td>"
        f"<td>{d['checked_objects']}</td><td>{d['failed_objects']}</td>"
        f"<td>{human_bytes(d['rate_bytes_per_second']) + '/s' if d['rate_bytes_per_second'] else '-'}</td></tr>"
        for p, d in phases.items())
    run = [p for p in ("backup", "restore", "verify") if p in phases]

    def refs(r: dict) -> str:
        return "<br>".join(e(f"{x.get('artifactType') or '?'} {x['digest'][:19]}… ({x['via']})")
                           for x in r["referrers"]) or "-"

    def image_row(r: dict) -> str:
        cells = [e(r["image"]), e(r["digest"][:19]) + "…", e(", ".join(r["platforms"]) or "-"), e(r["size"]), refs(r)]
        cells += [e(r["status"].get(p, "-")) for p in run]
        cells.append(e("; ".join(r["problems"])[:500]))
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    image_rows = "".join(image_row(r) for r in report["images"]) or \
        f"<tr><td colspan={6 + len(run)}>no image</td></tr>"
    failures = "".join(f"<tr><td>{e(f['phase'])}</td><td>{e(f['image'])}</td><td>{e(f['message'])}</td></tr>"
                       for f in report["failures"]) or "<tr><td colspan=3>none</td></tr>"
    summary = "".join(f"<li>{e(line)}</li>" for line in summary_lines(report))
    notes = "".join(f"<li>{e(n)}</li>" for n in report.get("notes") or [])
    defs = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in report["definitions"].items())
    phases_run = e(", ".join(report["phases_run"]) or "-") + (" (full drill)" if report["full_drill"] else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>regwatch drill: {e(status)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #999;padding:4px 8px;text-align:left;vertical-align:top}}
.PASSED,.verified,.copied,.unchanged,.pushed,.present{{color:#070}}.FAILED,.failed{{color:#b00}}</style></head><body>
<h1>regwatch drill <span class="{status}">{status}</span></h1>
<table>
<tr><th>store</th><td>{e(report['store'])}</td></tr>
<tr><th>source</th><td>{e(str(report.get('source') or '-'))}</td></tr>
<tr><th>destination</th><td>{e(str(report.get('dest') or '-'))}</td></tr>
<tr><th>phases</th><td>{phases_run}</td></tr>
<tr><th>repositories found by</th><td>{e(report.get('repositories_found_by') or '-')}</td></tr>
<tr><th>generation</th><td>{e(str(report.get('generation') or '-'))}</td></tr>
<tr><th>started</th><td>{_ts(report['started'])}</td></tr>
<tr><th>ended</th><td>{_ts(report['ended'])}</td></tr>
</table>
<h2>Summary</h2><ul>{summary}</ul>
{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}
<h2>Phases</h2>
<table><tr><th>phase</th><th>duration</th><th>images</th><th>objects</th><th>bytes</th><th>moved</th><th>mounted</th>
<th>present</th><th>checked</th><th>failed</th><th>rate</th></tr>{phase_rows}</table>
<h2>Images</h2>
<table><tr><th>image</th><th>digest</th><th>platforms</th><th>size</th><th>referrers</th>
{''.join(f'<th>{p}</th>' for p in run)}<th>problems</th></tr>{image_rows}</table>
<h2>Failures</h2>
<table><tr><th>phase</th><th>image</th><th>problem</th></tr>{failures}</table>
<h2>Definitions</h2>
<table>{defs}</table>
</body></html>
"""
