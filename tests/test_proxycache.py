"""Pull-through cache hit rate, against a real docker-registry in proxy mode in front of another.

The test keeps its own model of the cache: the (repository, digest) pairs the proxy has
stored. A request for a pair it lacks is a miss, because the proxy fetches from the upstream;
every other request is a hit. Distribution keeps its proxy cache per repository, so a layer
cached through one repository is fetched again through another. The figures regwatch
exports through a real ``regwatch serve`` must equal the model's counts exactly.

After each request the test waits for the proxy's counters to settle. The proxy stores a
fetched blob in a background goroutine, and a second request for the same blob while that
copy is still running is served from the same upstream stream.
"""

from __future__ import annotations

import logging
import random
import time

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from regwatch.client import RegistryClient, TooLarge
from regwatch.collectors import TargetContext
from regwatch.collectors.proxycache import (Counts, ProxyCacheCollector, ProxyCacheError, blob_client_requests, derive,
                                            native_counters)
from regwatch.config import parse_config
from regwatch.images import build_image, push_image
from regwatch.localregistry import LocalRegistry, free_port
from tests.fakes.hostile import HostileServer, endless
from tests.fakes.hostile import Reply as HReply
from tests.proxycache_model import Model


@pytest.fixture
def upstream_and_proxy(make_registry):
    upstream = make_registry(debug=False)
    client = RegistryClient(upstream.url)
    shared = {"usr/lib/shared.so": b"s" * 5000}
    images = {
        "lib/a": build_image([{"a": b"1" * 1000}, shared]),
        "lib/b": build_image([{"b": b"2" * 2000}, shared]),
        "lib/a:2": build_image([{"c": b"3" * 3000}, shared]),   # a second image in lib/a, same shared layer
    }
    for ref, image in images.items():
        repo, _, tag = ref.partition(":")
        push_image(client, repo, tag or "1", image)
    assert images["lib/a"].layers[1].digest == images["lib/b"].layers[1].digest == images["lib/a:2"].layers[1].digest
    proxy = make_registry(proxy={"remoteurl": upstream.url})
    return upstream, proxy, images


def exported(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {"blob": {}, "manifest": {}}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("regwatch_proxy_cache_"):
            kind = family.name.removeprefix("regwatch_proxy_cache_")
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["object"]][kind] = sample.value
    return out


def test_scripted_pulls_through_a_real_proxy_are_counted_exactly(upstream_and_proxy, write_config, serve):
    _, proxy, images = upstream_and_proxy
    a, b, a2 = images["lib/a"], images["lib/b"], images["lib/a:2"]
    model = Model(proxy)
    model.pull("lib/a", a)                      # first pull: every object a miss
    model.pull("lib/a", a)                      # repeat by tag: every object a hit
    model.pull("lib/a", a, by_digest=True)      # by digest: hits
    model.pull("lib/a", a2, tag="2")            # new manifest, config and layer miss; the shared layer hits
    model.request("HEAD", "manifest", "lib/b", "1", b.digest, len(b.manifest))      # HEAD first: a miss
    model.request("HEAD", "blob", "lib/b", b.layers[0].digest, b.layers[0].digest,  # HEAD fetches it too
                  len(b.layers[0].data))
    model.pull("lib/b", b)                      # the layer shared with lib/a misses: another repository
    model.request("HEAD", "manifest", "lib/b", b.digest, b.digest, len(b.manifest))
    model.request("HEAD", "blob", "lib/b", b.config.digest, b.config.digest, len(b.config.data))
    model.pull("lib/b", b)
    # Counted by hand from the comments above, so the model itself is checked too.
    assert {obj: {k: v for k, v in c.items() if not k.endswith("bytes")} for obj, c in model.counts.items()} == {
        "manifest": {"requests": 8, "hits": 5, "misses": 3},
        "blob": {"requests": 20, "hits": 12, "misses": 8}}, "the script changed: recount"
    manifests = {"lib/a": a.manifest, "lib/a:2": a2.manifest, "lib/b": b.manifest}
    assert model.counts["manifest"]["upstream_bytes"] == sum(len(m) for m in manifests.values())

    config = write_config({"targets": [{"name": "mirror", "kind": "distribution", "url": proxy.url,
                                        "debug_url": proxy.debug_url, "interval": "1s"}]})
    proc = serve(config)
    proc.wait_ready()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = proc.metrics()
        got = exported(text)
        if got == model.counts:
            break
        time.sleep(0.3)
    assert got == model.counts
    assert 'regwatch_proxy_cache_info{counters="expvar",target="mirror"} 1.0' in text.splitlines()


def test_a_registry_that_is_not_a_proxy_exports_no_cache_series(registry, write_config):
    config = parse_config({"targets": [{"name": "hub", "kind": "distribution", "url": registry.url,
                                        "debug_url": registry.debug_url}]})
    assert list(ProxyCacheCollector(TargetContext(config.targets[0])).collect()) == []


def test_an_unreachable_debug_address_is_a_collector_failure_not_zeros(registry, write_config, serve):
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config({"targets": [{"name": "mirror", "kind": "distribution", "url": registry.url,
                                        "debug_url": dead, "interval": "1s"}]})
    proc = serve(config)
    proc.wait_ready()
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline and 'collector="proxycache"' not in text:
        text = proc.metrics()
        time.sleep(0.3)
    assert 'regwatch_collector_success{collector="proxycache",target="mirror"} 0.0' in text
    assert "regwatch_proxy_cache_" not in text
    assert "collector failed" in proc.log() and "mirror" in proc.log()


def test_counters_reset_with_the_registry_and_never_go_backwards_otherwise(upstream_and_proxy):
    _, proxy, images = upstream_and_proxy
    config = parse_config({"targets": [{"name": "mirror", "kind": "distribution", "url": proxy.url,
                                        "debug_url": proxy.debug_url}]})
    collector = ProxyCacheCollector(TargetContext(config.targets[0]))
    model = Model(proxy)
    model.pull("lib/a", images["lib/a"])
    model.pull("lib/a", images["lib/a"])
    first = exported_from(collector)
    assert first == model.counts
    proxy.stop()
    proxy.start()
    model = Model(proxy)
    model.stored = {("lib/a", d) for d in (images["lib/a"].digest, images["lib/a"].config.digest,
                                          *(layer.digest for layer in images["lib/a"].layers))}
    model.pull("lib/a", images["lib/a"])       # the cache's storage survived the restart: hits
    assert exported_from(collector) == model.counts


def exported_from(collector: ProxyCacheCollector) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {"blob": {}, "manifest": {}}
    for family in collector.collect():
        if family.name.startswith("regwatch_proxy_cache_") and family.type == "counter":
            kind = family.name.removeprefix("regwatch_proxy_cache_")
            for sample in family.samples:
                out[sample.labels["object"]][kind] = sample.value
    return out


def test_without_the_registry_prometheus_metrics_only_manifests_are_exported():
    expvar = {"blobs": {"Requests": 9}, "manifests": {"Requests": 4, "Misses": 1}}
    assert blob_client_requests("") is None
    assert derive(expvar, None) == {"manifest": Counts(4.0, 3.0, 1.0)}
    assert derive(expvar, 5.0)["blob"] == Counts(5.0, 1.0, 4.0)       # 2.8: no blob bytes (they are wrong)
    assert derive(expvar, 5.0, 2.0)["blob"] == Counts(5.0, 3.0, 2.0)


def test_a_distribution_3_registry_is_taken_at_its_word_once_it_counts_a_blob_miss():
    # Shaped after distribution v3.1.1 registry/proxy (proxymetrics.go, proxyblobstore.go: one push per
    # request, BlobPull on every upstream fetch); tests/test_distribution3.py drives the fake of it.
    expvar = {"blobs": {"Requests": 7, "Hits": 5, "Misses": 2, "BytesPulled": 20, "BytesPushed": 70},
              "manifests": {"Requests": 3, "Hits": 2, "Misses": 1, "BytesPulled": 5, "BytesPushed": 15}}
    assert derive(expvar, 7.0) == {"blob": Counts(7.0, 5.0, 2.0, 20.0, 70.0),
                                   "manifest": Counts(3.0, 2.0, 1.0, 5.0, 15.0)}
    assert derive(expvar, None)["blob"] == Counts(7.0, 5.0, 2.0, 20.0, 70.0)


def test_distribution_2_8_counts_its_proxy_expvar_as_the_collector_assumes(upstream_and_proxy):
    """Pins the raw counters' quirks (see the collector's docstring); fails if an upgrade changes them."""
    _, proxy, images = upstream_and_proxy
    a = images["lib/a"]
    layer = a.layers[0]
    model = Model(proxy)

    def raw() -> dict:
        return requests.get(proxy.debug_url + "/debug/vars", timeout=5).json()["registry"]["proxy"]

    size, msize = len(layer.data), len(a.manifest)
    model.request("GET", "manifest", "lib/a", "1", a.digest, msize)           # miss
    model.request("GET", "blob", "lib/a", layer.digest, layer.digest, size)   # miss
    first = raw()
    assert first["manifests"] == {"Requests": 1, "Hits": 1, "Misses": 1, "BytesPulled": msize, "BytesPushed": msize}
    # One blob fetched upstream: pushed twice (to the client and into storage), never counted as pulled.
    assert first["blobs"] == {"Requests": 2, "Hits": 2, "Misses": 0, "BytesPulled": 0, "BytesPushed": 2 * size}

    model.request("GET", "manifest", "lib/a", "1", a.digest, msize)           # hit
    model.request("GET", "blob", "lib/a", layer.digest, layer.digest, size)   # hit
    model.request("HEAD", "blob", "lib/a", layer.digest, layer.digest, size)  # hit; counts its size, sends none
    again = raw()
    assert again["manifests"] == {"Requests": 2, "Hits": 2, "Misses": 1, "BytesPulled": msize,
                                  "BytesPushed": 2 * msize}
    assert again["blobs"] == {"Requests": 4, "Hits": 4, "Misses": 0, "BytesPulled": 0, "BytesPushed": 4 * size}


def test_a_long_download_from_the_cache_is_a_hit_while_it_streams(make_registry):
    """The registry counts a cached blob as pushed before it sends it; until the download ends it is
    in flight, not a miss (and a miss, once exported, could never be taken back)."""
    upstream = make_registry(debug=False)
    big = build_image([{"big": random.Random(5).randbytes(24 << 20)}])   # incompressible: fills the socket
    push_image(RegistryClient(upstream.url), "lib/big", "1", big)
    proxy = make_registry(proxy={"remoteurl": upstream.url})
    config = parse_config({"targets": [{"name": "mirror", "kind": "distribution", "url": proxy.url,
                                        "debug_url": proxy.debug_url}]})
    collector = ProxyCacheCollector(TargetContext(config.targets[0]))
    model = Model(proxy)
    layer = big.layers[0].digest
    model.request("GET", "blob", "lib/big", layer, layer, len(big.layers[0].data))   # miss: now cached

    with requests.get(f"{proxy.url}/v2/lib/big/blobs/{layer}", stream=True, timeout=10) as slow:
        assert slow.raw.read(1024)
        deadline = time.monotonic() + 10
        while 'registry_http_in_flight_requests{handler="blob"} 1' not in requests.get(
                proxy.debug_url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the download finished before the test could look"
            time.sleep(0.05)
        assert exported_from(collector)["blob"] == model.counts["blob"]   # the half-sent hit is not a miss
    # The client hung up after 1 KiB; the registry still answered 200: one more request, a hit.
    model.counts["blob"]["requests"] += 1
    model.counts["blob"]["hits"] += 1
    deadline = time.monotonic() + 10
    while exported_from(collector)["blob"] != model.counts["blob"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exported_from(collector)["blob"] == model.counts["blob"]


@pytest.mark.servers
def test_the_blob_descriptor_cache_of_a_real_2_8_2_registry(tmp_path):
    """2.8 counts the cache as registry_storage_cache_total{type}; regwatch exports it for any registry (no proxy
    needed). The test checks what it can know on its own: a blob the registry has is found in the cache on every
    later read (hits, no misses), a blob it has never seen is one miss."""
    root = tmp_path / "registry"
    registry = LocalRegistry(root, extra={"storage": {"filesystem": {"rootdirectory": str(root / "data")},
                                                      "cache": {"blobdescriptor": "inmemory"}}})
    image = build_image([{"etc/motd": b"hello\n"}])
    layer = image.layers[0].digest
    with registry:
        push_image(RegistryClient(registry.url), "lib/a", "1", image)
        config = parse_config({"targets": [{"name": "hub", "kind": "distribution", "url": registry.url,
                                            "debug_url": registry.debug_url}]})
        collector = ProxyCacheCollector(TargetContext(config.targets[0]))

        def cache() -> dict[str, float]:
            out = {}
            for family in collector.collect():
                assert not family.name.startswith("regwatch_proxy_cache_"), "not a proxy: no proxy series"
                out[family.name.removeprefix("regwatch_blob_descriptor_cache_")] = family.samples[0].value
            return out

        def raw() -> dict[str, float]:
            text = requests.get(registry.debug_url + "/metrics", timeout=5).text
            return {s.labels["type"]: s.value for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == "registry_storage_cache_total"}

        before = cache()
        assert before == {"requests": raw()["Request"], "hits": raw()["Hit"], "misses": raw()["Miss"]}
        for _ in range(3):
            assert requests.get(f"{registry.url}/v2/lib/a/blobs/{layer}", timeout=5).status_code == 200
        after = cache()
        assert after["misses"] == before["misses"] and after["hits"] >= before["hits"] + 3
        assert after["requests"] == after["hits"] + after["misses"]
        assert requests.get(f"{registry.url}/v2/lib/a/blobs/sha256:{'0' * 64}", timeout=5).status_code == 404
        unknown = cache()
        assert (unknown["misses"], unknown["requests"]) == (after["misses"] + 1, after["requests"] + 1)


def hostile_collector(routes: dict) -> tuple[HostileServer, ProxyCacheCollector]:
    server = HostileServer(routes).start()
    config = parse_config({"targets": [{"name": "mirror", "kind": "distribution", "url": server.url,
                                        "debug_url": server.url, "timeout": "2s"}]})
    return server, ProxyCacheCollector(TargetContext(config.targets[0]))


@pytest.mark.servers
def test_a_debug_address_that_lies_is_a_clear_error_not_a_traceback():
    server, collector = hostile_collector({
        "/debug/vars": HReply(200, {"Content-Type": "application/json"},
                              b'{"registry": {"proxy": {"blobs": {"Requests": "9"}, "manifests": {"Requests": []}}}}'),
        "/metrics": HReply(200, {"Content-Type": "text/html"}, b"<html><body>registry_proxy_requests_total</body>"),
    })
    try:
        with pytest.raises(ProxyCacheError) as err:
            list(collector.collect())
    finally:
        server.stop()
    assert str(err.value) == (f"target mirror: {server.url} has neither registry_proxy_* counters on /metrics nor "
                              "registry.proxy in /debug/vars: is debug_url the debug address of a Docker Distribution "
                              "registry (http.debug.addr)?")


def test_counters_that_are_not_counts_are_left_out():
    exposition = "\n".join([
        "# TYPE registry_proxy_requests_total counter",
        'registry_proxy_requests_total{type="blob"} NaN', 'registry_proxy_requests_total{type="manifest"} -3',
        "# TYPE registry_proxy_hits_total counter",
        'registry_proxy_hits_total{type="blob"} 1', 'registry_proxy_hits_total{type="manifest"} 1',
        "# TYPE registry_proxy_misses_total counter",
        'registry_proxy_misses_total{type="blob"} 1', 'registry_proxy_misses_total{type="manifest"} 1', ""])
    assert native_counters(exposition) is None
    assert native_counters(exposition.replace("NaN", "2").replace("} -3", "} 2")) == {
        "blob": Counts(2.0, 1.0, 1.0), "manifest": Counts(2.0, 1.0, 1.0)}


@pytest.mark.servers
def test_an_endless_metrics_page_is_cut_off_at_its_limit():
    server, collector = hostile_collector({
        "/debug/vars": HReply(200, {"Content-Type": "application/json"},
                              b'{"registry": {"proxy": {"blobs": {"Requests": 1}, "manifests": {"Requests": 1, '
                              b'"Misses": 0}}}}'),
        "/metrics": HReply(200, {"Content-Type": "text/plain"}, chunks=endless(b"# " + b"x" * 65534)),
    })
    try:
        with pytest.raises(TooLarge) as err:
            list(collector.collect())
    finally:
        server.stop()
    assert str(err.value) == (f"target mirror: GET /metrics: the answer goes on past regwatch's limit of {4 << 20} "
                              "bytes for it; refused")


@pytest.mark.servers
def test_a_registry_that_is_not_a_proxy_gets_no_advice_about_proxy_metrics(tmp_path, caplog):
    registry = LocalRegistry(tmp_path / "registry")
    del registry.config["http"]["debug"]["prometheus"]        # its debug address without /metrics
    registry.config_path.write_text(yaml.safe_dump(registry.config))
    with registry:
        assert requests.get(registry.debug_url + "/metrics", timeout=5).status_code == 404
        config = parse_config({"targets": [{"name": "hub", "kind": "distribution", "url": registry.url,
                                            "debug_url": registry.debug_url}]})
        collector = ProxyCacheCollector(TargetContext(config.targets[0]))
        with caplog.at_level(logging.WARNING, logger="regwatch.collectors.proxycache"):
            assert list(collector.collect()) == []
    assert caplog.records == []
