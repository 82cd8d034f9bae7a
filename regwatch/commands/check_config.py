from __future__ import annotations

import click

from regwatch.commands.common import load_or_exit


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--strict", is_flag=True, help="Treat warnings (a storage path that does not exist here) as problems.")
def check_config(file: str, strict: bool) -> None:
    """Validate a config FILE: exit 0 if good, exit 2 listing every problem (key path, what is wrong).

    Warnings (a storage path that does not exist on this machine) are printed and exit 0, unless --strict."""
    config = load_or_exit(file, watching=True)
    for warning in config.warnings:
        click.echo(f"warning: {file}: {warning}", err=True)
    if strict and config.warnings:
        raise click.exceptions.Exit(2)
    click.echo(f"{file}: OK ({_count(len(config.targets), 'target')}, {_count(len(config.storage), 'storage volume')}, "
               f"{_count(len(config.auth_logs), 'auth log source')})")
