from __future__ import annotations

import click


@click.command("demo")
@click.option("--listen", help="HOST:PORT for /metrics (default 127.0.0.1:9732, or a free port if taken).")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds instead of waiting for Ctrl-C.")
def demo(listen: str | None, duration: float | None) -> None:
    """A throwaway real registry with sample images and traffic, watched by serve.

    Starts Debian's docker-registry with htpasswd auth in a temporary directory, pushes a few
    small images, pulls them (and fails a few logins), runs the collectors and prints where
    /metrics is. Ctrl-C removes everything it made.
    """
    from regwatch import demo as demo_module
    from regwatch.localregistry import RegistryStartError

    try:
        demo_module.run(listen, duration, click.echo)
    except RegistryStartError as exc:
        raise click.ClickException(str(exc)) from None
