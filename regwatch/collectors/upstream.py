"""The ``upstream`` collector: how much of an upstream registry's pull rate limit is left.

A pull-through cache in front of Docker Hub fetches with one account (or, anonymous, one IP address), and
when that account's pull limit runs out every pull of an image the cache does not hold fails. Docker Hub
says where the limit stands on every manifest answer: ``ratelimit-limit: 100;w=21600`` (pulls per window,
the window in seconds), ``ratelimit-remaining: 76;w=21600`` and ``docker-ratelimit-source`` (who is
counted: an account id, or an IP address). A manifest **GET** counts as a pull; a **HEAD** does not. So
this collector, the only job of a ``kind: upstream`` target, sends one HEAD of ``upstream.image`` per
interval and never a GET: watching the limit spends none of it. It authenticates as the target's
credentials say, through the registry's own challenge (Docker Hub's token realm is auth.docker.io,
another origin the challenge names), and does not pace itself on the limit it reads
(``pace_ratelimit=False``): its requests do not spend it.

No rate-limit headers on a successful HEAD means the account's pulls are not limited (Docker: "if you do
not see these headers, pulling that image would not count towards pull limits"): the collector then
exports no ratelimit series and logs that once. A 429 on the HEAD (some registries limit HEADs too) still
carries the figures; they are exported, and the collector succeeds.

``source`` is the header's value when it is an IP address or a short token of letters, digits and
``.:_-`` (an account id); ``unknown`` when it is absent or anything else. Only the latest answer's
source is exported, so a target has one series per metric.

Example exposition::

    # HELP regwatch_upstream_ratelimit_limit Pulls the upstream allows per window (ratelimit-limit of a ...
    # TYPE regwatch_upstream_ratelimit_limit gauge
    regwatch_upstream_ratelimit_limit{source="5f0c1b3e-8c2a-5a4e-9d55-3b1f8e2f1a77",target="dockerhub"} 200.0
    regwatch_upstream_ratelimit_remaining{source="5f0c1b3e-8c2a-5a4e-9d55-3b1f8e2f1a77",target="dockerhub"} 37.0
    regwatch_upstream_ratelimit_window_seconds{source="5f0c1b3e-8c2a-5a4e-9d55-3b1f8e2f1a77",target="dockerhub"} 21600.0
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.client import MANIFEST_ACCEPT, NotFound, RateLimited, parse_ratelimit, repository_scope
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.config import Config
from regwatch.families import gauge

log = logging.getLogger("regwatch.collectors.upstream")

UNKNOWN_SOURCE = "unknown"
_SOURCE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def source_label(value: str | None) -> str:
    """The ``source`` label for a ``docker-ratelimit-source`` value (see the module docstring)."""
    if not value:
        return UNKNOWN_SOURCE
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    return value if _SOURCE_TOKEN.fullmatch(value) else UNKNOWN_SOURCE


def _count(value: float | None, *, positive: bool = False) -> float | None:
    """A header figure that can be a count; None for NaN, infinities and negatives (and 0 where it must be > 0)."""
    if value is None or not math.isfinite(value) or value < 0 or (positive and value == 0):
        return None
    return value


class UpstreamCollector(Collector):
    name = "upstream"

    def __init__(self, ctx: TargetContext):
        self.target = ctx.target
        self.client = ctx.client(pace_ratelimit=False)
        self._said_unlimited = False
        self._said_source = False

    def collect(self) -> Iterable[Metric]:
        target, options = self.target, self.target.upstream
        repo, ref = options.repository, options.reference
        path = f"{self.client.v2_prefix}/{repo}/manifests/{ref}"
        try:
            resp = self.client.request("HEAD", path, scope=repository_scope(repo), headers={"Accept": MANIFEST_ACCEPT},
                                       ok=(200, 429))
        except NotFound:
            raise NotFound(f"target {target.name}: HEAD {path} answered 404: the upstream has no manifest "
                           f"{options.image}; set upstream.image to an image the account may pull (e.g. "
                           "library/alpine:latest)", status=404) from None
        rl = parse_ratelimit(resp.headers)
        if rl is None:
            if resp.status_code == 429:
                raise RateLimited(f"target {target.name}: HEAD {path} answered 429 without rate-limit headers: the "
                                  "upstream limits regwatch's own requests; raise the target's interval",
                                  status=429)
            if not self._said_unlimited:
                self._said_unlimited = True
                log.info("the upstream's manifest answer has no rate-limit headers: pulls by this account are not "
                         "limited (no ratelimit series exported)", extra={"target": target.name,
                                                                        "image": options.image})
            return
        source = source_label(rl.source)
        if source == UNKNOWN_SOURCE and rl.source and not self._said_source:
            self._said_source = True
            log.warning("docker-ratelimit-source is neither an IP address nor an account id; exported as unknown",
                        extra={"target": target.name, "value": repr(rl.source)[:80]})
        labels = ["target", "source"]
        yield gauge("regwatch_upstream_ratelimit_limit", "Pulls the upstream allows per window (ratelimit-limit of "
                    "a manifest HEAD; cached).", labels, [([target.name, source], _count(rl.limit, positive=True))])
        yield gauge("regwatch_upstream_ratelimit_remaining", "Pulls left in the upstream's window "
                    "(ratelimit-remaining of a manifest HEAD, which spends none; cached).", labels,
                    [([target.name, source], _count(rl.remaining))])
        yield gauge("regwatch_upstream_ratelimit_window_seconds", "The upstream's rate-limit window "
                    "(ratelimit-limit's w=; cached).", labels,
                    [([target.name, source], _count(rl.window, positive=True))])


@job_factory("upstream", help="Pull rate limit left on upstream registries (manifest HEADs only).")
def upstream_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("upstream"):
        yield ctx.job(UpstreamCollector(ctx), primary=True)
