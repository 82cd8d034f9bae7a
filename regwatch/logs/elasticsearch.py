"""Auth attempts and failures counted in Elasticsearch (the ELK the registry logs are shipped to).

``ElasticsearchSource.run()`` searches the index pattern for documents newer than the newest
timestamp seen minus ``overlap`` (documents are indexed late: shippers batch, pipelines lag),
once with the attempts query and once with the failures query, and counts the document
``_id``s not seen before. Remembered ids are dropped once they fall out of the overlap window,
so memory is bounded by the window's traffic and a late document is counted exactly once.
The collector that exports it is ``regwatch.collectors.elasticsearch``.

Paging uses a point in time plus ``search_after`` (no 10,000-hit cap, no scroll context).
The cluster is not trusted: one run reads at most ``max_pages`` pages per query and stops at
``deadline`` (what is left is read by the next run, from where this one got to: each query
keeps its own cursor); every response body is read with a cap (``MAX_RESPONSE_BYTES``) and
within the deadline, however the cluster trickles or streams it; a malformed answer is an error
naming what was wrong, never a traceback.

Client major: an ES 8 cluster refuses the 9.x client (it sends ``compatible-with=9``; ES 8
answers 400 ``media_type_header_exception``), an ES 9 cluster takes the 9.x client and, through
REST API compatibility, the 8.x one. With ``client_major: auto`` (the default) regwatch reads
``version.number`` from ``GET /`` with an Accept that names no ``compatible-with`` version (which
every major takes) and picks an installed client of that major: the ``elasticsearch`` package (whichever
major is installed) or the ``elasticsearch8`` / ``elasticsearch9`` alias packages. Only
keyword arguments both majors accept are used, and credentials only ever go through the
client's own ``basic_auth=``/``api_key=`` options.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from types import ModuleType

from regwatch.budget import current_run
from regwatch.config import AuthLogConfig
from regwatch.logs.positions import PositionsError, PositionsFile
from regwatch.logs.tally import Tally, from_json, to_json
from regwatch.tls import warn_verification_off

log = logging.getLogger("regwatch.authlogs.elasticsearch")

PAGE_SIZE = 1000
# A page of 1,000 hits without _source is ~150 KB; no answer regwatch asks for needs more.
MAX_RESPONSE_BYTES = 8 << 20
MAX_ID_LENGTH = 512  # Elasticsearch's own limit for _id
# Ids remembered per query (those inside the overlap window); a real window holds far fewer.
MAX_SEEN = 200_000
KINDS = ("attempts", "failures")

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


class ElasticsearchAnswerError(RuntimeError):
    """The cluster's answer was too big, too slow or not shaped like Elasticsearch's."""


# --------------------------------------------------------------------------- bounded transport

# The monotonic time by which the current run must be done (set by ElasticsearchSource.run).
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("regwatch_es_deadline", default=None)


class _Body:
    """What the node needs of a urllib3 response: status, headers and the (bounded) body."""

    def __init__(self, status: int, headers, data: bytes):
        self.status, self.headers, self.data = status, headers, data


def _read_bounded(response, limit: int, deadline: float | None, where: str) -> bytes:
    read = getattr(response, "read1", None) or (lambda amt: response.read(amt))
    chunks, total = [], 0
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise ElasticsearchAnswerError(f"{where} was still sending its answer at the collection deadline "
                                           "(auth_logs[].elasticsearch.deadline); the rest is read next time")
        chunk = read(65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise ElasticsearchAnswerError(f"{where} sent an answer larger than {limit >> 20} MiB; regwatch reads "
                                           "no more (is auth_logs[].elasticsearch.url an Elasticsearch?)")
        chunks.append(chunk)


class _BoundedPool:
    """A urllib3 pool whose ``urlopen`` reads the body itself: capped, and within the run's deadline."""

    def __init__(self, pool, where: str):
        self._pool, self._where = pool, where

    def __getattr__(self, name: str):
        return getattr(self._pool, name)

    def urlopen(self, method: str, url: str, **kwargs):
        deadline = _DEADLINE.get()
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ElasticsearchAnswerError(f"the collection deadline passed before {method} {url} to "
                                               f"{self._where} (auth_logs[].elasticsearch.deadline)")
            timeout = kwargs.get("timeout")
            limit = getattr(timeout, "total", None) or (timeout if isinstance(timeout, (int, float)) else None)
            kwargs["timeout"] = min(limit, remaining) if limit else remaining
        kwargs["preload_content"] = False
        response = self._pool.urlopen(method, url, **kwargs)
        try:
            data = _read_bounded(response, MAX_RESPONSE_BYTES, deadline, self._where)
        finally:
            response.release_conn()
        return _Body(response.status, response.headers, data)


def _bounded_node_class():
    from elastic_transport import Urllib3HttpNode

    class BoundedNode(Urllib3HttpNode):
        def __init__(self, config):
            super().__init__(config)
            self.pool = _BoundedPool(self.pool, f"Elasticsearch at {config.scheme}://{config.host}:{config.port}")

    return BoundedNode


# --------------------------------------------------------------------------- clients


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
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def _hit(hit: object, where: str) -> tuple[str, int, list]:
    """(_id, timestamp in ms, sort values) of one search hit, or an error naming what is wrong."""
    if isinstance(hit, dict):
        doc_id, sort = hit.get("_id"), hit.get("sort")
        if isinstance(doc_id, str) and 0 < len(doc_id) <= MAX_ID_LENGTH and isinstance(sort, list) and sort and \
                len(sort) <= 8 and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in sort):
            try:
                return doc_id, _millis(sort[0]), sort
            except (ValueError, OverflowError):
                pass
    raise ElasticsearchAnswerError(f"{where} answered a search with a hit that has no usable _id and sort "
                                   "timestamp; check auth_logs[].elasticsearch.timestamp_field")


# --------------------------------------------------------------------------- the source


class ElasticsearchSource:
    """The counting state of one ``auth_logs`` Elasticsearch source."""

    def __init__(self, source: AuthLogConfig, client=None):
        self.source = source
        self.es_config = source.elasticsearch
        self._client = client
        # Per query: the newest timestamp counted (None: never run).
        self.cursors: dict[str, int | None] = {kind: None for kind in KINDS}
        self.seen: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        self.totals = Tally()
        self.errors: Counter = Counter()
        self.positions = PositionsFile(source.positions_file) if source.positions_file else None
        self._lock = threading.Lock()
        self._loaded = False
        self.where = f"the cluster at {self.es_config.url}"  # config refuses credentials in url
        if self.es_config.tls.insecure_skip_verify:
            warn_verification_off(f"auth_logs {source.name} (Elasticsearch {self.es_config.url})",
                                  "set auth_logs[].elasticsearch.tls.ca_file to the CA that signed its certificate")

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        self._loaded = True
        if self.positions is None:
            return
        state, problems = self.positions.load()
        for problem in problems:
            log.error(f"{problem}; counting starts over", extra={"source": self.source.name})
            self.errors["corrupt_positions"] += 1
        if state and isinstance(state.get("elasticsearch"), dict):
            es = state["elasticsearch"]
            try:
                totals = from_json(state.get("counters", {}))
                if "cursors" in es:
                    saved = es["cursors"]
                    cursors = {kind: None if saved[kind] is None else int(saved[kind]) for kind in KINDS}
                else:  # saved by a version with one cursor for both queries
                    cursors = {kind: None if es.get("cursor") is None else int(es["cursor"]) for kind in KINDS}
                seen = {kind: {str(k): int(v) for k, v in es["seen"][kind].items()} for kind in KINDS}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.error(f"positions file {self.positions.path} is corrupt ({exc}); counting starts over",
                          extra={"source": self.source.name})
                self.errors["corrupt_positions"] += 1
                return
            self.totals, self.cursors, self.seen = totals, cursors, seen

    def _save(self, totals: Tally, errors: Counter) -> None:
        if self.positions is None:
            return
        try:
            self.positions.save({"source": self.source.name, "files": [], "counters": to_json(totals),
                                 "errors": dict(errors),
                                 "elasticsearch": {"cursors": self.cursors, "seen": self.seen}})
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
        kwargs: dict = {"request_timeout": cfg.timeout, "verify_certs": not cfg.tls.insecure_skip_verify,
                        "node_class": _bounded_node_class(), "max_retries": 0, "retry_on_timeout": False}
        if cfg.tls.insecure_skip_verify:
            kwargs["ssl_show_warn"] = False  # regwatch.tls said it once, loudly
        if cfg.tls.ca_file:
            kwargs["ca_certs"] = str(cfg.tls.ca_file)
        if cfg.secret("api_key"):
            kwargs["api_key"] = cfg.secret("api_key")
        elif cfg.username:
            kwargs["basic_auth"] = (cfg.username, cfg.secret("password") or "")
        return module.Elasticsearch(cfg.url, **kwargs)

    def _connect(self):
        """A client of the major the cluster needs (``client_major``, or read from ``GET /``)."""
        cfg, where = self.es_config, self.where
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
            version = self._server_version(probe, probe_module)
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

    def _server_version(self, probe, module: ModuleType) -> str:
        """``version.number`` from ``GET /``, asked without a compatible-with version so that any major answers.

        The request goes through the client, so it carries the credentials the client was given
        (``basic_auth``/``api_key``) and nothing hand-built."""
        where = self.where
        try:
            # "*/*": the client rewrites an application/json Accept to its own compatible-with=N
            response = probe.perform_request("GET", "/", headers={"accept": "*/*"})
            status, body = response.meta.status, response.body
        except module.ApiError as exc:
            status, body = exc.meta.status, None
        if status in (401, 403):
            raise ElasticsearchSetupError(
                f"{where} answered {status} to GET / (reading its version): check the credentials; an API key "
                "or role without the monitor cluster privilege cannot read it, so grant monitor or set "
                "auth_logs[].elasticsearch.client_major to 8 or 9")
        version = body.get("version") if isinstance(body, dict) else None
        number = version.get("number") if isinstance(version, dict) else None
        if not 200 <= status < 300 or not isinstance(number, str) or not number[:1].isdigit() or \
                not number.split(".")[0].isdigit() or len(number) > 64:
            raise ElasticsearchSetupError(f"{where} answered {status} to GET / without an Elasticsearch "
                                          "version.number: check auth_logs[].elasticsearch.url points at Elasticsearch")
        return number

    def _hits(self, query: dict, since: int, stats: dict) -> Iterator[tuple[str, int]]:
        """(``_id``, timestamp in ms) of the documents matching ``query`` at or after ``since``, oldest
        first, for at most ``max_pages`` pages; ``stats["truncated"]`` says whether more were left."""
        es, cfg = self.client(), self.es_config
        ts_field = cfg.timestamp_field
        full = {"bool": {"filter": [{"range": {ts_field: {"gte": since, "format": "epoch_millis"}}}, query]}}
        opened = es.open_point_in_time(index=cfg.index, keep_alive="1m")
        opened = opened.body if hasattr(opened, "body") else opened
        pit = opened.get("id") if isinstance(opened, dict) else None
        if not isinstance(pit, str) or not pit or len(pit) > 4096:
            raise ElasticsearchAnswerError(f"{self.where} opened a point in time without an id")
        after = None
        try:
            for _page in range(cfg.max_pages):
                kwargs = {"search_after": after} if after is not None else {}
                response = es.search(pit={"id": pit, "keep_alive": "1m"}, size=PAGE_SIZE, query=full,
                                     sort=[{ts_field: {"order": "asc", "format": "epoch_millis"}}],
                                     source=False, track_total_hits=False, **kwargs)
                body = response.body if hasattr(response, "body") else response
                hits = body.get("hits", {}).get("hits") if isinstance(body, dict) and \
                    isinstance(body.get("hits"), dict) else None
                if not isinstance(hits, list) or len(hits) > PAGE_SIZE:
                    raise ElasticsearchAnswerError(f"{self.where} answered a search without a hits.hits list of at "
                                                   f"most {PAGE_SIZE} hits")
                new_pit = body.get("pit_id", pit)
                pit = new_pit if isinstance(new_pit, str) and 0 < len(new_pit) <= 4096 else pit
                sort = None
                for hit in hits:
                    doc_id, ts, sort = _hit(hit, self.where)
                    yield doc_id, ts
                if len(hits) < PAGE_SIZE:
                    return
                if sort == after:
                    raise ElasticsearchAnswerError(f"{self.where} answered the same page twice (search_after did "
                                                   "not move)")
                after = sort
            stats["truncated"] = True
        finally:
            with contextlib.suppress(Exception):  # any error: the PIT expires by itself after keep_alive
                es.close_point_in_time(id=pit)

    def run(self) -> tuple[Tally, Counter]:
        """One collection: count what is new, save, and return (totals, read errors)."""
        with self._lock:
            if not self._loaded:
                self._load()
            cfg = self.es_config
            now_ms = int(time.time() * 1000)
            pending, errors = self.totals.copy(), Counter(self.errors)
            seen = {kind: dict(ids) for kind, ids in self.seen.items()}
            cursors = dict(self.cursors)
            queries = (("attempts", cfg.attempts_query or DEFAULT_ATTEMPTS_QUERY),
                       ("failures", cfg.failures_query or DEFAULT_FAILURES_QUERY))
            started = time.monotonic()
            run = current_run()  # the runner's collection deadline (regwatch.budget), when there is one
            total = cfg.deadline if run is None or run.remaining() is None else min(cfg.deadline, run.remaining())
            try:
                for index, (kind, query) in enumerate(queries):
                    # Each query gets its share of the deadline, so a flood of attempts cannot starve failures.
                    deadline = started + total * (index + 1) / len(queries)
                    token = _DEADLINE.set(deadline)
                    try:
                        self._count(kind, query, cursors, seen, pending, errors, now_ms, deadline)
                    finally:
                        _DEADLINE.reset(token)
            except Exception as exc:  # noqa: BLE001 - any client error is a failed query: counted, then re-raised
                self.errors["query"] += 1
                if cfg.client_major == "auto":
                    self.close()  # the cluster may have been upgraded: read its version again next run
                if isinstance(exc, ElasticsearchSetupError):
                    raise ElasticsearchSetupError(f"auth source {self.source.name}: {exc}") from None
                detail = str(exc) if isinstance(exc, ElasticsearchAnswerError) else \
                    f"{type(exc).__name__}: {_short(exc)}"
                raise RuntimeError(f"Elasticsearch query for auth source {self.source.name} failed: {detail}; check "
                                   "auth_logs[].elasticsearch (url, index, credentials, client_major)") from None
            self.seen, self.cursors = seen, cursors
            self._save(pending, errors)
            self.totals, self.errors = pending, errors
            return pending.copy(), Counter(errors)

    def _count(self, kind: str, query: dict, cursors: dict, seen: dict, pending: Tally, errors: Counter,
               now_ms: int, deadline: float) -> None:
        cfg = self.es_config
        overlap_ms = int(cfg.overlap * 1000)
        first_run = cursors[kind] is None
        since = (now_ms if first_run else cursors[kind]) - overlap_ms
        newest = cursors[kind] or 0
        stats: dict = {}
        try:
            for doc_id, ts in self._hits(query, since, stats):
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
        except Exception:
            if time.monotonic() < deadline:
                raise
            stats["truncated"] = True  # out of time: keep what was counted, go on from there next run
        if stats.get("truncated"):
            errors["query_truncated"] += 1
            log.warning(f"auth source {self.source.name}: {self.where} had more {kind} than one collection reads "
                        f"({cfg.max_pages} pages, {cfg.deadline:g}s); the rest is read next time",
                        extra={"source": self.source.name})
        horizon = (newest or since + overlap_ms) - overlap_ms
        kept = {i: t for i, t in seen[kind].items() if t >= horizon}
        if len(kept) > MAX_SEEN:  # a cluster inventing ids forever: forget the oldest
            kept = dict(sorted(kept.items(), key=lambda item: item[1])[-MAX_SEEN:])
        seen[kind] = kept
        cursors[kind] = newest if newest else since + overlap_ms

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _short(exc: BaseException, limit: int = 400) -> str:
    """An exception's text, cut: a hostile server's error body must not fill the log."""
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
