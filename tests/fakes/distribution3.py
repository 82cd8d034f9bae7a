"""Distribution 3 where the tests need it and cannot run it: its pagination and its proxy counters.

No Distribution 3 binary can be installed here (Debian ships 2.8.2), so this is a fake, built from
distribution/distribution at the tags **v3.1.0** and **v3.1.1** (github.com/distribution/distribution),
file by file:

Pagination (``Distribution3(storage=...)``), served from a storage directory on disk in the layout
Distribution itself uses, so a real 2.8.2 ``docker-registry`` can serve the same directory beside it:

- ``registry/handlers/catalog.go`` (GetCatalog): no ``n`` means 100 (defaultReturnedEntries); ``n`` not an
  integer or negative, or above ``catalog.maxentries``, is 400 PAGINATION_NUMBER_INVALID with detail
  ``{"n": ...}``; a full page gets ``Link: </v2/_catalog?last=<last>&n=<n>>; rel="next"`` (the request's own
  path, a relative URL), so an exactly full last page is followed by an empty one.
- ``registry/storage/catalog.go`` (Repositories, handleRepository, lessPath): repositories are found by a
  depth-first walk of ``repositories/`` whose children are visited in sorted order
  (``registry/storage/driver/walk.go``, doWalkFallback); a directory holding ``_manifests`` is a repository,
  other ``_`` directories are skipped; ``last`` is compared component by component ('/' sorts first).
  The walk's start-after hint is an optimisation and not modelled; the test checks the fake's listing
  against the real 2.8.2 over the same directory.
- ``registry/handlers/tags.go`` (GetTags): no ``n`` lists every tag. **v3.1.0** answers ``n`` above
  ``tags.maxtags`` with 400 PAGINATION_NUMBER_INVALID; **v3.1.1** clamps ``n`` to maxtags and sends a
  ``Link`` with the clamped ``n``; the page after the last tag is ``"tags": null`` in both (the empty
  array came after v3.1.1, PR 4931). ``registry/storage/tagstore.go`` (List, handleTag): tags in sorted
  order after ``last``; a repository without a tags directory is 404 NAME_UNKNOWN.
- ``configuration/configuration.go``: maxentries and maxtags default to 1000.
- ``registry/api/errcode/register.go`` and ``handler.go``: the error envelope and its status.

Pull-through cache (``Distribution3(upstream=url)``): manifests and blobs come from a real upstream
registry on a miss and are kept per repository, as ``registry/proxy`` does, and the debug address serves
what v3 publishes there:

- ``registry/proxy/proxymetrics.go``: ``registry_proxy_{requests,hits,misses,pulled_bytes,pushed_bytes}_total
  {type="blob"|"manifest"}``, each initialised to 0, and the same figures in the expvar
  ``registry.proxy.{blobs,manifests}`` (``/debug/vars``).
- ``registry/proxy/proxyblobstore.go``: a blob GET or HEAD served from the cache is one push of its size, a
  hit (counted before it is sent); one fetched from the upstream is one pull and one push of its size, a
  miss (counted once it is copied), stored for the repository; a HEAD copies it too (only the body is
  dropped). A miss for a blob already being fetched is fetched again and not stored.
- ``registry/proxy/proxymanifeststore.go`` and ``proxytagservice.go``: a tag is resolved against the upstream
  first (a HEAD there); the manifest is then served from the cache (a hit) or fetched (a miss, one pull of
  its length); GET and HEAD both count (``registry/handlers/manifests.go`` calls Get for both), with the
  manifest's length as pushed bytes; an ``If-None-Match`` on the digest is 304 and counts nothing.
- ``registry/storage/cache/cachedblobdescriptorstore.go``: ``registry_storage_cache_{requests,hits,errors}_total``.
  These are a **model**, not a trace of v3's calls: one descriptor lookup per blob request, a hit when
  that repository's blob was already cached, an error for each lookup while ``cache_failing`` is set
  (a Redis that is down). v3 itself may look a descriptor up more than once per request.

The fake keeps ``seen`` (method, path with query, status) for the tests.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

from regwatch.client import MANIFEST_ACCEPT, MEDIA_OCI_MANIFEST
from regwatch.images import Image, build_image

# --------------------------------------------------------------------------- the storage layout

V2 = Path("docker") / "registry" / "v2"   # under storage.filesystem.rootdirectory (registry/storage/paths.go)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def tiny_image() -> Image:
    return build_image([{"etc/hostname": b"tiny\n"}])


def write_storage(root: Path, repositories: Mapping[str, Iterable[str]], image: Image | None = None) -> Image:
    """Fill ``root`` (a registry's ``storage.filesystem.rootdirectory``) in Distribution's layout
    (registry/storage/paths.go): one small image's blobs stored once, and in each repository linked and
    tagged with each of its tags. Much faster than pushing thousands of repositories over HTTP, and what a
    real registry then serves as if they had been pushed."""
    image = image or tiny_image()
    base = Path(root) / V2
    for blob in (image.config, *image.layers):
        _store_blob(base, blob.digest, blob.data)
    _store_blob(base, image.digest, image.manifest)
    for repo, tags in repositories.items():
        rdir = base / "repositories" / repo
        for blob in (image.config, *image.layers):
            _link(rdir / "_layers" / "sha256" / _hex(blob.digest), blob.digest)
        _link(rdir / "_manifests" / "revisions" / "sha256" / _hex(image.digest), image.digest)
        for tag in tags:
            tdir = rdir / "_manifests" / "tags" / tag
            _link(tdir / "current", image.digest)
            _link(tdir / "index" / "sha256" / _hex(image.digest), image.digest)
    return image


def _store_blob(base: Path, digest: str, data: bytes) -> None:
    hexd = _hex(digest)
    path = base / "blobs" / "sha256" / hexd[:2] / hexd
    path.mkdir(parents=True, exist_ok=True)
    (path / "data").write_bytes(data)


# --------------------------------------------------------------------------- v3's walk and ordering

def less_path(a: str, b: str) -> bool:
    """registry/storage/catalog.go lessPath: a component-wise comparison ('/' sorts before every byte)."""
    return a.replace("/", "\x00").encode() < b.replace("/", "\x00").encode()


def walk_repositories(root: Path) -> Iterable[str]:
    """Every repository under ``root`` (…/v2/repositories) in the order v3's sorted depth-first walk finds them."""

    def walk(directory: Path, prefix: str) -> Iterable[str]:
        try:
            children = sorted(p.name for p in directory.iterdir())
        except FileNotFoundError:
            return
        for name in children:
            path = directory / name
            if not path.is_dir():
                continue
            if name == "_manifests":
                yield prefix.rstrip("/")
            elif not name.startswith("_"):
                yield from walk(path, f"{prefix}{name}/")

    yield from walk(root, "")


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: an optional sign and decimal digits that fit in 64 bits."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


# --------------------------------------------------------------------------- the fake

ERRORS = {  # registry/api/errcode/register.go and registry/api/v2/errors.go: code -> (status, message)
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown"),
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "UNSUPPORTED": (405, "The operation is unsupported."),
}

OBJECTS = ("blob", "manifest")
COUNTERS = {  # registry/proxy/proxymetrics.go: name -> (help, expvar field)
    "requests": ("The number of total incoming proxy request received", "Requests"),
    "hits": ("The number of total proxy request hits", "Hits"),
    "misses": ("The number of total proxy request misses", "Misses"),
    "pulled_bytes": ("The size of total bytes pulled from the upstream", "BytesPulled"),
    "pushed_bytes": ("The size of total bytes pushed to the client", "BytesPushed"),
}
STORAGE_CACHE = {  # registry/storage/cache/cachedblobdescriptorstore.go (v3): name -> help
    "cache_requests": "The number of cache request received",
    "cache_hits": "The number of cache request received",
    "cache_errors": "The number of cache request errors",
}


class Reply:
    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.status, self.body, self.headers, self.head = status, body, dict(headers or {}), head


def error(code: str, detail: object = None) -> Reply:
    status, message = ERRORS[code]
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode() + b"\n"
    return Reply(status, body, {"Content-Type": "application/json"})


def _json(obj: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(200, json.dumps(obj).encode() + b"\n", {"Content-Type": "application/json", **(headers or {})})


class Distribution3:
    """A v3 registry front: ``version`` is "3.1.0" or "3.1.1" (tags/list above maxtags: 400, or clamped).

    With ``storage`` it lists what that directory holds (catalog and tags); with ``upstream`` it is a
    pull-through cache of that registry, with v3's counters on its debug address (``debug_url``).
    """

    def __init__(self, *, storage: Path | None = None, upstream: str | None = None, version: str = "3.1.1",
                 maxentries: int = 1000, maxtags: int = 1000):
        if version not in ("3.1.0", "3.1.1"):
            raise ValueError(f"version {version}: the fake follows 3.1.0 and 3.1.1")
        self.storage = Path(storage) if storage else None
        self.upstream = upstream.rstrip("/") if upstream else None
        self.version = version
        self.maxentries = maxentries
        self.maxtags = maxtags
        self.seen: list[tuple[str, str, int]] = []
        self.cache_failing = False
        self._lock = threading.Lock()
        # registry/proxy: what the cache holds, per repository (local storage links blobs per repository).
        self._blobs: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._tags: dict[tuple[str, str], str] = {}
        self._inflight: set[str] = set()
        self._descriptors: set[tuple[str, str]] = set()
        self.counters = {obj: {name: 0 for name in COUNTERS} for obj in OBJECTS}
        self.storage_cache = {name: 0 for name in STORAGE_CACHE}
        self._session = requests.Session()
        self.api = self._server(self._api)
        self.debug = self._server(self._debug)

    # ------------------------------------------------------------------ servers

    def _server(self, route) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                reply = route(self.command, self.path, self.headers)
                with fake._lock:
                    fake.seen.append((self.command, self.path, reply.status))
                self.send_response(reply.status)
                reply.headers.setdefault("Docker-Distribution-API-Version", "registry/2.0")
                reply.headers.setdefault("Content-Length", str(len(reply.body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD" and not reply.head:
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.server_address[1]}"

    @property
    def debug_url(self) -> str:
        return f"http://127.0.0.1:{self.debug.server_address[1]}"

    def start(self) -> Distribution3:
        for server in (self.api, self.debug):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self.api, self.debug):
            server.shutdown()
            server.server_close()
        self._session.close()

    def __enter__(self) -> Distribution3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the API

    def _api(self, method: str, target: str, headers) -> Reply:
        parts = urlsplit(target)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        if path == "/v2/":
            return Reply(200, b"{}", {"Content-Type": "application/json"})
        if path == "/v2/_catalog" and method == "GET":
            return self._catalog(parts.path, query)
        match = re.fullmatch(r"/v2/(?P<name>.+)/(?P<kind>tags/list|manifests|blobs)(?:/(?P<ref>[^/]+))?", path)
        if match is None:
            return Reply(404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"})
        name, kind, ref = match["name"], match["kind"], match["ref"]
        if kind == "tags/list" and ref is None and method == "GET":
            return self._tags_list(path, name, query)
        if self.upstream and ref and method in ("GET", "HEAD"):
            if kind == "manifests":
                return self._proxy_manifest(method, name, ref, headers)
            return self._proxy_blob(method, name, ref)
        return error("UNSUPPORTED")

    def _catalog(self, path: str, query: dict[str, str]) -> Reply:
        last = query.get("last", "")
        entries = 100
        if "n" in query and query["n"] != "":
            parsed = _atoi(query["n"])
            if parsed is None or parsed < 0:
                return error("PAGINATION_NUMBER_INVALID", {"n": query["n"]})
            if parsed > self.maxentries:
                return error("PAGINATION_NUMBER_INVALID", {"n": parsed})
            entries = parsed
        if entries < 0 or entries > self.maxentries:
            entries = self.maxentries
        repos: list[str] = []
        more = entries > 0
        if more:
            for repo in walk_repositories(self.storage / V2 / "repositories") if self.storage else ():
                if less_path(last, repo):
                    repos.append(repo)
                    if len(repos) == entries:
                        break
            else:
                more = False  # the walk ended before the buffer filled: io.EOF
        link = {"Link": _link_entry(path, entries, repos[-1])} if more else {}
        return _json({"repositories": repos}, link)

    def _tags_list(self, path: str, name: str, query: dict[str, str]) -> Reply:
        last = query.get("last", "")
        limit = -1
        if "n" in query and query["n"] != "":
            parsed = _atoi(query["n"])
            if self.version == "3.1.0":
                cap = self.maxtags if self.maxtags > 0 else -1
                if parsed is None or (cap > 0 and parsed > cap) or parsed < 0:
                    return error("PAGINATION_NUMBER_INVALID", {"n": parsed or 0})
                limit = parsed
            else:
                if parsed is None or parsed < 0:
                    return error("PAGINATION_NUMBER_INVALID", {"n": parsed or 0})
                limit = min(parsed, self.maxtags) if self.maxtags > 0 else parsed
        tags: list[str] | None = None
        more = limit != 0
        if more:
            root = (self.storage / V2 / "repositories" / name / "_manifests" / "tags") if self.storage else None
            if root is None or not root.is_dir():
                return error("NAME_UNKNOWN", {"name": name})
            for tag in sorted(p.name for p in root.iterdir()):
                if less_path(last, tag):
                    tags = (tags or []) + [tag]
                    if limit > 0 and len(tags) == limit:
                        break
            else:
                more = False
        link = {"Link": _link_entry(path, limit, tags[-1])} if more and tags else {}
        # tags.go before PR 4931: the nil slice of an empty listing encodes as null.
        return _json({"name": name, "tags": tags}, link)

    # ------------------------------------------------------------------ the pull-through cache

    def _upstream(self, method: str, path: str, accept: str | None = None) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        return self._session.request(method, self.upstream + path, headers=headers, timeout=10)

    def _count(self, obj: str, *, pushed: int, hit: bool, pulled: int | None = None) -> None:
        with self._lock:
            c = self.counters[obj]
            if pulled is not None:   # BlobPull / ManifestPull
                c["misses"] += 1
                c["pulled_bytes"] += pulled
            c["requests"] += 1       # BlobPush / ManifestPush
            c["pushed_bytes"] += pushed
            if hit:
                c["hits"] += 1

    def _proxy_manifest(self, method: str, repo: str, ref: str, headers) -> Reply:
        digest = ref
        if not ref.startswith("sha256:"):
            # proxytagservice.Get: the upstream's answer first (a HEAD there), then the local association.
            resp = self._upstream("HEAD", f"/v2/{repo}/manifests/{ref}", MANIFEST_ACCEPT)
            if resp.status_code == 200 and resp.headers.get("Docker-Content-Digest"):
                digest = resp.headers["Docker-Content-Digest"]
                with self._lock:
                    self._tags[(repo, ref)] = digest
            else:
                with self._lock:
                    known = self._tags.get((repo, ref))
                if known is None:
                    return error("MANIFEST_UNKNOWN", {"Tag": ref})
                digest = known
        if headers.get("If-None-Match", "").strip('"') == digest:
            return Reply(304)
        with self._lock:
            cached = self._manifests.get((repo, digest))
        if cached is None:
            resp = self._upstream("GET", f"/v2/{repo}/manifests/{digest}", MANIFEST_ACCEPT)
            if resp.status_code != 200:
                return error("MANIFEST_UNKNOWN", {"Revision": digest})
            body, media_type = resp.content, resp.headers.get("Content-Type", MEDIA_OCI_MANIFEST)
            self._count("manifest", pushed=len(body), hit=False, pulled=len(body))
            with self._lock:
                self._manifests[(repo, digest)] = (body, media_type)
        else:
            body, media_type = cached
            self._count("manifest", pushed=len(body), hit=True)
        accepted = {part.split(";")[0].strip() for part in headers.get("Accept", "").split(",")}
        if media_type == MEDIA_OCI_MANIFEST and MEDIA_OCI_MANIFEST not in accepted:
            return error("MANIFEST_UNKNOWN")  # manifests.go: counted already, then refused
        return Reply(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest,
                                 "Etag": f'"{digest}"'})

    def _describe(self, repo: str, digest: str) -> None:
        """The storage cache's descriptor lookup (a model: one per blob request, see the module docstring)."""
        with self._lock:
            self.storage_cache["cache_requests"] += 1
            if self.cache_failing:
                self.storage_cache["cache_errors"] += 1
            elif (repo, digest) in self._descriptors:
                self.storage_cache["cache_hits"] += 1

    def _proxy_blob(self, method: str, repo: str, digest: str) -> Reply:
        self._describe(repo, digest)
        with self._lock:
            cached = self._blobs.get((repo, digest))
        if cached is not None:
            data, media_type = cached
            self._count("blob", pushed=len(data), hit=True)   # serveLocal: counted before it is sent
            return Reply(200, data, _blob_headers(data, media_type, digest))
        with self._lock:
            duplicate = digest in self._inflight   # proxyblobstore.go: fetched again, not stored
            self._inflight.add(digest)
        try:
            resp = self._upstream("GET", f"/v2/{repo}/blobs/{digest}")   # Stat + Open + CopyN
            if resp.status_code != 200:
                return error("BLOB_UNKNOWN", digest)
            data = resp.content
            media_type = resp.headers.get("Content-Type", "application/octet-stream")
            self._count("blob", pushed=len(data), hit=False, pulled=len(data))
            if not duplicate:
                with self._lock:
                    self._blobs[(repo, digest)] = (data, media_type)
                    self._descriptors.add((repo, digest))
        finally:
            if not duplicate:
                with self._lock:
                    self._inflight.discard(digest)
        return Reply(200, data, _blob_headers(data, media_type, digest))

    # ------------------------------------------------------------------ the debug address

    def _debug(self, method: str, target: str, headers) -> Reply:
        path = urlsplit(target).path
        if path == "/debug/vars":
            with self._lock:
                proxy = {("blobs" if obj == "blob" else "manifests"):
                         {field: self.counters[obj][name] for name, (_, field) in COUNTERS.items()}
                         for obj in OBJECTS}
            return _json({"cmdline": ["registry", "serve", "/etc/distribution/config.yml"],
                          "registry": {"proxy": proxy}})
        if path == "/metrics":
            return Reply(200, self.metrics_text().encode(), {"Content-Type": "text/plain; version=0.0.4"})
        if path == "/debug/health":
            return _json({})
        return Reply(404, b"404 page not found\n")

    def metrics_text(self) -> str:
        """The v3 debug /metrics exposition (go-metrics names: namespace registry, subsystem, ``_total``)."""
        lines = ["# HELP go_goroutines Number of goroutines that currently exist.", "# TYPE go_goroutines gauge",
                 "go_goroutines 21"]
        with self._lock:
            for name, (help_, _) in COUNTERS.items():
                full = f"registry_proxy_{name}_total"
                lines += [f"# HELP {full} {help_}", f"# TYPE {full} counter"]
                lines += [f'{full}{{type="{obj}"}} {self.counters[obj][name]}' for obj in OBJECTS]
            for name, help_ in STORAGE_CACHE.items():
                full = f"registry_storage_{name}_total"
                lines += [f"# HELP {full} {help_}", f"# TYPE {full} counter", f"{full} {self.storage_cache[name]}"]
        return "\n".join(lines) + "\n"


def _blob_headers(data: bytes, media_type: str, digest: str) -> dict[str, str]:
    return {"Content-Type": media_type, "Docker-Content-Digest": digest, "Etag": f'"{digest}"'}


def _link_entry(path: str, n: int, last: str) -> str:
    """catalog.go createLinkEntry: the request's path with exactly n and last, url.Values-encoded (sorted)."""
    return f'<{path}?{urlencode(sorted({"n": str(n), "last": last}.items()))}>; rel="next"'


def populated_cache(upstream_url: str) -> Distribution3:
    """A started v3 pull-through cache of ``upstream_url`` (a real registry it may push to) that has served
    hits and misses of both objects and seen a failing descriptor cache: every series regwatch's proxycache
    collector exports has a value. The caller stops it."""
    from regwatch.client import RegistryClient
    from regwatch.images import push_image

    image = build_image([{"etc/motd": b"populated\n"}])
    with RegistryClient(upstream_url) as client:
        push_image(client, "library/cached", "1", image)
    cache = Distribution3(upstream=upstream_url).start()
    accept = {"Accept": MANIFEST_ACCEPT}
    with requests.Session() as session:
        for failing in (False, False, True):   # misses, hits, then hits with the descriptor cache failing
            cache.cache_failing = failing
            session.get(f"{cache.url}/v2/library/cached/manifests/1", headers=accept, timeout=10).raise_for_status()
            for blob in (image.config, *image.layers):
                session.get(f"{cache.url}/v2/library/cached/blobs/{blob.digest}", timeout=10).raise_for_status()
    cache.cache_failing = False
    return cache
