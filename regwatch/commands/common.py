"""Pieces several commands share: loading the config with exit code 2 on any problem."""

from __future__ import annotations

import click

from regwatch.config import Config, ConfigError, load_config


class BadConfig(click.UsageError):
    """Exit 2 with every config problem listed; the message never holds a secret value."""

    def __init__(self, error: ConfigError):
        super().__init__(str(error))

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"Error: {self.format_message()}", err=True)


def load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise BadConfig(exc) from None
