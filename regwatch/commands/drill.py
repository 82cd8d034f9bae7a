"""``regwatch drill``: backup, restore, verify and report (see docs/drill.md)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from regwatch.commands.common import NO_CREDENTIALS_URL, load_or_exit

log = logging.getLogger("regwatch.drill")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backup", "do_backup", is_flag=True, help="Copy --source into the --store.")
@click.option("--restore", "do_restore", is_flag=True, help="Push the --store into --dest.")
@click.option("--verify", "do_verify", is_flag=True, help="Re-read and check every blob of the --store.")
@click.option("--source", metavar="REG", type=NO_CREDENTIALS_URL, help="Registry URL or target name to back up.")
@click.option("--dest", metavar="REG", type=NO_CREDENTIALS_URL,
              help="Registry URL or target name to restore into (a scratch registry).")
@click.option("--against", metavar="REG", type=NO_CREDENTIALS_URL,
              help="With --verify: the registry must serve the store's digests.")
@click.option("--store", "store_dir", metavar="DIR", required=True, type=click.Path(file_okay=False),
              help="OCI image layout directory holding the backup.")
@click.option("--repo", "repos", metavar="PATTERN", multiple=True,
              help="Repository glob to back up (repeatable; default: every repository).")
@click.option("--force", is_flag=True, help="Restore: move destination tags that point to another digest.")
@click.option("--dry-run", is_flag=True, help="Restore: list what would change, push nothing.")
@click.option("--report-dir", type=click.Path(file_okay=False), help="Where report.json/html go (default: the store).")
@click.option("--textfile-dir", type=click.Path(file_okay=False),
              help="Write regwatch_drill.prom here (default: drill.textfile_dir from the config).")
@click.option("--pushgateway", metavar="URL", type=NO_CREDENTIALS_URL,
              help="Also push the drill metrics to this Pushgateway.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (targets, drill).")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent downloads/uploads (verify uses every core).")
def drill(do_backup: bool, do_restore: bool, do_verify: bool, source: str | None, dest: str | None,
          against: str | None, store_dir: str, repos: tuple[str, ...], force: bool, dry_run: bool,
          report_dir: str | None, textfile_dir: str | None, pushgateway: str | None, config_path: str | None,
          parallel: int) -> None:
    """Disaster-recovery drill. Without --backup/--restore/--verify, runs all three:
    --source REG --dest REG --store DIR. Exit 0 passed, 1 a check failed, 2 bad usage."""
    from regwatch.drill.backup import backup
    from regwatch.drill.common import DrillUsageError, open_registry
    from regwatch.drill.report import build_report, push, read_previous, write_reports, write_textfile
    from regwatch.drill.restore import restore
    from regwatch.drill.store import Store
    from regwatch.drill.verify import verify

    config = load_or_exit(config_path) if config_path else None
    full = not (do_backup or do_restore or do_verify)
    if full:
        do_backup = do_restore = do_verify = True
        if not (source and dest):
            raise click.UsageError("the full drill needs --source REG and --dest REG (or pick one of "
                                   "--backup, --restore, --verify)")
    if do_backup and not source:
        raise click.UsageError("--backup needs --source REG (a registry URL or a target name from --config)")
    if do_restore and not dest:
        raise click.UsageError("--restore needs --dest REG (a registry URL or a target name from --config)")
    if against and not do_verify:
        raise click.UsageError("--against only works with --verify")
    if (force or dry_run) and not do_restore:
        raise click.UsageError("--force and --dry-run only work with --restore")

    try:
        src_client = open_registry(source, config, pool_size=parallel * 2) if do_backup else None
        dst_client = open_registry(dest, config, pool_size=parallel * 2) if do_restore else None
        against_client = open_registry(against, config) if against else None
    except DrillUsageError as exc:
        raise click.UsageError(str(exc)) from None

    started = time.time()
    try:
        store = Store(store_dir, create=do_backup)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from None
    phases = []
    if do_backup:
        phases.append(backup(src_client, store, list(repos), parallel=parallel))
    if do_restore:
        phases.append(restore(dst_client, store, force=force, dry_run=dry_run, parallel=parallel))
        for change in phases[-1].changes:
            click.echo(change)
    if do_verify:
        phases.append(verify(store, against=against_client or (dst_client if full else None)))

    rdir = Path(report_dir) if report_dir else Path(store_dir)
    report = build_report(str(Path(store_dir).resolve()), phases, started=started,
                          source=src_client.url if src_client else None,
                          dest=dst_client.url if dst_client else None, previous=read_previous(rdir))
    json_path, html_path = write_reports(report, rdir)
    tdir = textfile_dir or (config.drill.textfile_dir if config else None)
    if tdir:
        write_textfile(report, Path(tdir))
    if pushgateway:
        try:
            push(report, pushgateway)
        except OSError as exc:
            click.echo(f"Error: pushing to the Pushgateway {pushgateway} failed: {exc}; check the URL and that "
                       "it is reachable (the report and textfile were written)", err=True)
            report["success"] = False
    for failure in report["failures"]:
        click.echo(f"FAILED {failure['phase']} {failure['image']}: {failure['message']}", err=True)
    click.echo(f"drill {'passed' if report['success'] else 'FAILED'}: {report['images']['total']} images, "
               f"{report['blobs']} blobs, {report['bytes']['transferred']} bytes transferred; report: {json_path}, "
               f"{html_path}", err=not report["success"])
    sys.exit(0 if report["success"] else 1)
