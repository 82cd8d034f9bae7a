"""``regwatch generate alerts|dashboards``: write the rule files and Grafana dashboards.

The committed ``alerts/`` and ``dashboards/`` are this command's output with the defaults
(``make generate``); a test checks they match. Every threshold of
``regwatch.generate.options.AlertOptions`` is an option of ``generate alerts``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from regwatch.generate.options import AlertOptions


@click.group("generate")
def generate() -> None:
    """Write alert rules (alerts) or Grafana dashboards (dashboards)."""


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} team=platform")
        out[key.strip()] = value.strip()
    return out


def _threshold_options(func):  # noqa: ANN001, ANN202 - decorator
    """One --option per AlertOptions field with a scalar default."""
    for f in reversed(dataclasses.fields(AlertOptions)):
        if "help" not in f.metadata:
            continue
        kind = float if isinstance(f.default, float) else str
        func = click.option(f"--{f.name.replace('_', '-')}", f.name, type=kind, default=f.default,
                            show_default=True, help=f.metadata["help"])(func)
    return func


def _check_ratios(thresholds: dict[str, object]) -> None:
    for name, value in thresholds.items():
        meta = next(f.metadata for f in dataclasses.fields(AlertOptions) if f.name == name)
        if meta.get("ratio") and not 0 < float(value) <= 1:  # type: ignore[arg-type]
            raise click.BadParameter(f"{value} is not a ratio in (0, 1]; 85 % is 0.85",
                                     param_hint=f"--{name.replace('_', '-')}")


@generate.command("alerts")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("alerts"),
              show_default=True, help="Directory for regwatch.rules.yml, its promtool tests and prometheusrule.yaml.")
@_threshold_options
@click.option("--for", "for_durations", multiple=True, metavar="ALERT=DURATION",
              help="Override an alert's `for:` (repeatable), e.g. --for RegistryStorageAlmostFull=15m.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Extra label on every alert (repeatable), e.g. --label team=platform.")
@click.option("--rule-label", "rule_labels", multiple=True, metavar="KEY=VALUE",
              help="Label on the PrometheusRule resource, e.g. --rule-label release=kube-prometheus-stack.")
def alerts(out_dir: Path, for_durations: tuple[str, ...], labels: tuple[str, ...], rule_labels: tuple[str, ...],
           **thresholds: object) -> None:
    """Write the Prometheus rules, their promtool unit tests and a PrometheusRule."""
    from regwatch.generate.alerts import alert_names, for_seconds, write_all

    _check_ratios(thresholds)
    fors = _pairs(for_durations, "--for")
    known = alert_names()
    for name, duration in fors.items():
        if name not in known:
            raise click.BadParameter(f"no alert named {name!r}; alerts: {', '.join(sorted(known))}",
                                     param_hint="--for")
        try:
            for_seconds(duration)
        except ValueError as exc:
            raise click.BadParameter(f"{name}={duration}: {exc} (e.g. 5m, 1h)", param_hint="--for") from None
    options = AlertOptions(for_durations=fors, extra_labels=_pairs(labels, "--label"), **thresholds)  # type: ignore[arg-type]
    for path in write_all(out_dir, options, prometheusrule_labels=_pairs(rule_labels, "--rule-label")):
        click.echo(f"wrote {path}")


@generate.command("dashboards")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dashboards"),
              show_default=True,
              help="Directory for <uid>.json (Grafana's Import screen) and provisioning/<uid>.json (file "
                   "provisioning and the Grafana Helm chart's dashboard sidecar).")
@_threshold_options
def dashboards(out_dir: Path, **thresholds: object) -> None:
    """Write the Grafana dashboards (import form and provisioning form).

    The threshold options are those of `generate alerts`: pass the same ones so the lines on
    the panels sit where your alerts fire.
    """
    from regwatch.generate.dashboards import write_all

    _check_ratios(thresholds)
    for path in write_all(out_dir, AlertOptions(**thresholds)):  # type: ignore[arg-type]
        click.echo(f"wrote {path}")
