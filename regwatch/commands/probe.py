"""``regwatch probe REF``: one pull-latency probe from the command line, for a person debugging a slow pull now."""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

import click

from regwatch.commands.common import NO_CREDENTIALS_URL

from regwatch.config import parse_duration


class _Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command("probe")
@click.argument("ref", type=NO_CREDENTIALS_URL)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Config file: REF may then start with a target's name (hub/library/alpine:3.20), and a target "
                   "whose url matches REF lends its credentials and TLS settings.")
@click.option("--mode", type=click.Choice(["manifest", "full"]), default=None,
              help="manifest: resolve the tag only; full: also pull config and layers.  [default: full]")
@click.option("--platform", default=None, help="Platform picked from an index.  [default: linux/amd64]")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None,
              help="Refuse to pull an image larger than this.  [default: 104857600]")
@click.option("--timeout", type=_Duration(), default=None, help="Time budget of the probe, e.g. 10s.  [default: 10s]")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA certificate(s) to trust for an https registry.")
@click.option("--insecure", is_flag=True, help="Do not verify the registry's TLS certificate.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def probe(ref: str, config_path: str | None, mode: str | None, platform: str | None, max_bytes: int | None,
          timeout: float | None, ca_file: str | None, insecure: bool, as_json: bool) -> None:
    """Pull REF once, as a container runtime does, and show how long each phase took.

    REF is 127.0.0.1:5000/library/alpine:3.20, https://registry.example.com/team/app@sha256:..., or with
    --config TARGET/IMAGE. Credentials come from the config, REGWATCH_USERNAME/REGWATCH_PASSWORD, or the
    docker config file, in that order. Exit 0 if the pull succeeded, 1 if it failed, 2 for bad usage.
    """
    from regwatch.commands.common import load_or_exit
    from regwatch.probes import BadReference, Prober, ProbeSpec, parse_reference, split_image

    config = load_or_exit(config_path) if config_path else None
    target, probe_config = None, None
    try:
        head, _, rest = ref.partition("/")
        target = config.target(head) if config is not None and rest and "://" not in ref else None
        if target is not None:
            repository, reference = split_image(rest)
            base_url = target.url
            image = rest
            probe_config = next((p for p in target.probes if p.image == image), None)
        else:
            parsed = parse_reference(ref)
            base_url, repository, reference, image = parsed.base_url, parsed.repository, parsed.reference, parsed.image
            if config is not None:
                target = next((t for t in config.targets if _origin(t.url) == _origin(base_url)), None)
    except BadReference as exc:
        raise click.BadParameter(f"{exc}", param_hint="REF") from None
    if probe_config is not None and probe_config.mirror:
        base_url = probe_config.mirror
    from regwatch.credentials import CredentialsError, resolve

    try:
        credentials = resolve(base_url, target)
    except CredentialsError as exc:
        raise click.UsageError(str(exc)) from None
    spec = ProbeSpec(
        base_url, repository, reference,
        mode=mode or (probe_config.mode if probe_config else "full"),
        platform=platform or (probe_config.platform if probe_config else "linux/amd64"),
        max_bytes=max_bytes or (probe_config.max_bytes if probe_config else 100 * 1024 * 1024),
        timeout=timeout or (probe_config.timeout if probe_config else 10.0),
        credentials=credentials, name=target.name if target else urlsplit(base_url).netloc)
    if ca_file is None and target is not None and target.tls.ca_file:
        ca_file = str(target.tls.ca_file)
    insecure = insecure or bool(target is not None and target.tls.insecure_skip_verify)
    prober = Prober(ca_file=ca_file, insecure_skip_verify=insecure, name=f"probe of {urlsplit(base_url).netloc}")
    try:
        result = prober.probe(spec)
    finally:
        prober.close()
    if as_json:
        out = {"endpoint": base_url, "image": image, "target": target.name if target else None,
               "mode": spec.mode, **result.to_dict()}
        click.echo(json.dumps(out, indent=2))
    else:
        _print_table(base_url, image, spec.mode, result)
    sys.exit(0 if result.success else 1)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _print_table(endpoint: str, image: str, mode: str, result) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from regwatch.probes import PHASES
    from regwatch.probes.conn import ADDITIVE_PHASES

    console = Console()
    # Everything a registry sent (an error message, a digest) is text, never markup.
    table = Table(title=escape(f"{endpoint}/{image} ({mode})"), title_justify="left")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    total = result.total_seconds or 1e-9
    for phase in PHASES:
        seconds = result.phases[phase]
        mark = "[red]failed here[/]" if phase == result.failed_phase else ""
        # blob_first_byte is part of blob: its share would be counted twice, so the shares add up to 100 %.
        share = f"{100 * seconds / total:.0f}%" if phase in ADDITIVE_PHASES else "(in blob)"
        table.add_row(phase, f"{seconds:.4f}", share, mark)
    table.add_row("[bold]total[/]", f"[bold]{result.total_seconds:.4f}[/]", "", "")
    console.print(table)
    size = f"{result.bytes_pulled} bytes over {result.requests} requests, {result.connections} connections"
    console.print(f"pulled {size}", highlight=False)
    if result.manifest_digest:
        console.print(f"manifest {result.manifest_digest}", highlight=False)
    if result.cert_expiry is not None:
        days = (result.cert_expiry - time.time()) / 86400
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.cert_expiry))
        console.print(f"TLS chain expires {when} ({days:.0f} days)", highlight=False)
    if result.success:
        console.print("[green]OK[/]")
    else:
        console.print(f"[red]FAILED[/] reason={result.reason} phase={result.failed_phase}: {escape(result.message)}",
                      highlight=False)
