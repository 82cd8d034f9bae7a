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
gc (and audit purge), scans, jobservice, robots, members, signatures, audit, retention, preheat,
artifacts. The schedule watchdogs (``regwatch_harbor_schedule_*``) come from the group that reads
each job (schedules.py has the one rule they share). See docs/harbor.md.

When no Harbor answers at the url (a Distribution registry behind ``kind: harbor``), the primary
job fails with one error saying so, and every group fails pointing at it without asking Harbor.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.client import AuthFailed, RegistryError
from regwatch.collectors import Collector, Contexts, Job, TargetContext, job_factory
from regwatch.collectors.harbor.api import API, HarborAPI, HarborGroup, NotHarbor
from regwatch.collectors.harbor.artifacts import ArtifactsGroup
from regwatch.collectors.harbor.audit import AuditGroup
from regwatch.collectors.harbor.gc import GCGroup
from regwatch.collectors.harbor.health import HealthGroup
from regwatch.collectors.harbor.jobservice import JobserviceGroup
from regwatch.collectors.harbor.members import MembersGroup
from regwatch.collectors.harbor.preheat import PreheatGroup
from regwatch.collectors.harbor.projects import ProjectsGroup
from regwatch.collectors.harbor.replication import ReplicationGroup
from regwatch.collectors.harbor.retention import RetentionGroup
from regwatch.collectors.harbor.robots import RobotsGroup
from regwatch.collectors.harbor.scans import ScansGroup
from regwatch.collectors.harbor.signatures import SignaturesGroup
from regwatch.collectors.harbor.storage import StorageGroup
from regwatch.config import Config
from regwatch.families import gauge

GROUPS: tuple[type[HarborGroup], ...] = (
    HealthGroup, StorageGroup, ProjectsGroup, ReplicationGroup, GCGroup, ScansGroup, JobserviceGroup,
    RobotsGroup, MembersGroup, SignaturesGroup, AuditGroup, RetentionGroup, PreheatGroup, ArtifactsGroup,
)
# Groups that make one call per project or repository run on harbor.detail_interval.
DETAIL_GROUPS = frozenset({"members", "signatures", "retention", "preheat", "artifacts"})


class HarborCollector(Collector):
    """Reads /systeminfo: proves that a Harbor answers, that it accepts the credentials, and learns the version."""

    name = "harbor"

    def __init__(self, api: HarborAPI, ctx: TargetContext):
        self.api = api
        self.ctx = ctx
        self.target = api.target

    def collect(self) -> Iterable[Metric]:
        name = self.target.name
        try:
            info = self.api.systeminfo()
        except NotHarbor as exc:
            raise self.ctx.wrong_kind(f"target {name}: no Harbor API at {self.api.client.url}{API} (GET "
                                      f"{API}/systeminfo {exc.detail}); check kind and url{self._guess()}") from None
        self.ctx.right_kind()
        creds = self.api.client.credentials
        # Harbor treats rejected basic credentials as anonymous, and anonymous callers get no version.
        if not creds.anonymous and not info.text("harbor_version"):
            raise AuthFailed(f"target {name}: Harbor did not accept {creds.who()} (/systeminfo answered as to an "
                             "anonymous caller); check the username and password", status=401)
        yield gauge("regwatch_harbor_info", "Harbor's version and auth mode; always 1 (cached).",
                    ["target", "version", "auth_mode"],
                    [([name, info.text("harbor_version") or "unknown", info.text("auth_mode") or "unknown"], 1.0)])
        if info.has("read_only"):
            yield gauge("regwatch_harbor_read_only", "1 if Harbor is in read-only mode (pushes fail; cached).",
                        ["target"], [([name], 1.0 if info.flag("read_only") else 0.0)])

    def _guess(self) -> str:
        """What answers instead, when it tells: a registry API at /v2/ is a Docker Distribution registry."""
        try:
            resp = self.api.client.request("GET", "/v2/", ok=(200, 401), limit=64 << 10)
        except RegistryError:
            return " (Harbor's base URL, not its registry port or a path)"
        if resp.headers.get("Docker-Distribution-API-Version", "").startswith("registry/2.0"):
            return (": this looks like a Docker Distribution registry (GET /v2/ answers as one), so kind: "
                    "distribution")
        return " (Harbor's base URL, not its registry port or a path)"

    def close(self) -> None:
        self.api.close()


def harbor_jobs_for(ctx: TargetContext, api: HarborAPI | None = None) -> list[Job]:
    """The jobs of one Harbor target: the primary job and one per metric group (see the module docstring)."""
    target = ctx.target
    api = api or HarborAPI(target, ctx.client())
    jobs = [ctx.job(HarborCollector(api, ctx), primary=True)]
    for group in GROUPS:
        if group.group in target.harbor.skip:
            continue
        interval = target.harbor.detail_interval if group.group in DETAIL_GROUPS else target.interval
        jobs.append(ctx.job(group(api), interval=interval, collection=target.harbor.collection_timeout))
    return jobs


@job_factory("harbor", help="Harbor health, storage, projects, replication, GC, scans, jobservice, robots, audit.")
def harbor_jobs(config: Config, contexts: Contexts) -> Iterable[Job]:
    for ctx in contexts.of_kind("harbor"):
        yield from harbor_jobs_for(ctx)
