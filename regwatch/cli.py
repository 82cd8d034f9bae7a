"""The ``regwatch`` command. Subcommands live in ``regwatch/commands/`` and load only when used,
so ``regwatch --help`` stays instant."""

from __future__ import annotations

import importlib

import click

from regwatch import __version__

# command name -> ("module:attribute", one-line help shown by `regwatch --help` without importing it)
COMMANDS = {
    "serve": ("regwatch.commands.serve:serve", "Run the collectors and serve /metrics, /healthz, /readyz."),
    "check-config": ("regwatch.commands.check_config:check_config", "Validate a config file (exit 2 if invalid)."),
    "demo": ("regwatch.commands.demo:demo", "A throwaway real registry with traffic, watched by serve."),
    "probe": ("regwatch.commands.probe:probe", "Pull an image once and print how long each phase took."),
    "drill": ("regwatch.commands.drill:drill", "DR drill: back up, restore and verify images; report and metrics."),
    "generate": ("regwatch.commands.generate:generate",
                 "Write the alert rules (alerts) or Grafana dashboards (dashboards)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, _, attr = entry[0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regwatch")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, envvar="REGWATCH_LOG_LEVEL", help="Log verbosity (logfmt lines on stderr).")
def cli(log_level: str) -> None:
    """regwatch watches private container registries: Prometheus metrics, alert rules,
    Grafana dashboards and disaster-recovery drills."""
    from regwatch.logsetup import setup_logging

    setup_logging(log_level)


def main() -> None:
    cli(prog_name="regwatch")
