from __future__ import annotations

import click

from regwatch.commands.common import load_or_exit


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file: str) -> None:
    """Validate a config FILE: exit 0 if good, exit 2 listing every problem (key path, what is wrong)."""
    config = load_or_exit(file)
    click.echo(f"{file}: OK ({len(config.targets)} target(s), {len(config.storage)} storage volume(s), "
               f"{len(config.auth_logs)} auth log source(s))")
