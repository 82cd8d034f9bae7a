"""The ``probe`` collector: one pull-latency probe per ``targets[].probes[]`` entry, on its own schedule.

A failed probe is ``regwatch_probe_success 0`` plus one increment of
``regwatch_probe_failures_total{reason}``, not a failed collection (as blackbox_exporter
does it): the collector itself only fails if it has a bug. Counters and the histogram live on
the collector instance, so they accumulate across runs.

Example exposition (a full probe that succeeded, then one that found no tag)::

    # HELP regwatch_probe_success 1 if the last probe pulled the image completely and every digest matched.
    # TYPE regwatch_probe_success gauge
    regwatch_probe_success{image="library/alpine:3.20",target="hub"} 0.0
    # TYPE regwatch_probe_pull_duration_seconds histogram
    regwatch_probe_pull_duration_seconds_bucket{image="library/alpine:3.20",le="0.5",target="hub"} 1.0
    regwatch_probe_pull_duration_seconds_count{image="library/alpine:3.20",target="hub"} 1.0
    # TYPE regwatch_probe_phase_duration_seconds gauge
    regwatch_probe_phase_duration_seconds{image="library/alpine:3.20",phase="manifest",target="hub"} 0.0021
    # TYPE regwatch_probe_failures_total counter
    regwatch_probe_failures_total{image="library/alpine:3.20",reason="not_found",target="hub"} 1.0
    # TYPE regwatch_probe_failed_phase gauge
    regwatch_probe_failed_phase{image="library/alpine:3.20",phase="manifest",target="hub"} 1.0
    # TYPE regwatch_probe_pulled_bytes_total counter
    regwatch_probe_pulled_bytes_total{image="library/alpine:3.20",target="hub"} 3.6e+06
    # TYPE regwatch_tls_cert_expiry_timestamp_seconds gauge
    regwatch_tls_cert_expiry_timestamp_seconds{target="hub"} 1.79e+09
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from regwatch.budget import Budget
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.config import Config, ProbeConfig
from regwatch.probes import PHASES, REASONS, Prober, ProbeResult, ProbeSpec, split_image

log = logging.getLogger("regwatch.collectors.probes")

# Fine around the 500 ms alert threshold, coarse beyond.
BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)


class ProbeCollector(Collector):
    name = "probe"

    def __init__(self, ctx: TargetContext, probe: ProbeConfig, *, report_tls: bool = True):
        target = ctx.target
        self.target = target
        self.probe_config = probe
        self.report_tls = report_tls
        self.endpoint = probe.mirror
        repository, reference = split_image(probe.image)
        self.spec = ProbeSpec(probe.mirror or target.url, repository, reference, mode=probe.mode,
                              platform=probe.platform, max_bytes=probe.max_bytes, timeout=probe.timeout,
                              credentials=ctx.credentials, name=target.name)
        self.prober = Prober(ca_file=str(target.tls.ca_file) if target.tls.ca_file else None,
                             insecure_skip_verify=target.tls.insecure_skip_verify,
                             reuse_connections=probe.reuse_connections, name=f"target {target.name}")
        self._lock = threading.Lock()
        self._buckets = [0] * len(BUCKETS)
        self._sum = 0.0
        self._failures = dict.fromkeys(REASONS, 0)
        self._bytes = 0
        self.last: ProbeResult | None = None

    @property
    def label_names(self) -> list[str]:
        return ["target", "image", "endpoint"] if self.endpoint else ["target", "image"]

    @property
    def label_values(self) -> list[str]:
        values = [self.target.name, self.probe_config.image]
        return values + [self.endpoint] if self.endpoint else values

    def collect(self) -> Iterable[Metric]:
        result = self.prober.probe(self.spec)
        with self._lock:
            self._record(result)
            return self._families(result)

    def _record(self, result: ProbeResult) -> None:
        self.last = result
        self._bytes += result.bytes_pulled
        if result.success:
            self._sum += result.total_seconds
            for i, bound in enumerate(BUCKETS):
                if result.total_seconds <= bound:
                    self._buckets[i] += 1
        else:
            self._failures[result.reason] += 1
            log.warning("probe failed", extra={"target": self.target.name, "image": self.probe_config.image,
                                               "reason": result.reason, "phase": result.failed_phase,
                                               "err": result.message})

    def _families(self, result: ProbeResult) -> list[Metric]:
        names, values = self.label_names, self.label_values
        success = GaugeMetricFamily(
            "regwatch_probe_success",
            "1 if the last probe pulled the image completely and every digest matched (cached; probes run on "
            "their own interval).", labels=names)
        success.add_metric(values, 1.0 if result.success else 0.0)
        histogram = HistogramMetricFamily(
            "regwatch_probe_pull_duration_seconds",
            "Duration of successful probe pulls: ping, auth, manifest, config and layers (manifest only in "
            "mode: manifest), connection set-up included.", labels=names)
        # _buckets are already cumulative: a pull is counted in every bucket whose bound it is under.
        buckets = [(_le(b), float(n)) for b, n in zip(BUCKETS, self._buckets, strict=True)]
        histogram.add_metric(values, buckets, self._sum)
        phases = GaugeMetricFamily(
            "regwatch_probe_phase_duration_seconds",
            "Time the last probe spent in each phase; dns, connect and tls summed over its connections; "
            "blob_first_byte is the part of blob before the first layer's first byte.",
            labels=[*names, "phase"])
        for phase in PHASES:
            phases.add_metric([*values, phase], result.phases[phase])
        failures = CounterMetricFamily("regwatch_probe_failures", "Failed probes by reason.",
                                       labels=[*names, "reason"])
        for reason, count in self._failures.items():
            failures.add_metric([*values, reason], float(count))
        pulled = CounterMetricFamily("regwatch_probe_pulled_bytes", "Bytes the probes read (manifests and blobs).",
                                     labels=names)
        pulled.add_metric(values, float(self._bytes))
        failed_phase = GaugeMetricFamily(
            "regwatch_probe_failed_phase", "1 for the phase the last probe failed in (absent after a success).",
            labels=[*names, "phase"])
        if not result.success and result.failed_phase:
            failed_phase.add_metric([*values, result.failed_phase], 1.0)
        families: list[Metric] = [success, histogram, phases, failures, pulled, failed_phase]
        if self.report_tls and result.cert_expiry is not None:
            tls_names = ["target", "endpoint"] if self.endpoint else ["target"]
            tls_values = [self.target.name, self.endpoint] if self.endpoint else [self.target.name]
            expiry = GaugeMetricFamily(
                "regwatch_tls_cert_expiry_timestamp_seconds",
                "Earliest notAfter (Unix time) of the certificate chain the registry presented to the last probe, "
                "recorded even when verification failed.", labels=tls_names)
            expiry.add_metric(tls_values, result.cert_expiry)
            families.append(expiry)
        return families

    def close(self) -> None:
        self.prober.close()


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


@job_factory("probe", help="Pull-latency probes (targets[].probes[]).")
def probe_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for target in config.targets:
        if not target.probes:
            continue
        ctx = contexts[target.name]
        seen_endpoints: set[str | None] = set()
        for probe in target.probes:
            # One series per endpoint for the certificate: the first probe through it reports it.
            first = probe.mirror not in seen_endpoints
            seen_endpoints.add(probe.mirror)
            collector = ProbeCollector(ctx, probe, report_tls=first)
            labels = dict(zip(collector.label_names[1:], collector.label_values[1:], strict=True))
            # The probe keeps its own deadline (probe.timeout) over all its exchanges; it never retries.
            yield Job(target.name, collector, probe.interval, Budget.local(probe.timeout), context=ctx,
                      labels=labels)
