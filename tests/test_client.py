"""The registry client against a real Distribution registry: auth, pagination, manifests."""

from __future__ import annotations

import pytest

from regwatch.client import (AuthFailed, MEDIA_OCI_INDEX, RegistryClient, Unreachable, parse_www_authenticate)
from regwatch.images import build_image, build_index, push_image, push_index
from regwatch.localregistry import free_port
from tests.tokenserver import TokenServer


def test_parse_www_authenticate():
    c = parse_www_authenticate('Bearer realm="https://auth.example.com/token",service="registry.example.com",'
                               'scope="repository:team/app:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                        "scope": "repository:team/app:pull,push"}
    assert parse_www_authenticate('Basic realm="regwatch"').scheme == "basic"
    assert parse_www_authenticate("") is None


def push_fixture_images(client: RegistryClient, repos: int, tags_per_repo: int) -> dict[str, list[str]]:
    pushed: dict[str, list[str]] = {}
    for r in range(repos):
        repo = f"team{r % 2}/app{r}"
        image = build_image([{"base": b"shared base layer"}, {f"app{r}": f"content {r}".encode()}])
        pushed[repo] = []
        for t in range(tags_per_repo):
            push_image(client, repo, f"v{t}", image)
            pushed[repo].append(f"v{t}")
    return pushed


def test_catalog_and_tags_follow_link_pagination(registry, registry_client):
    pushed = push_fixture_images(registry_client, repos=5, tags_per_repo=3)
    pages = list(registry_client.paginate("/v2/_catalog", params={"n": 2}, scope="registry:catalog:*"))
    assert len(pages) == 3  # 5 repositories, 2 per page: the registry needs three pages
    assert sorted(registry_client.catalog(page_size=2)) == sorted(pushed)
    for repo, tags in pushed.items():
        assert sorted(registry_client.tags(repo, page_size=2)) == sorted(tags)


def test_manifest_get_and_head_with_index(registry_client):
    index = build_index([build_image([{"a": b"amd"}]), build_image([{"a": b"arm"}], architecture="arm64")])
    push_index(registry_client, "multi/app", "latest", index)
    manifest = registry_client.get_manifest("multi/app", "latest")
    assert manifest.media_type == MEDIA_OCI_INDEX and manifest.is_index
    assert manifest.digest == index.digest
    assert registry_client.head_manifest("multi/app", "latest") == index.digest
    assert registry_client.head_manifest("multi/app", "missing") is None


def test_wrong_password_is_auth_failed_without_the_password(registry):
    with RegistryClient(registry.url, name="hub", username="alice", password="wrong-hunter2") as client, \
            pytest.raises(AuthFailed) as info:
        client.ping()
    assert "hub" in str(info.value) and "alice" in str(info.value)
    assert "wrong-hunter2" not in str(info.value)


def test_dead_registry_is_unreachable():
    with RegistryClient(f"http://127.0.0.1:{free_port()}", name="dead", retries=1, backoff=0.01,
                        timeout=1) as client, pytest.raises(Unreachable, match="target dead: GET /v2/: cannot connect"):
        client.ping()


@pytest.fixture
def token_registry(make_registry, tmp_path):
    server = TokenServer(tmp_path, users={"bob": "bob-secret"}).start()
    reg = make_registry(token=server.registry_auth())
    yield reg, server
    server.stop()


def test_bearer_token_auth_and_caching(token_registry):
    reg, server = token_registry
    with RegistryClient(reg.url, username="bob", password="bob-secret") as client:
        push_fixture_images(client, repos=3, tags_per_repo=2)
        assert len(list(client.catalog(page_size=1))) == 3
        assert sorted(client.tags("team0/app0")) == ["v0", "v1"]
        assert server.requests[-1]["scope"] == ["repository:team0/app0:pull"]
        before = len(server.requests)
        for _ in range(3):
            assert sorted(client.tags("team0/app0")) == ["v0", "v1"]
        # One token per scope, cached until it expires: repeated calls fetch no new token.
        assert len(server.requests) == before
        assert all(r["ok"] and r["user"] == "bob" for r in server.requests)


def test_bearer_token_wrong_password(token_registry):
    reg, server = token_registry
    with RegistryClient(reg.url, name="tok", username="bob", password="nope-hunter2") as client, \
            pytest.raises(AuthFailed) as info:
        client.ping()
    token_server = f"http://127.0.0.1:{server.httpd.server_address[1]}"
    assert str(info.value) == (f"target tok: the token server {token_server} rejected user bob (from the caller) "
                               "(HTTP 401); check the username and password (or token)")
    assert server.requests[-1] == {"user": "bob", "ok": False}
