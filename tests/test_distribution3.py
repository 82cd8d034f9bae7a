"""Distribution 3 (and 2.8): page sizes above the registry's maximum, and v3's native proxy counters.

Distribution 3 cannot run here; ``tests/fakes/distribution3.py`` is a fake built from distribution/distribution
**v3.1.0 and v3.1.1** (registry/handlers/catalog.go and tags.go, registry/storage/catalog.go and tagstore.go,
registry/storage/driver/walk.go, configuration/configuration.go for catalog.maxentries and tags.maxtags,
registry/api/errcode; registry/proxy/proxymetrics.go, proxyblobstore.go, proxymanifeststore.go,
proxytagservice.go and registry/storage/cache/cachedblobdescriptorstore.go for the counters). Debian's real
2.8.2 ``docker-registry`` runs beside it wherever it can: it serves the same storage directory (so the
fake's listing order is checked against the real walk), and it is the upstream of the v3 cache fake.

Thousands of repositories are not pushed: the test writes them into a storage directory in the layout
Distribution uses (one tiny image stored once and linked into every repository), which a real registry
then serves as if they had been pushed.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from regwatch.client import RegistryClient
from regwatch.collectors import TargetContext
from regwatch.collectors.distribution import DistributionCollector
from regwatch.collectors.proxycache import ProxyCacheCollector
from regwatch.config import parse_config
from regwatch.images import build_image, push_image
from regwatch.localregistry import LocalRegistry
from tests.fakes.distribution3 import Distribution3, populated_cache, write_storage
from tests.proxycache_model import Model

pytestmark = pytest.mark.servers   # every test here starts a registry or the fake

# 2,500 repositories over nested namespaces; two of them with many tags: one with more than a page of
# the registry's maximum (1000), one with exactly one page (Link to an empty last page).
MANY_TAGS = [f"v{i:04d}" for i in range(2345)]
EXACT_TAGS = [f"t{i:04d}" for i in range(1000)]


def repositories(count: int) -> dict[str, list[str]]:
    repos = {f"team-{i % 7}/svc/app-{i:04d}": ["latest"] for i in range(count - 3)}
    repos["solo"] = ["1.0", "1.1"]
    repos["big/many"] = MANY_TAGS
    repos["big/exact"] = EXACT_TAGS
    return repos


REPOS = repositories(2500)
# Distribution's catalog order: path components compared in turn (none of these names has a component that
# sorts before "_manifests", where the walk's order and this key would differ).
ORDER = sorted(REPOS, key=lambda name: name.split("/"))
TAGS = sum(len(tags) for tags in REPOS.values())


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """A registry storage directory holding REPOS, and a real 2.8.2 docker-registry serving it."""
    work = tmp_path_factory.mktemp("dist3")
    registry = LocalRegistry(work / "registry")
    write_storage(registry.root, REPOS)
    registry.start()
    yield registry
    registry.stop()


def collect(url: str, **target) -> dict[str, float]:
    config = parse_config({"targets": [{"name": "reg", "kind": "distribution", "url": url, **target}]})
    collector = DistributionCollector(TargetContext(config.targets[0]))
    try:
        return {family.name: family.samples[0].value for family in collector.collect()}
    finally:
        collector.client.close()


def test_the_fake_lists_repositories_in_the_order_the_real_walk_does(storage):
    with Distribution3(storage=storage.root) as v3, RegistryClient(storage.url) as real, \
            RegistryClient(v3.url) as fake:
        listed = list(fake.catalog(1000))
        assert listed == list(real.catalog(1000))
        assert sorted(listed) == sorted(REPOS)
        # v3 lists tags in sorted order; 2.8.2 (tagStore.All) in the directory's order.
        assert fake.tags("big/many", 1000) == sorted(real.tags("big/many", 1000)) == MANY_TAGS


def test_a_v3_catalog_of_2500_repositories_counts_exactly_with_page_size_5000(storage):
    with Distribution3(storage=storage.root, version="3.1.1") as v3:
        got = collect(v3.url, page_size=5000, concurrency=8)
        assert got == {"regwatch_registry_repositories": 2500, "regwatch_registry_tags": TAGS}
        catalog = [(status, path) for method, path, status in v3.seen if path.startswith("/v2/_catalog")]
    # One refusal, then the registry's maximum for the rest of the listing (its Link pages carry n=1000).
    assert [status for status, _ in catalog] == [400, 200, 200, 200]
    assert catalog[0][1] == "/v2/_catalog?n=5000" and catalog[1][1] == "/v2/_catalog?n=1000"
    tags_pages = [path for _, path, _ in v3.seen if path.startswith("/v2/big/many/tags/list")]
    # v3.1.1 clamps tags/list to maxtags (no 400) and pages on with Link.
    assert tags_pages == ["/v2/big/many/tags/list?n=5000", "/v2/big/many/tags/list?last=v0999&n=1000",
                          "/v2/big/many/tags/list?last=v1999&n=1000"]
    exact = [path for _, path, _ in v3.seen if path.startswith("/v2/big/exact/tags/list")]
    assert exact == ["/v2/big/exact/tags/list?n=5000", "/v2/big/exact/tags/list?last=t0999&n=1000"]


def test_v3_1_0_refuses_tags_above_maxtags_and_the_client_remembers_the_limit(storage):
    with Distribution3(storage=storage.root, version="3.1.0") as v3, RegistryClient(v3.url, name="reg") as client:
        assert client.tags("big/many", 5000) == MANY_TAGS
        assert client.tags("big/exact", 5000) == EXACT_TAGS
        assert client.tags("solo", 5000) == ["1.0", "1.1"]
        assert len(list(client.catalog(5000))) == 2500
        seen = [(status, path) for _, path, status in v3.seen]
    assert seen == [
        (400, "/v2/big/many/tags/list?n=5000"),          # 3.1.0: above maxtags is refused ...
        (200, "/v2/big/many/tags/list?n=1000"),          # ... so the client asks for the maximum
        (200, "/v2/big/many/tags/list?last=v0999&n=1000"),
        (200, "/v2/big/many/tags/list?last=v1999&n=1000"),
        (200, "/v2/big/exact/tags/list?n=1000"),         # remembered for tags/list: no second refusal
        (200, "/v2/big/exact/tags/list?last=t0999&n=1000"),
        (200, "/v2/solo/tags/list?n=1000"),
        (400, "/v2/_catalog?n=5000"),                    # the catalog's limit is its own
        (200, "/v2/_catalog?n=1000"),
        (200, f"/v2/_catalog?{urlencode({'last': ORDER[999], 'n': 1000})}"),
        (200, f"/v2/_catalog?{urlencode({'last': ORDER[1999], 'n': 1000})}"),
    ]


def test_the_real_2_8_2_counts_1200_repositories_exactly_with_page_size_5000(tmp_path):
    repos = repositories(1200)
    registry = LocalRegistry(tmp_path / "registry")
    write_storage(registry.root, repos)
    with registry:
        got = collect(registry.url, page_size=5000, concurrency=8)
        refused = [line for line in registry.log_path.read_text().splitlines()
                   if "/v2/_catalog?n=5000" in line and '" 400 ' in line]
    assert got == {"regwatch_registry_repositories": 1200,
                   "regwatch_registry_tags": sum(len(tags) for tags in repos.values())}
    assert len(refused) == 1, "2.8.2 no longer refuses n above 1000: the fallback is not exercised"


def test_a_registry_whose_maximum_is_below_1000_is_still_listed(storage):
    with Distribution3(storage=storage.root, maxentries=500) as v3, RegistryClient(v3.url, name="reg") as client:
        assert len(list(client.catalog(5000))) == 2500
        # 5000, then 1000, then 500 accepted and remembered: later pages ask for 500 at once.
        assert client.page_limit["_catalog"] == 500


def test_the_default_page_size_is_halved_until_accepted(storage):
    with Distribution3(storage=storage.root, maxentries=50) as v3, RegistryClient(v3.url, name="reg") as client:
        assert len(list(client.catalog(100))) == 2500
        assert client.page_limit["_catalog"] == 50



# --------------------------------------------------------------------------- v3's native proxy counters

@pytest.fixture
def upstream_images(make_registry):
    """A real 2.8.2 registry (the upstream) holding three images that share a layer."""
    upstream = make_registry(debug=False)
    shared = {"usr/lib/shared.so": b"s" * 5000}
    images = {"lib/a": build_image([{"a": b"1" * 1000}, shared]), "lib/b": build_image([{"b": b"2" * 2000}, shared])}
    with RegistryClient(upstream.url) as client:
        for repo, image in images.items():
            push_image(client, repo, "1", image)
    return upstream, images


def proxy_collector(debug_url: str) -> ProxyCacheCollector:
    config = parse_config({"targets": [{"name": "mirror", "kind": "distribution", "url": debug_url,
                                        "debug_url": debug_url}]})
    return ProxyCacheCollector(TargetContext(config.targets[0]))


def exported(collector: ProxyCacheCollector) -> dict[str, dict]:
    """{object: {requests, hits, misses, upstream_bytes, served_bytes}, "info": {...}, "descriptor_cache": {...}}"""
    out: dict[str, dict] = {"blob": {}, "manifest": {}, "info": {}, "descriptor_cache": {}}
    for family in collector.collect():
        for sample in family.samples:
            if family.name == "regwatch_proxy_cache_info":
                out["info"][sample.labels["counters"]] = sample.value
            elif family.name.startswith("regwatch_proxy_cache_"):
                out[sample.labels["object"]][family.name.removeprefix("regwatch_proxy_cache_")] = sample.value
            elif family.name.startswith("regwatch_blob_descriptor_cache_"):
                out["descriptor_cache"][family.name.removeprefix("regwatch_blob_descriptor_cache_")] = sample.value
    return out


def test_v3_native_proxy_counters_equal_the_pulls_the_test_made(upstream_images):
    """The test's pulls go through the v3 cache fake to a real upstream; the test's own Model counts what each
    request is (a hit once that repository has the object, the object's size served, its size fetched on a
    miss). regwatch's figures, read from the fake's v3 /metrics, must equal the Model's."""
    upstream, images = upstream_images
    a, b = images["lib/a"], images["lib/b"]
    with Distribution3(upstream=upstream.url) as cache:
        collector = proxy_collector(cache.debug_url)
        assert exported(collector)["info"] == {}, "a v3 cache that has served nothing exports no proxy series"
        model = Model(cache, blob_bytes=True, settle=False)
        model.pull("lib/a", a)                   # all misses
        model.pull("lib/a", a)                   # all hits
        model.pull("lib/a", a, by_digest=True)
        model.request("HEAD", "manifest", "lib/b", "1", b.digest, len(b.manifest))      # a miss
        model.request("HEAD", "blob", "lib/b", b.layers[1].digest, b.layers[1].digest,  # shared layer: another
                      len(b.layers[1].data))                                            # repository, a miss
        model.pull("lib/b", b)                   # manifest and shared layer hit; config and own layer miss
        assert {obj: (c["requests"], c["hits"], c["misses"]) for obj, c in model.counts.items()} == {
            "manifest": (5, 3, 2), "blob": (13, 7, 6)}, "the script changed: recount"
        got = exported(collector)
        assert {obj: got[obj] for obj in ("blob", "manifest")} == model.counts
        assert got["info"] == {"native": 1.0}
        blob = model.counts["blob"]
        assert got["descriptor_cache"] == {"requests": blob["requests"], "hits": blob["hits"],
                                           "misses": blob["misses"], "errors": 0}
        cache.cache_failing = True                # a Redis that is down: every lookup fails
        model.pull("lib/b", b)
        assert exported(collector)["descriptor_cache"]["errors"] == 1 + len(b.layers)


def test_v3_native_counters_are_preferred_to_its_expvar_and_the_2_8_correction(upstream_images):
    upstream, images = upstream_images
    with Distribution3(upstream=upstream.url) as cache:
        model = Model(cache, blob_bytes=True, settle=False)
        model.pull("lib/a", images["lib/a"])
        collector = proxy_collector(cache.debug_url)
        assert exported(collector)["info"] == {"native": 1.0}
        # The same counters without http.debug.prometheus: the expvar, which v3 counts right as well.
        cache.metrics_text = lambda: ""  # type: ignore[method-assign]
        got = exported(collector)
        assert got["info"] == {"expvar": 1.0}
        assert {obj: got[obj] for obj in ("blob", "manifest")} == model.counts
        assert got["descriptor_cache"] == {}


def test_populated_cache_gives_every_proxycache_series(make_registry):
    upstream = make_registry(debug=False)
    cache = populated_cache(upstream.url)
    try:
        names = {family.name for family in proxy_collector(cache.debug_url).collect() if family.samples}
    finally:
        cache.stop()
    assert names == {"regwatch_proxy_cache_requests", "regwatch_proxy_cache_hits", "regwatch_proxy_cache_misses",
                     "regwatch_proxy_cache_upstream_bytes", "regwatch_proxy_cache_served_bytes",
                     "regwatch_proxy_cache_info", "regwatch_blob_descriptor_cache_requests",
                     "regwatch_blob_descriptor_cache_hits", "regwatch_blob_descriptor_cache_misses",
                     "regwatch_blob_descriptor_cache_errors"}
