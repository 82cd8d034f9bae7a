"""Building metric families from rows: the one ``gauge()`` (and ``counter()``) helper collectors use."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

Rows = Iterable[tuple[list[str], float]]


def gauge(name: str, doc: str, labels: list[str], rows: Rows = ()) -> GaugeMetricFamily:
    """A gauge family with one sample per (label values, value) row; a row whose value is None is left out
    (no sample is better than a false zero)."""
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        if value is not None:
            family.add_metric(values, value)
    return family


def counter(name: str, doc: str, labels: list[str], rows: Rows = ()) -> CounterMetricFamily:
    """A counter family; ``name`` is given without ``_total`` (prometheus_client appends it)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        if value is not None:
            family.add_metric(values, value)
    return family
