from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--listen", help="HOST:PORT for /metrics (default 127.0.0.1:9732, or a free port if taken).")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds instead of waiting for Ctrl-C (0: print and stop).")
@click.option("--starter-config", type=click.Path(dir_okay=False, path_type=Path), default=Path("regwatch.yml"),
              show_default=True,
              help="Where to write a commented starter config for your own registry; an existing file is kept.")
@click.option("--no-starter-config", is_flag=True, help="Write no starter config.")
@click.option("--traffic/--no-traffic", default=True, show_default=True,
              help="After the printout, keep pulling (and now and then failing a login) every 5 s so rates move. "
                   "With --no-traffic only regwatch's own collections and probes (every 15 s) reach the "
                   "registry.")
def demo(listen: str | None, duration: float | None, starter_config: Path, no_starter_config: bool,
         traffic: bool) -> None:
    """A throwaway real registry with sample images and traffic, watched by serve.

    Starts Debian's docker-registry with htpasswd auth and a pull-through cache in front of it
    in a temporary directory, pushes a few small images, pulls them (and fails a few logins),
    then runs the collectors and prints what /metrics says, three commands to try, and where
    it wrote a starter config for your own registry. Ctrl-C removes everything else it made.
    """
    from regwatch import demo as demo_module
    from regwatch.localregistry import RegistryStartError

    try:
        demo_module.run(listen, duration, click.echo, None if no_starter_config else starter_config,
                        traffic=traffic)
    except RegistryStartError as exc:
        raise click.ClickException(str(exc)) from None
