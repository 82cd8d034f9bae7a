"""``regwatch generate alerts|dashboards``: write the rule files and Grafana dashboards.

The committed ``alerts/`` and ``dashboards/`` are this command's output with the defaults
(``make generate``); a test checks they match. Every field of
``regwatch.generate.options.AlertOptions`` is an option of both commands; its ``kind`` picks
the click type below, so a bad value is a usage error (exit 2) naming the option.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from regwatch.generate.options import AlertOptions, check, duration_seconds, option_fields, parse_selector


class PromDuration(click.ParamType):
    """A Prometheus duration (6h, 30m, 1h30m), kept as text: it goes into the rules as it is."""

    name = "duration"

    def __init__(self, zero: bool = False):
        self.zero = zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            duration_seconds(value, zero=self.zero)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value.strip()


class Selector(click.ParamType):
    """PromQL label matchers, without braces."""

    name = "matchers"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_selector(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


class Checked(click.ParamType):
    """A number checked by ``options.check`` (ratio intervals, positive seconds, counts)."""

    def __init__(self, field_name: str, base: click.ParamType):
        self.field_name, self.base = field_name, base
        self.name = base.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = self.base.convert(value, param, ctx)
        try:
            return check(self.field_name, number)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_TYPES = {
    "duration": lambda f: PromDuration(),
    "selector": lambda f: Selector(),
    "ratio": lambda f: Checked(f.name, click.FLOAT),
    "seconds": lambda f: Checked(f.name, click.FLOAT),
    "count": lambda f: Checked(f.name, click.INT),
    "text": lambda f: click.STRING,
}

# Options that took a number of hours or days before they became durations: a clear word
# instead of click's "No such option".
RENAMED = {"storage-predict-hours": ("storage-predict-horizon", "h"), "tls-warning-days": ("tls-warning-within", "d"),
           "tls-critical-days": ("tls-critical-within", "d"), "gc-max-age-days": ("gc-max-age", "d"),
           "drill-max-age-hours": ("drill-max-age", "h"), "robot-expiry-days": ("robot-expiry-within", "d")}


def _renamed(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None:
        return
    old = param.opts[0].lstrip("-")
    new, unit = RENAMED[old]
    raise click.BadParameter(f"--{old} is now --{new}, a Prometheus duration: --{new} {value}{unit}",
                             ctx=ctx, param=param)


def _pairs(values: tuple[str, ...], option: str, label: bool = False) -> dict[str, str]:
    """KEY=VALUE items; for a Prometheus label (``label``) the key must be a label name and the
    value not empty (an empty rule label deletes the label instead of setting it)."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise click.UsageError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} team=platform")
        if label and (not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", key) or key.startswith("__")):
            raise click.UsageError(f"{option} {item!r}: {key!r} is not a label name (letters, digits and _, "
                                   "not starting with a digit or __)")
        if label and key == "alertname":
            raise click.UsageError(f"{option} {item!r}: Prometheus sets alertname itself")
        if label and not value:
            raise click.UsageError(f"{option} {item!r}: the label needs a value")
        out[key] = value
    return out


def _threshold_options(func):
    """One --option per AlertOptions field, typed by its kind."""
    for old in reversed(RENAMED):
        func = click.option(f"--{old}", hidden=True, expose_value=False, callback=_renamed)(func)
    for f in reversed(option_fields()):
        func = click.option(f"--{f.name.replace('_', '-')}", f.name, type=_TYPES[f.metadata["kind"]](f),
                            default=f.default, show_default=True, help=f.metadata["help"])(func)
    return func


def _options(thresholds: dict[str, Any], **more: Any) -> AlertOptions:
    """The options, with the checks that concern more than one of them."""
    from regwatch.generate.alerts import problems

    options = AlertOptions(**thresholds, **more)
    for name, message in problems(options):
        raise click.BadParameter(message, param_hint=f"'--{name.replace('_', '-')}'")
    return options


@click.group("generate")
def generate() -> None:
    """Write alert rules (alerts) or Grafana dashboards (dashboards)."""


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
           **thresholds: Any) -> None:
    """Write the Prometheus rules, their promtool unit tests and a PrometheusRule.

    The rules select regwatch's series with --selector: it must match the job that scrapes
    regwatch (the default matches any job name containing "regwatch").
    """
    from regwatch.generate.alerts import alert_names, write_all

    fors = _pairs(for_durations, "--for")
    known = alert_names()
    for name, duration in fors.items():
        if name not in known:
            raise click.BadParameter(f"no alert named {name!r}; alerts: {', '.join(sorted(known))}",
                                     param_hint="--for")
        try:
            duration_seconds(duration, zero=True)
        except ValueError as exc:
            raise click.BadParameter(f"{name}={duration}: {exc}", param_hint="--for") from None
    options = _options(thresholds, for_durations=fors, extra_labels=_pairs(labels, "--label", label=True))
    for path in write_all(out_dir, options, prometheusrule_labels=_pairs(rule_labels, "--rule-label")):
        click.echo(f"wrote {path}")


@generate.command("dashboards")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dashboards"),
              show_default=True,
              help="Directory for <uid>.json (Grafana's Import screen) and provisioning/<uid>.json (file "
                   "provisioning and the Grafana Helm chart's dashboard sidecar).")
@_threshold_options
def dashboards(out_dir: Path, **thresholds: Any) -> None:
    """Write the Grafana dashboards (import form and provisioning form).

    The threshold options are those of `generate alerts`: pass the same ones so the lines on
    the panels sit where your alerts fire. The latency, auth-ratio and cache-ratio panels read
    the recording rules of `generate alerts`: load those into the same Prometheus.
    """
    from regwatch.generate.dashboards import write_all

    for path in write_all(out_dir, _options(thresholds)):
        click.echo(f"wrote {path}")
