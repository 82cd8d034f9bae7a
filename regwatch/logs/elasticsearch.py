"""Auth attempts and failures counted in Elasticsearch (the ELK the registry logs are shipped to).

Each run searches the index pattern for documents newer than the newest timestamp seen
minus ``overlap`` (documents are indexed late: shippers batch, pipelines lag), once with the
attempts query and once with the failures query, and counts the document ``_id``s not seen
before. Remembered ids are dropped once they fall out of the overlap window, so memory is
bounded by the window's traffic and a late document is counted exactly once.

Paging uses a point in time plus ``search_after`` (no 10,000-hit cap, no scroll context).

Client major: an ES 8 cluster refuses the 9.x client (it sends ``compatible-with=9``; ES 8
answers 400 ``media_type_header_exception``), an ES 9 cluster takes the 9.x client and, through
REST API compatibility, the 8.x one. With ``client_major: auto`` (the default) regwatch reads
``version.number`` from ``GET /`` with a plain ``application/json`` Accept (which every major
takes) and picks an installed client of that major: the ``elasticsearch`` package (whichever
major is installed) or the ``elasticsearch8`` / ``elasticsearch9`` alias packages. Only
keyword arguments both majors accept are used.
"""

from __future__ import annotations

import base64
import copy
import importlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import ModuleType

from prometheus_client.metrics_core import Metric

from regwatch.collectors import Collector
from regwatch.config import AuthLogConfig
from regwatch.logs.parsers import Tally
from regwatch.logs.positions import PositionsError, PositionsFile

log = logging.getLogger("regwatch.authlogs.elasticsearch")

PAGE_SIZE = 1000

# ECS fields as Filebeat's nginx module (or a dissect of the registry's access log) fills them:
# a request to the registry API that carried a Basic user is an attempt; with status 401, a failure.
_API_PATHS = {"bool": {"should": [{"prefix": {"url.original": "/v2/"}},
                                  {"prefix": {"url.original": "/service/token"}}], "minimum_should_match": 1}}
DEFAULT_ATTEMPTS_QUERY = {"bool": {"filter": [{"exists": {"field": "user.name"}}, _API_PATHS]}}
DEFAULT_FAILURES_QUERY = {"bool": {"filter": [{"exists": {"field": "user.name"}}, _API_PATHS,
                                              {"term": {"http.response.status_code": 401}}]}}


SUPPORTED_MAJORS = (8, 9)
# What to pip install for each major. elasticsearch8 needs elastic-transport 8, which only
# elasticsearch 9.0.x shares, so keeping both clients in one environment pins the 9.x one to 9.0.
INSTALL_HINT = {
    8: "pip install 'elasticsearch>=8.12,<9' (ES 8 clusters only), or, to keep the 9.x client for ES 9 clusters "
       "too, pip install 'elasticsearch>=9.0,<9.1' 'elasticsearch8>=8.12,<9'",
    9: "pip install 'elasticsearch>=9,<10' (or keep the 8.x client: ES 9 accepts it through REST API compatibility)",
}


class ElasticsearchSetupError(RuntimeError):
    """No usable client for the cluster, or its version could not be read; the message says what to do."""


def installed_clients() -> tuple[dict[int, ModuleType], list[str]]:
    """Importable official clients by major, and a note for each one that is installed but broken."""
    clients: dict[int, ModuleType] = {}
    broken: list[str] = []
    for name in ("elasticsearch", "elasticsearch9", "elasticsearch8"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # installed, but a dependency (elastic-transport) is missing or wrong
                broken.append(f"{name} does not import ({exc})")
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. an elastic-transport major the client does not support
            broken.append(f"{name} does not import ({type(exc).__name__}: {exc})")
            continue
        clients.setdefault(int(module.__versionstr__.split(".")[0]), module)
    return clients, broken


def pick_client(server_version: str, clients: dict[int, ModuleType], where: str, note: str = "") -> ModuleType:
    """The installed client to talk to a cluster running ``server_version``."""
    major = int(server_version.split(".")[0])
    if major not in SUPPORTED_MAJORS:
        raise ElasticsearchSetupError(f"{where} runs Elasticsearch {server_version}; regwatch reads 8.x and 9.x "
                                      "clusters only: point auth_logs[].elasticsearch.url at one")
    if major in clients:
        return clients[major]
    if major == 9 and 8 in clients:
        return clients[8]  # ES 9 accepts compatible-with=8 (REST API compatibility)
    have = ", ".join(f"{m}.x ({mod.__name__})" for m, mod in sorted(clients.items())) or "none"
    raise ElasticsearchSetupError(f"{where} runs Elasticsearch {server_version}, which needs the {major}.x "
                                  f"client; installed clients: {have}{note}. Install it: {INSTALL_HINT[major]}")


def _millis(value) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


class ElasticsearchCollector(Collector):
    name = "authlogs"

    def __init__(self, source: AuthLogConfig, client=None):
        self.source = source
        self.es_config = source.elasticsearch
        self._client = client
        self.cursor: int | None = None
        self.seen: dict[str, dict[str, int]] = {"attempts": {}, "failures": {}}
        self.totals = Tally()
        self.errors: Counter = Counter()
        self.positions = PositionsFile(source.positions_file) if source.positions_file else None
        self._lock = threading.Lock()
        self._load()

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        if self.positions is None:
            return
        from regwatch.collectors.authlogs import tally_from_json

        state, problems = self.positions.load()
        for problem in problems:
            log.error(f"{problem}; counting starts over", extra={"source": self.source.name})
            self.errors["corrupt_positions"] += 1
        if state and isinstance(state.get("elasticsearch"), dict):
            es = state["elasticsearch"]
            try:
                self.totals = tally_from_json(state.get("counters", {}))
                self.cursor = int(es["cursor"]) if es.get("cursor") is not None else None
                self.seen = {kind: {str(k): int(v) for k, v in es["seen"][kind].items()}
                             for kind in ("attempts", "failures")}
            except (KeyError, TypeError, ValueError) as exc:
                log.error(f"positions file {self.positions.path} is corrupt ({exc}); counting starts over",
                          extra={"source": self.source.name})
                self.errors["corrupt_positions"] += 1

    def _save(self, totals: Tally, errors: Counter) -> None:
        from regwatch.collectors.authlogs import tally_to_json

        if self.positions is None:
            return
        try:
            self.positions.save({"source": self.source.name, "files": [], "counters": tally_to_json(totals),
                                 "errors": dict(errors),
                                 "elasticsearch": {"cursor": self.cursor, "seen": self.seen}})
        except PositionsError as exc:
            log.error(str(exc), extra={"source": self.source.name})
            errors["positions_write"] += 1

    # ------------------------------------------------------------------ querying

    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _new_client(self, module: ModuleType):
        cfg = self.es_config
        kwargs: dict = {"request_timeout": cfg.timeout, "verify_certs": not cfg.tls.insecure_skip_verify}
        if cfg.tls.ca_file:
            kwargs["ca_certs"] = str(cfg.tls.ca_file)
        if cfg.secret("api_key"):
            kwargs["api_key"] = cfg.secret("api_key")
        elif cfg.username:
            kwargs["basic_auth"] = (cfg.username, cfg.secret("password") or "")
        return module.Elasticsearch(cfg.url, **kwargs)

    def _connect(self):
        """A client of the major the cluster needs (``client_major``, or read from ``GET /``)."""
        cfg, where = self.es_config, f"the cluster at {self.es_config.url}"  # config refuses credentials in url
        clients, broken = installed_clients()
        note = f" ({'; '.join(broken)})" if broken else ""
        if not clients:
            raise ElasticsearchSetupError(f"no Elasticsearch client can be imported{note}; install the one matching "
                                          f"{where}: for ES 9, {INSTALL_HINT[9]}; for ES 8, {INSTALL_HINT[8]}")
        if cfg.client_major != "auto":
            if cfg.client_major not in clients:
                raise ElasticsearchSetupError(f"auth_logs[].elasticsearch.client_major is {cfg.client_major} but no "
                                              f"{cfg.client_major}.x client is installed{note}. Install it: "
                                              f"{INSTALL_HINT[cfg.client_major]}")
            return self._new_client(clients[cfg.client_major])
        probe_module = clients.get(9) or next(iter(clients.values()))
        probe = self._new_client(probe_module)
        try:
            version = self._server_version(probe, where)
            module = pick_client(version, clients, where, note)
        except BaseException:
            probe.close()
            raise
        log.info(f"{where} runs Elasticsearch {version}; using the {module.__name__} {module.__versionstr__} client",
                 extra={"source": self.source.name})
        if module is probe_module:
            return probe
        probe.close()
        return self._new_client(module)

    def _server_version(self, probe, where: str) -> str:
        """``version.number`` from ``GET /``, asked with plain JSON so that any major answers."""
        cfg = self.es_config
        headers = {"accept": "application/json"}
        if cfg.secret("api_key"):
            headers["authorization"] = f"ApiKey {cfg.secret('api_key')}"
        elif cfg.username:
            pair = f"{cfg.username}:{cfg.secret('password') or ''}".encode()
            headers["authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        meta, body = probe.transport.perform_request("GET", "/", headers=headers, request_timeout=cfg.timeout)
        if meta.status in (401, 403):
            raise ElasticsearchSetupError(
                f"{where} answered {meta.status} to GET / (reading its version): check the credentials; an API key "
                "or role without the monitor cluster privilege cannot read it, so grant monitor or set "
                "auth_logs[].elasticsearch.client_major to 8 or 9")
        number = body.get("version", {}).get("number") if isinstance(body, dict) else None
        if not 200 <= meta.status < 300 or not isinstance(number, str) or not number[:1].isdigit():
            raise ElasticsearchSetupError(f"{where} answered {meta.status} to GET / without an Elasticsearch "
                                          "version.number: check auth_logs[].elasticsearch.url points at Elasticsearch")
        return number

    def _hits(self, query: dict, since: int) -> Iterator[tuple[str, int]]:
        """(``_id``, timestamp in ms) of every document matching ``query`` at or after ``since``."""
        es, ts_field = self.client(), self.es_config.timestamp_field
        full = {"bool": {"filter": [{"range": {ts_field: {"gte": since, "format": "epoch_millis"}}}, query]}}
        pit = es.open_point_in_time(index=self.es_config.index, keep_alive="1m")["id"]
        after = None
        try:
            while True:
                kwargs = {"search_after": after} if after is not None else {}
                response = es.search(pit={"id": pit, "keep_alive": "1m"}, size=PAGE_SIZE, query=full,
                                     sort=[{ts_field: {"order": "asc", "format": "epoch_millis"}}],
                                     source=False, track_total_hits=False, **kwargs)
                hits = response["hits"]["hits"]
                pit = response.get("pit_id", pit)
                for hit in hits:
                    yield hit["_id"], _millis(hit["sort"][0])
                if len(hits) < PAGE_SIZE:
                    return
                after = hits[-1]["sort"]
        finally:
            try:
                es.close_point_in_time(id=pit)
            except Exception:  # noqa: BLE001 - the PIT expires by itself after keep_alive
                pass

    def collect(self) -> Iterable[Metric]:
        from regwatch.collectors.authlogs import auth_families

        with self._lock:
            first_run = self.cursor is None
            overlap_ms = int(self.es_config.overlap * 1000)
            since = (self.cursor if self.cursor is not None else int(time.time() * 1000)) - overlap_ms
            pending, errors = copy.deepcopy(self.totals), Counter(self.errors)
            seen = {kind: dict(ids) for kind, ids in self.seen.items()}
            newest = self.cursor or 0
            queries = (("attempts", self.es_config.attempts_query or DEFAULT_ATTEMPTS_QUERY),
                       ("failures", self.es_config.failures_query or DEFAULT_FAILURES_QUERY))
            try:
                for kind, query in queries:
                    for doc_id, ts in self._hits(query, since):
                        newest = max(newest, ts)
                        if doc_id in seen[kind]:
                            continue
                        seen[kind][doc_id] = ts
                        if first_run and self.source.start_at == "end":
                            continue  # remembered, not counted: as a log file, start at the end
                        if kind == "attempts":
                            pending.requests += 1
                        else:
                            pending.failures["bad_credentials"] += 1
            except Exception as exc:
                self.errors["query"] += 1
                if self.es_config.client_major == "auto":
                    self.close()  # the cluster may have been upgraded: read its version again next run
                if isinstance(exc, ElasticsearchSetupError):
                    raise ElasticsearchSetupError(f"auth source {self.source.name}: {exc}") from None
                raise RuntimeError(f"Elasticsearch query for auth source {self.source.name} failed: "
                                   f"{type(exc).__name__}: {exc}; check auth_logs[].elasticsearch (url, index, "
                                   "credentials, client_major)") from None
            horizon = (newest or since + overlap_ms) - overlap_ms
            self.seen = {kind: {i: t for i, t in ids.items() if t >= horizon} for kind, ids in seen.items()}
            self.cursor = newest if newest else since + overlap_ms
            self._save(pending, errors)
            self.totals, self.errors = pending, errors
            return auth_families(self.source.name, pending, errors, 0)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
