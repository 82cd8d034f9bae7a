"""The pull-through cache tests' own model of a cache: what the test sent, and what a hit or a miss
is, counted independently of the registry (test_proxycache against a real proxy, test_distribution3
against the v3 cache fake).

A request for a (repository, digest) pair the proxy has not stored is a miss, because the proxy
fetches it from the upstream; every other request is a hit. After each request the model waits for
the proxy's counters to settle (``settle=False`` where there is nothing to wait for: the v3 cache fake).
"""

from __future__ import annotations

import time

import requests

from regwatch.localregistry import LocalRegistry


def settle(proxy: LocalRegistry) -> None:
    last = None
    deadline = time.monotonic() + 20
    while True:
        now = requests.get(proxy.debug_url + "/debug/vars", timeout=5).json()["registry"]["proxy"]
        if now == last:
            return
        assert time.monotonic() < deadline, f"the proxy's counters never settled: {now}"
        last = now
        time.sleep(0.25)


class Model:
    """What the test sent, and what a cache hit or miss is, counted independently of the registry.

    Bytes are counted for manifests only: 2.8 counts manifest bytes right (the length of each manifest
    served, a HEAD included, and of each fetched from the upstream) and blob bytes wrong, so regwatch
    exports no blob bytes from it.
    """

    def __init__(self, proxy: LocalRegistry, *, blob_bytes: bool = False, settle: bool = True):
        self.proxy = proxy
        self.blob_bytes = blob_bytes
        self.settle = settle
        self.stored: set[tuple[str, str]] = set()
        self.counts = {obj: {"requests": 0, "hits": 0, "misses": 0} for obj in ("blob", "manifest")}
        for obj in ("manifest", "blob") if blob_bytes else ("manifest",):
            self.counts[obj].update(upstream_bytes=0, served_bytes=0)

    def request(self, method: str, obj: str, repo: str, ref: str, digest: str, size: int) -> None:
        kind = "blobs" if obj == "blob" else "manifests"
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"} if obj == "manifest" else {}
        resp = requests.request(method, f"{self.proxy.url}/v2/{repo}/{kind}/{ref}", headers=accept, timeout=10)
        assert resp.status_code == 200, (method, repo, ref, resp.status_code)
        hit = (repo, digest) in self.stored
        self.stored.add((repo, digest))
        counts = self.counts[obj]
        counts["requests"] += 1
        counts["hits" if hit else "misses"] += 1
        if "served_bytes" in counts:
            counts["served_bytes"] += size
            counts["upstream_bytes"] += 0 if hit else size
        if self.settle:
            settle(self.proxy)

    def pull(self, repo: str, image, *, tag: str = "1", by_digest: bool = False) -> None:
        self.request("GET", "manifest", repo, image.digest if by_digest else tag, image.digest, len(image.manifest))
        for blob in (image.config, *image.layers):
            self.request("GET", "blob", repo, blob.digest, blob.digest, len(blob.data))
