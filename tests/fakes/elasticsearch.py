"""A small Elasticsearch stand-in speaking the REST API regwatch's ES source uses.

Follows the Elasticsearch 8.x/9.x REST API reference for exactly these requests:

* ``POST /{index}/_pit?keep_alive=1m`` -> ``{"id": ...}`` (open point in time)
* ``POST /_search`` with ``pit``, ``query``, ``sort``, ``size``, ``search_after``, ``_source``
  -> ``{"pit_id", "took", "timed_out", "_shards", "hits": {"hits": [{"_index", "_id",
  "_score": null, "sort": [...]}]}}``; a PIT search sorts with an implicit ``_shard_doc``
  tiebreaker appended to each hit's ``sort``
* ``DELETE /_pit`` with ``{"id": ...}`` -> ``{"succeeded": true, "num_freed": 1}``

Every response carries ``X-Elastic-Product: Elasticsearch`` (the official client refuses a
server without it) and the vendor media type the client asked for. Queries support the
clauses regwatch sends: bool (filter/must/should/must_not/minimum_should_match), range
(``format: epoch_millis``), term, terms, prefix, exists, match_all. Index patterns are
comma-separated globs. A PIT here sees documents added after it opened (real ES would not);
regwatch opens a fresh PIT per run, so this does not change what it counts.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
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


class FakeElasticsearch:
    def __init__(self, major: int = 9):
        self.major = major
        self.docs: list[dict] = []  # {"_index", "_id", "_source"}
        self.pits: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", f"application/vnd.elasticsearch+json;compatible-with={fake.major}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                body = self._body()
                if method == "GET" and parts.path == "/":
                    return self._reply(200, {"version": {"number": f"{fake.major}.0.0"}, "tagline": "You Know, for Search"})
                if method == "POST" and (m := re.fullmatch(r"/([^/]+)/_pit", parts.path)):
                    if "keep_alive" not in parse_qs(parts.query):
                        return self._reply(400, {"error": "keep_alive is required", "status": 400})
                    pit_id = f"pit-{len(fake.pits)}"
                    fake.pits[pit_id] = m.group(1)
                    return self._reply(200, {"id": pit_id})
                if method == "POST" and parts.path == "/_search":
                    return self._reply(200, fake._search(body))
                if method == "DELETE" and parts.path == "/_pit":
                    freed = fake.pits.pop(body.get("id"), None) is not None
                    return self._reply(200, {"succeeded": True, "num_freed": int(freed)})
                self._reply(404, {"error": f"no handler for {method} {parts.path}", "status": 404})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        return Handler
