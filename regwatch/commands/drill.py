"""``regwatch drill``: backup, restore, verify, prune, and report (see docs/drill.md)."""

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
@click.option("--prune", "do_prune", is_flag=True, help="Keep the last --keep N generations of the --store, "
              "delete older ones and every blob no kept generation references.")
@click.option("--keep", type=click.IntRange(1, 100000), metavar="N", help="With --prune: generations to keep.")
@click.option("--source", metavar="REG", type=NO_CREDENTIALS_URL, help="Registry URL or target name to back up.")
@click.option("--dest", metavar="REG", type=NO_CREDENTIALS_URL,
              help="Registry URL or target name to restore into (a scratch registry).")
@click.option("--against", metavar="REG", type=NO_CREDENTIALS_URL,
              help="With --verify: the registry must serve the store's digests.")
@click.option("--store", "store_dir", metavar="DIR", required=True, type=click.Path(file_okay=False),
              help="OCI image layout directory holding the backup.")
@click.option("--repo", "repos", metavar="PATTERN", multiple=True,
              help="Repository to back up: a name (no listing needed) or a glob matched against the catalog "
                   "(repeatable; default: every repository).")
@click.option("--tag", "tags", metavar="REGEX", multiple=True,
              help="Back up only tags matching (the whole tag; repeatable: any). Signature and referrer tags "
                   "follow their image.")
@click.option("--exclude-tag", "exclude_tags", metavar="REGEX", multiple=True,
              help="Leave out tags matching (the whole tag; repeatable).")
@click.option("--artifact-type", "artifact_types", metavar="TYPE", multiple=True,
              help="Take only referrers of this artifactType from the referrers API (repeatable; default all).")
@click.option("--generation", type=int, metavar="N",
              help="Restore or verify the store as of generation N (a backup's index; 0 the latest, -1 the one "
                   "before, ...).")
@click.option("--force", is_flag=True, help="Restore: move destination tags that point to another digest.")
@click.option("--dry-run", is_flag=True, help="Restore: list what would change; push nothing, write no report "
              "and no metrics.")
@click.option("--max-rps", type=click.FloatRange(0.1, 10000), metavar="N",
              help="At most N requests per second to each registry.")
@click.option("--timeout", "timeout", metavar="DURATION",
              help="End the whole run after this long (30m, 6h; default: no limit). A request still waiting "
                   "then fails with what it waited on; a rate limit that would need longer says when it resets.")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle for https registries given by URL.")
@click.option("--insecure", is_flag=True, help="Do not verify the TLS certificate of registries given by URL.")
@click.option("--report-dir", type=click.Path(file_okay=False), help="Where report.json/html go (default: the store).")
@click.option("--textfile-dir", type=click.Path(file_okay=False),
              help="Write regwatch_drill.prom here (default: drill.textfile_dir from the config).")
@click.option("--pushgateway", metavar="URL", type=NO_CREDENTIALS_URL,
              help="Also push the drill metrics to this Pushgateway.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (targets, drill).")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Concurrent downloads/uploads (verify uses every core).")
def drill(do_backup: bool, do_restore: bool, do_verify: bool, do_prune: bool, keep: int | None, source: str | None,
          dest: str | None, against: str | None, store_dir: str, repos: tuple[str, ...], tags: tuple[str, ...],
          exclude_tags: tuple[str, ...], artifact_types: tuple[str, ...], generation: int | None, force: bool,
          dry_run: bool, max_rps: float | None, timeout: str | None, ca_file: str | None, insecure: bool,
          report_dir: str | None, textfile_dir: str | None, pushgateway: str | None, config_path: str | None,
          parallel: int) -> None:
    """Disaster-recovery drill. Without --backup/--restore/--verify, runs all three:
    --source REG --dest REG --store DIR. Exit 0 passed, 1 a check failed, 2 bad usage."""
    from regwatch.drill.common import DrillUsageError, Ledger, PhaseResult, open_registry
    from regwatch.drill.select import TagFilter
    from regwatch.drill.store import Store, StoreError, StoreMissing
    from regwatch.oci import BadName

    config = load_or_exit(config_path) if config_path else None
    if do_prune:
        if do_backup or do_restore or do_verify or source or dest:
            raise click.UsageError("--prune runs alone: --prune --keep N --store DIR")
        if keep is None:
            raise click.UsageError("--prune needs --keep N (the number of generations to keep)")
        _prune(store_dir, keep)
        return
    if keep is not None:
        raise click.UsageError("--keep only works with --prune")
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
    if dry_run and full:
        raise click.UsageError("--dry-run works with --restore alone (a full drill pushes by definition)")
    if (tags or exclude_tags or repos or artifact_types) and not do_backup:
        raise click.UsageError("--repo, --tag, --exclude-tag and --artifact-type select what a --backup takes")
    if generation is not None and do_backup:
        raise click.UsageError("--generation picks what --restore or --verify read; a backup always writes a new one")
    try:
        tag_filter = TagFilter.compile(tags, exclude_tags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        for pattern in repos:
            if not set("*?[") & set(pattern):
                from regwatch.oci import check_repository

                check_repository(pattern)
    except BadName as exc:
        raise click.UsageError(f"--repo {exc}") from None

    deadline = None
    if timeout is not None:
        from regwatch.config import parse_duration

        try:
            deadline = parse_duration(timeout)
        except ValueError as exc:
            raise click.UsageError(f"--timeout {timeout!r}: {exc}") from None
    opts = {"ca_file": ca_file, "insecure": insecure, "max_rps": max_rps}
    try:
        src = open_registry(source, config, pool_size=parallel * 2, role="source", **opts) if do_backup else None
        dst = open_registry(dest, config, pool_size=parallel * 2, role="destination", **opts) if do_restore else None
        chk = open_registry(against, config, role="--against registry", **opts) if against else None
    except DrillUsageError as exc:
        raise click.UsageError(str(exc)) from None

    started = time.time()
    rdir = Path(report_dir) if report_dir else Path(store_dir)
    ledger = Ledger()
    phases: list[PhaseResult] = []
    found_by = used_generation = None
    store = None
    try:
        store = Store(store_dir, create=do_backup)
        if generation is not None:
            used_generation = store.resolve_generation(generation)
    except StoreMissing as exc:
        raise click.UsageError(str(exc)) from None
    except StoreError as exc:
        broken = PhaseResult("backup" if do_backup else "restore" if do_restore else "verify")
        broken.fail("*", str(exc))
        phases.append(broken.finish())

    if store is not None:
        from regwatch.budget import Run, running

        with running(Run(deadline, "drill")):
            phases, found_by, used_generation = _run_phases(
                store, ledger, src, dst, chk, full=full, do_backup=do_backup, do_restore=do_restore,
                do_verify=do_verify, repos=list(repos), tag_filter=tag_filter, artifact_types=artifact_types,
                generation=used_generation, force=force, dry_run=dry_run, parallel=parallel)

    from regwatch.drill.report import build_report, push, read_previous, summary_lines, write_reports, write_textfile

    report = build_report(str(Path(store_dir).resolve()), phases, ledger, started=started, full=full,
                          source=src.url if src else None, dest=dst.url if dst else None,
                          previous=read_previous(rdir), found_by=found_by, generation=used_generation)
    limits = [m for reg in (src, dst, chk) if reg is not None and (m := reg.describe_reset())]
    report["notes"].extend(limits)
    for change in (phases[-1].changes if phases and phases[-1].phase == "restore" else []):
        click.echo(change)
    if dry_run:
        for line in summary_lines(report):
            click.echo(line)
        click.echo(f"dry run: nothing was pushed to {dst.url}, and no report or metrics were written", err=True)
        sys.exit(0 if report["success"] else 1)

    json_path, html_path = write_reports(report, rdir)
    tdir = textfile_dir or (config.drill.textfile_dir if config else None)
    if tdir:
        write_textfile(report, Path(tdir))
    pushed_ok = True
    if pushgateway:
        try:
            push(report, pushgateway)
        except OSError as exc:
            click.echo(f"Error: pushing to the Pushgateway {pushgateway} failed: {exc}; check the URL and that "
                       "it is reachable (the report and textfile were written)", err=True)
            pushed_ok = False
    for failure in report["failures"]:
        click.echo(f"FAILED {failure['phase']} {failure['image']}: {failure['message']}", err=True)
    ok = report["success"] and pushed_ok
    out = sys.stdout if ok else sys.stderr
    for line in summary_lines(report) + report["notes"]:
        click.echo(line, file=out)
    what = "drill" if full else " + ".join(report["phases_run"])
    click.echo(f"{what} {'passed' if ok else 'FAILED'}: {report['summary']['images']} images, "
               f"{report['summary']['ok']} ok; report: {json_path}, {html_path}", file=out)
    sys.exit(0 if ok else 1)


def _run_phases(store, ledger, src, dst, chk, *, full: bool, do_backup: bool, do_restore: bool,
                do_verify: bool, repos: list[str], tag_filter, artifact_types: tuple[str, ...],
                generation: int | None, force: bool, dry_run: bool, parallel: int):
    """Run the phases asked for; an unexpected error ends the phase as a failure (the report is still
    written), never as a traceback."""
    from regwatch.drill.backup import Backup
    from regwatch.drill.common import PhaseResult
    from regwatch.drill.restore import restore
    from regwatch.drill.verify import verify

    phases: list[PhaseResult] = []
    found_by = None
    only = None

    def guarded(phase: str, fn):
        try:
            return fn()
        except Exception as exc:  # the report must be written for every drill that started
            log.debug("drill %s crashed", phase, exc_info=True)
            res = PhaseResult(phase)
            res.fail("*", f"{phase} stopped on an unexpected {type(exc).__name__}: {str(exc)[:300]}")
            return res.finish(ledger)

    if do_backup:
        job = Backup(src, store, ledger, parallel=parallel, tag_filter=tag_filter, artifact_types=artifact_types)
        phases.append(guarded("backup", lambda: job.run(repos)))
        found_by = job.selection.found_by if job.selection else None
        generation = job.generation
        # restore and verify take what this backup selected; a tag whose backup failed keeps its older copy
        only = set(ledger.rows)
        if not phases[-1].ok and full and not only:
            return phases, found_by, generation
    if do_restore:
        phases.append(guarded("restore", lambda: restore(dst, store, force=force, dry_run=dry_run, parallel=parallel,
                                                         ledger=ledger, generation=generation if not do_backup
                                                         else None, only=only)))
    if do_verify:
        against = chk.client if chk else (dst.client if full else None)
        phases.append(guarded("verify", lambda: verify(store, against=against, ledger=ledger,
                                                       generation=generation if not do_backup else None,
                                                       only=only)))
    return phases, found_by, generation


def _prune(store_dir: str, keep: int) -> None:
    from regwatch.drill.common import human_bytes
    from regwatch.drill.prune import PruneError, prune
    from regwatch.drill.store import Store, StoreError, StoreMissing

    try:
        store = Store(store_dir)
        result = prune(store, keep)
    except StoreMissing as exc:
        raise click.UsageError(str(exc)) from None
    except (StoreError, PruneError, OSError) as exc:
        click.echo(f"Error: prune of {store_dir} failed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"prune: kept generations {', '.join(map(str, result.kept_generations)) or 'none'}; removed "
               f"{len(result.removed_generations)} generation(s), {result.removed_blobs} blobs "
               f"({human_bytes(result.removed_bytes)}); {result.kept_blobs} blobs ({human_bytes(result.kept_bytes)}) "
               "kept")
