"""The ``harbor`` collectors: everything an SRE watches in a Harbor (``kind: harbor`` targets).

One job per metric group, each with its own ``regwatch_collector_success{collector="harbor_<group>"}``,
duration and schedule, so a failing or forbidden group never hides the others (unlike one
``harbor_up`` ANDed over everything). All groups of a target share one ``HarborAPI``, whose
semaphore bounds the requests in flight against that Harbor.

The primary job ``harbor`` reads ``/systeminfo``: it decides ``regwatch_target_up`` and the
version the groups adapt to. Example exposition::

    regwatch_harbor_info{auth_mode="db_auth",target="harbor",version="v2.15.2"} 1.0
    regwatch_harbor_read_only{target="harbor"} 0.0

Groups (modules of this package): health, storage (volumes and quotas), projects, replication,
gc (and audit purge), scans, jobservice, robots, members, signatures, audit. See docs/harbor.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.client import AuthFailed
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.collectors.harbor.api import HarborAPI, HarborGroup, gauge
from regwatch.collectors.harbor.audit import AuditGroup
from regwatch.collectors.harbor.gc import GCGroup
from regwatch.collectors.harbor.health import HealthGroup
from regwatch.collectors.harbor.jobservice import JobserviceGroup
from regwatch.collectors.harbor.members import MembersGroup
from regwatch.collectors.harbor.projects import ProjectsGroup
from regwatch.collectors.harbor.replication import ReplicationGroup
from regwatch.collectors.harbor.robots import RobotsGroup
from regwatch.collectors.harbor.scans import ScansGroup
from regwatch.collectors.harbor.signatures import SignaturesGroup
from regwatch.collectors.harbor.storage import StorageGroup
from regwatch.config import Config, TargetConfig

GROUPS: tuple[type[HarborGroup], ...] = (
    HealthGroup, StorageGroup, ProjectsGroup, ReplicationGroup, GCGroup, ScansGroup, JobserviceGroup,
    RobotsGroup, MembersGroup, SignaturesGroup, AuditGroup,
)
# Groups that make one call per project or repository run on harbor.detail_interval.
DETAIL_GROUPS = frozenset({"members", "signatures"})


class HarborCollector(Collector):
    """Reads /systeminfo: proves the API answers and the credentials work, and learns the version."""

    name = "harbor"

    def __init__(self, api: HarborAPI):
        self.api = api
        self.target = api.target

    def collect(self) -> Iterable[Metric]:
        info = self.api.systeminfo()
        name = self.target.name
        # Harbor treats rejected basic credentials as anonymous, and anonymous callers get no version.
        if self.target.username and not info.get("harbor_version"):
            raise AuthFailed(f"target {name}: Harbor did not accept the credentials of {self.target.username} "
                             "(/systeminfo answered as to an anonymous caller); check username and the password file")
        yield gauge("regwatch_harbor_info", "Harbor's version and auth mode; always 1.",
                    ["target", "version", "auth_mode"],
                    [([name, str(info.get("harbor_version") or "unknown"), str(info.get("auth_mode") or "unknown")],
                      1.0)])
        if "read_only" in info:
            yield gauge("regwatch_harbor_read_only", "1 if Harbor is in read-only mode (pushes fail).",
                        ["target"], [([name], 1.0 if info.get("read_only") else 0.0)])

    def close(self) -> None:
        self.api.close()


def harbor_jobs_for(target: TargetConfig, api: HarborAPI | None = None, ctx: TargetContext | None = None) -> list[Job]:
    ctx = ctx or TargetContext(target)
    api = api or HarborAPI(target, ctx.client())
    jobs = [ctx.job(HarborCollector(api), primary=True)]
    for group in GROUPS:
        if group.group in target.harbor.skip:
            continue
        interval = target.harbor.detail_interval if group.group in DETAIL_GROUPS else target.interval
        jobs.append(ctx.job(group(api), interval=interval, collection=target.harbor.collection_timeout))
    return jobs


@job_factory("harbor", help="Harbor health, storage, projects, replication, GC, scans, jobservice, robots, audit.")
def harbor_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("harbor"):
        yield from harbor_jobs_for(ctx.target, ctx=ctx)
