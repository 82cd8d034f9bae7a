"""A small Elasticsearch stand-in speaking the REST API regwatch's ES source uses.

Follows the Elasticsearch 8.x/9.x REST API reference for exactly these requests:

* ``POST /{index}/_pit?keep_alive=1m`` -> ``{"id": ...}`` (open point in time)
* ``POST /_search`` with ``pit``, ``query``, ``sort``, ``size``, ``search_after``, ``_source``
  -> ``{"pit_id", "took", "timed_out", "_shards", "hits": {"hits": [{"_index", "_id",
  "_score": null, "sort": [...]}]}}``; a PIT search sorts with an implicit ``_shard_doc``
  tiebreaker appended to each hit's ``sort``
* ``DELETE /_pit`` with ``{"id": ...}`` -> ``{"succeeded": true, "num_freed": 1}``
* ``GET /`` -> ``{"name", "cluster_name", "version": {"number": "<major>.x.y", ...}, "tagline"}``
  (the info API; with security on it needs the ``monitor`` cluster privilege, else 403
  ``security_exception``, which ``root_status=403`` imitates)

With ``authorization`` set (the exact ``Authorization`` header value expected, ``Basic ...`` or
``ApiKey ...``), any other request gets 401 ``security_exception`` with a ``WWW-Authenticate``
challenge, after the media-type check (which Elasticsearch does while parsing the request).

The fake is an 8.x or a 9.x server (``major``). REST API compatibility is checked the way
Elasticsearch's ``RestCompatibleVersionHelper`` does it: the ``compatible-with=N`` parameter of
the ``Accept`` and (with a body) ``Content-Type`` media types must be the server's major or the
one before (ES 9: 9 or 8; ES 8: 8 or 7), the two must agree, and a versioned header needs a
versioned partner; otherwise 400 ``media_type_header_exception`` "Invalid media-type value on
headers [Accept, Content-Type]" caused by a ``status_exception`` such as "Accept version must be
either version 8 or 7, but found 9". The official client N.x sends
``application/vnd.elasticsearch+json; compatible-with=N`` on both headers, so an ES 8 fake
refuses the 9.x client exactly as a real ES 8 does. A plain ``application/json`` request is
answered in ``application/json``; a compatible one in the vendor media type.

Every response carries ``X-Elastic-Product: Elasticsearch`` (the official client refuses a
server without it). Queries support the clauses regwatch sends: bool
(filter/must/should/must_not/minimum_should_match), range
(``format: epoch_millis``), term, terms, prefix, exists, match_all. Index patterns are
comma-separated globs. A PIT here sees documents added after it opened (real ES would not);
regwatch opens a fresh PIT per run, so this does not change what it counts.

``hostile`` turns the search endpoint into a cluster that cannot be trusted: ``endless`` answers
every page with a full page of new hits and a new ``search_after`` cursor, forever; ``huge``
streams a 200 MB body; ``trickle`` sends its answer one byte every 0.2 s; ``garbage`` answers
``hits`` that are not hits (a list of numbers); ``not_json`` answers bytes that are not JSON.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def _get(doc: dict, field: str):
    if field in doc:
        return doc[field]
    node = doc
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _millis(value) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def matches(query: dict, doc: dict) -> bool:
    (kind, body), = query.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        musts = body.get("filter", []) + body.get("must", [])
        musts = musts if isinstance(musts, list) else [musts]
        if not all(matches(q, doc) for q in musts):
            return False
        if any(matches(q, doc) for q in body.get("must_not", [])):
            return False
        should = body.get("should", [])
        need = body.get("minimum_should_match", 1 if should and not musts else 0)
        return sum(matches(q, doc) for q in should) >= need
    (field, arg), = body.items()
    value = _get(doc, field)
    if kind == "exists":
        return _get(doc, arg) is not None
    if value is None:
        return False
    if kind == "term":
        return value == (arg["value"] if isinstance(arg, dict) else arg)
    if kind == "terms":
        return value in arg
    if kind == "prefix":
        return str(value).startswith(arg["value"] if isinstance(arg, dict) else arg)
    if kind == "range":
        ts = _millis(value)
        return all(op not in arg or cmp(ts, _millis(arg[op])) for op, cmp in
                   (("gte", int.__ge__), ("gt", int.__gt__), ("lte", int.__le__), ("lt", int.__lt__)))
    raise ValueError(f"unsupported query clause {kind}")


_COMPAT = re.compile(r"compatible-with=(\d+)")
VERSIONS = {8: "8.19.3", 9: "9.1.5"}


def compat_error(major: int, accept: str | None, content_type: str | None, has_body: bool) -> str | None:
    """Why Elasticsearch ``major`` refuses these headers (RestCompatibleVersionHelper), or None."""
    a = _COMPAT.search(accept or "")
    c = _COMPAT.search(content_type or "")
    a_version = int(a.group(1)) if a else major
    c_version = int(c.group(1)) if c else major
    if not major - 1 <= a_version <= major:
        return (f"Accept version must be either version {major} or {major - 1}, but found {a_version}. "
                f"Accept={accept}")
    if has_body:
        if not major - 1 <= c_version <= major:
            return (f"Content-Type version must be either version {major} or {major - 1}, but found {c_version}. "
                    f"Content-Type={content_type}")
        if c_version != a_version:
            return ("A compatible version is required on both Content-Type and Accept headers if either one has "
                    "requested a compatible version and the compatible versions must match. "
                    f"Accept={accept}, Content-Type={content_type}")
        if bool(a) != bool(c):
            return ("A compatible version is required on both Content-Type and Accept headers if either one has "
                    f"requested a compatible version. Accept={accept}, Content-Type={content_type}")
    return None


class FakeElasticsearch:
    def __init__(self, major: int = 9, version: str | None = None, root_status: int = 200,
                 authorization: str | None = None, hostile: str | None = None):
        self.major = major
        self.hostile = hostile
        self.endless_served = 0
        self.authorization = authorization
        self.version = version or VERSIONS[major]
        self.root_status = root_status
        self.docs: list[dict] = []  # {"_index", "_id", "_source"}
        self.pits: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.compat: list[int | None] = []  # compatible-with asked by each accepted request (None: plain JSON)
        self.refused: list[str] = []  # the status_exception reason of each refused request
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def index(self, index: str, doc_id: str, source: dict) -> None:
        with self.lock:
            self.docs.append({"_index": index, "_id": doc_id, "_source": source})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _search(self, body: dict) -> dict:
        pattern = self.pits[body["pit"]["id"]]
        sort_field = next(iter(body["sort"][0])) if body.get("sort") else "_doc"
        with self.lock:
            docs = [(i, d) for i, d in enumerate(self.docs)
                    if any(fnmatch.fnmatch(d["_index"], p) for p in pattern.split(","))
                    and matches(body.get("query", {"match_all": {}}), d["_source"])]
        keyed = sorted(((_millis(_get(d["_source"], sort_field)), i), d) for i, d in docs)
        after = tuple(body["search_after"]) if body.get("search_after") else None
        hits = [{"_index": d["_index"], "_id": d["_id"], "_score": None, "sort": list(key)}
                for key, d in keyed if after is None or key > after][:body.get("size", 10)]
        return {"pit_id": body["pit"]["id"], "took": 1, "timed_out": False,
                "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"max_score": None, "hits": hits}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            compat: int | None = None

            def _reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/json" if self.compat is None
                                 else f"application/vnd.elasticsearch+json;compatible-with={self.compat}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _error(self, status: int, kind: str, reason: str, caused_by: dict | None = None,
                       headers: dict | None = None) -> None:
                error = {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}
                if caused_by:
                    error["caused_by"] = caused_by
                self._reply(status, {"error": error, "status": status}, headers)

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                self.compat = None
                has_body = int(self.headers.get("Content-Length") or 0) > 0
                body = self._body()
                accept, content_type = self.headers.get("Accept"), self.headers.get("Content-Type")
                if problem := compat_error(fake.major, accept, content_type, has_body):
                    fake.refused.append(problem)
                    return self._error(400, "media_type_header_exception",
                                       "Invalid media-type value on headers [Accept, Content-Type]",
                                       {"type": "status_exception", "reason": problem})
                asked = _COMPAT.search(accept or "")
                self.compat = int(asked.group(1)) if asked else None
                if fake.authorization and self.headers.get("Authorization") != fake.authorization:
                    reason = ("unable to authenticate with provided credentials" if self.headers.get("Authorization")
                              else "missing authentication credentials")
                    return self._error(401, "security_exception", f"{reason} for REST request [{parts.path}]",
                                       headers={"WWW-Authenticate": 'Basic realm="security", ApiKey'})
                fake.compat.append(self.compat)
                if method == "GET" and parts.path == "/":
                    if fake.root_status == 403:
                        return self._error(403, "security_exception", "action [cluster:monitor/main] is "
                                           "unauthorized for API key id [fake] of user [regwatch]")
                    return self._reply(200, {
                        "name": "es-fake-0", "cluster_name": "fake", "cluster_uuid": "fake-uuid",
                        "version": {"number": fake.version, "build_flavor": "default", "build_type": "docker",
                                    "minimum_wire_compatibility_version": f"{fake.major - 1}.19.0",
                                    "minimum_index_compatibility_version": f"{fake.major - 1}.0.0"},
                        "tagline": "You Know, for Search"})
                if method == "POST" and (m := re.fullmatch(r"/([^/]+)/_pit", parts.path)):
                    if "keep_alive" not in parse_qs(parts.query):
                        return self._reply(400, {"error": "keep_alive is required", "status": 400})
                    pit_id = f"pit-{len(fake.pits)}"
                    fake.pits[pit_id] = m.group(1)
                    return self._reply(200, {"id": pit_id})
                if method == "POST" and parts.path == "/_search":
                    if fake.hostile:
                        return self._hostile(body)
                    return self._reply(200, fake._search(body))
                if method == "DELETE" and parts.path == "/_pit":
                    freed = fake.pits.pop(body.get("id"), None) is not None
                    return self._reply(200, {"succeeded": True, "num_freed": int(freed)})
                self._reply(404, {"error": f"no handler for {method} {parts.path}", "status": 404})

            def _hostile(self, body: dict) -> None:
                kind = fake.hostile
                if kind == "endless":
                    start = fake.endless_served
                    fake.endless_served += body.get("size", 10)
                    now = int(time.time() * 1000)
                    hits = [{"_index": "logs-x", "_id": f"e{start + i}", "_score": None, "sort": [now, start + i]}
                            for i in range(body.get("size", 10))]
                    return self._reply(200, {"pit_id": body["pit"]["id"], "took": 1, "timed_out": False,
                                             "hits": {"hits": hits}})
                self.send_response(200)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/json" if self.compat is None
                                 else f"application/vnd.elasticsearch+json;compatible-with={self.compat}")
                if kind == "huge":
                    self.send_header("Content-Length", str(200 << 20))
                    self.end_headers()
                    chunk = b"[" * (1 << 20)
                    try:
                        for _ in range(200):
                            self.wfile.write(chunk)
                    except OSError:
                        pass  # the client stopped reading, as it should
                    return
                payload = {"garbage": b'{"hits": {"hits": [1, 2, 3]}}', "not_json": b"\x00\xffnot json at all",
                           "trickle": b'{"hits": {"hits": []}}' + b" " * 4096}[kind]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if kind == "trickle":
                    try:
                        for byte in payload:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    return
                self.wfile.write(payload)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler
