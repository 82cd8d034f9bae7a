"""Pieces several commands share: loading the config with exit code 2 on any problem, and the
parameter types of values every command checks the same way (``--listen``, URLs on the command line)."""

from __future__ import annotations

import click

from regwatch.config import Config, ConfigError, CredentialsInURL, check_cli_url, load_config, parse_listen


class BadConfig(click.UsageError):
    """Exit 2 with every config problem listed; the message never holds a secret value."""

    def __init__(self, error: ConfigError):
        super().__init__(str(error))

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def load_or_exit(path: str, *, watching: bool = False) -> Config:
    """The config at ``path``, or exit 2 listing every problem. ``watching``: it is serve's config (or
    check-config's), so one that watches nothing is refused too."""
    try:
        return load_config(path, watching=watching)
    except ConfigError as exc:
        raise BadConfig(exc) from None


class ListenType(click.ParamType):
    """``--listen``: what the config's ``listen`` takes (a port, ``:PORT`` or ``HOST:PORT``)."""

    name = "HOST:PORT"

    def convert(self, value, param, ctx):
        try:
            return parse_listen(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class NoCredentialsURL(click.ParamType):
    """A registry URL or target name (``--source``, ``--dest``, ``--against``), a Pushgateway URL or an image
    reference (probe ``REF``) that must not carry user:password@: exit 2, the credentials never echoed."""

    name = "URL"

    def convert(self, value, param, ctx):
        try:
            return check_cli_url(value)
        except CredentialsInURL as exc:
            self.fail(str(exc), param, ctx)


LISTEN = ListenType()
NO_CREDENTIALS_URL = NoCredentialsURL()
