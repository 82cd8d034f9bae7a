"""Every registry request the drill makes, in one place, on top of ``regwatch.client``.

Each answer is treated as hostile: a manifest is read with a cap (``MAX_MANIFEST``) and hashed,
names, tags and digests a registry hands back are checked against the distribution-spec grammar
(``regwatch.oci``) before they reach a URL or the store, and a blob download stops at the
descriptor's size.

Interim pieces (until the client has them; see docs/drill.md "Client needs"): bounded body reads,
``referrers()``, and Harbor's project/repository listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from regwatch.client import (AuthFailed, Forbidden, MANIFEST_ACCEPT, NotFound, ProtocolError, RegistryClient,
                             RegistryError, repository_scope)
from regwatch.digest import sha256_digest
from regwatch.drill.manifest import MAX_MANIFEST, MEDIA_OCI_INDEX, BadContent, Descriptor, descriptor
from regwatch.oci import is_digest, is_repository, is_tag

CHUNK = 1 << 20
MAX_LIST_BODY = 8 << 20   # a tags or catalog page, a referrers list, a Harbor page
MAX_PAGES = 10_000


def read_bounded(resp, limit: int, what: str) -> bytes:  # noqa: ANN001 - a streaming response
    """The body of a streaming response, at most ``limit`` bytes (a longer one is an error, and is not
    read any further)."""
    out = bytearray()
    try:
        for chunk in resp.iter_content(64 << 10):
            out += chunk
            if len(out) > limit:
                raise ProtocolError(f"{what}: the answer is over {limit >> 20} MiB; refusing it")
    finally:
        resp.close()
    return bytes(out)


def _json(body: bytes, what: str) -> object:
    import json

    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{what}: the answer is not JSON") from None


def head_manifest(client: RegistryClient, repo: str, ref: str) -> str | None:
    digest = client.head_manifest(repo, ref)
    if digest is not None and not is_digest(digest):
        raise ProtocolError(f"{client.name}: HEAD {repo}:{ref} announced Docker-Content-Digest {digest[:80]!r}, "
                            "not a digest")
    return digest


def get_manifest(client: RegistryClient, repo: str, ref: str) -> tuple[bytes, str, str]:
    """(body, media type, sha256 of the body) of a manifest, read with the 4 MiB cap."""
    resp = client.request("GET", f"{client.v2_prefix}/{repo}/manifests/{ref}", scope=repository_scope(repo),
                          headers={"Accept": MANIFEST_ACCEPT}, stream=True)
    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
    body = read_bounded(resp, MAX_MANIFEST, f"{client.name}: manifest {repo}:{ref}")
    return body, media_type, sha256_digest(body)


def put_manifest(client: RegistryClient, repo: str, ref: str, body: bytes, media_type: str) -> str | None:
    """Push a manifest; returns the ``OCI-Subject`` the registry answered (distribution-spec "Pushing
    Manifests with Subject": a registry with the referrers API processed the subject), or None."""
    resp = client.request("PUT", f"{client.v2_prefix}/{repo}/manifests/{ref}",
                          scope=repository_scope(repo, "pull,push"), ok=(201,), data=body,
                          headers={"Content-Type": media_type or "application/vnd.oci.image.manifest.v1+json"})
    resp.close()
    return resp.headers.get("OCI-Subject")


def download_blob(client: RegistryClient, repo: str, desc: Descriptor, store) -> int:  # noqa: ANN001
    """Stream one blob into the store; the store stops reading past ``desc.size``."""
    resp = client.get_blob(repo, desc.digest)
    with resp:
        return store.write_blob(desc.digest, desc.size, resp.iter_content(CHUNK))


def tags(client: RegistryClient, repo: str) -> tuple[list[str], list[str]]:
    """(valid tags, refused names) of a repository."""
    good, bad = [], []
    for tag in client.tags(repo):
        (good if is_tag(tag) else bad).append(tag if isinstance(tag, str) else repr(tag))
    return good, bad


def catalog(client: RegistryClient) -> tuple[list[str], list[str]]:
    good, bad = [], []
    for name in client.catalog():
        (good if is_repository(name) else bad).append(name if isinstance(name, str) else repr(name))
    return good, bad


def harbor_repositories(client: RegistryClient) -> tuple[list[str], list[str]]:
    """Every repository the account can see through Harbor's REST API (api/v2.0 swagger: listProjects,
    then listRepositories per project; ``Repository.name`` is the full ``project/repo``)."""
    good: list[str] = []
    bad: list[str] = []
    for project in _harbor_list(client, "/api/v2.0/projects", {"page_size": 100, "with_detail": "false"}):
        name = project.get("name") if isinstance(project, dict) else None
        if not isinstance(name, str) or not is_repository(name) or "/" in name:
            bad.append(repr(name)[:80])
            continue
        # Harbor decodes the project name once; a name of the repository grammar needs no escaping,
        # quote() keeps that true even if the grammar check above is ever loosened.
        for repo in _harbor_list(client, f"/api/v2.0/projects/{quote(name, safe='')}/repositories",
                                 {"page_size": 100}):
            full = repo.get("name") if isinstance(repo, dict) else None
            if isinstance(full, str) and is_repository(full) and full.startswith(name + "/"):
                good.append(full)
            else:
                bad.append(repr(full)[:80])
    return good, bad


def _harbor_list(client: RegistryClient, path: str, params: dict) -> Iterator[object]:
    pages = 0
    for resp in client.paginate(path, params=params, preemptive_basic=True):
        pages += 1
        if pages > MAX_PAGES:
            raise ProtocolError(f"{client.name}: {path} has more than {MAX_PAGES} pages; giving up")
        data = _json(read_bounded(resp, MAX_LIST_BODY, f"{client.name}: {path}"), f"{client.name}: {path}")
        if not isinstance(data, list):
            raise ProtocolError(f"{client.name}: {path} did not answer with a JSON list (is it a Harbor?)")
        yield from data


LISTING_REFUSED = (AuthFailed, Forbidden, NotFound)


def referrers(client: RegistryClient, repo: str, digest: str,
              artifact_types: tuple[str, ...] = ()) -> list[Descriptor] | None:
    """The referrers of ``digest`` through ``GET /v2/<name>/referrers/<digest>`` (distribution-spec v1.1
    "Listing Referrers"), filtered by ``artifact_types`` (server side when the registry says it applied
    the filter, ``OCI-Filters-Applied``, client side otherwise). None: the registry has no referrers API
    (it answered 404, which the spec forbids a registry that has one), so the tag schema applies."""
    out: list[Descriptor] = []
    params: dict | None = {"artifactType": artifact_types[0]} if len(artifact_types) == 1 else None
    url: str | None = f"{client.v2_prefix}/{repo}/referrers/{digest}"
    pages = 0
    while url:
        resp = client.request("GET", url, scope=repository_scope(repo), params=params, ok=(200, 404),
                              headers={"Accept": MEDIA_OCI_INDEX}, stream=True)
        if resp.status_code == 404:
            resp.close()
            return None
        applied = {f.strip() for f in resp.headers.get("OCI-Filters-Applied", "").split(",")}
        nxt = resp.links.get("next", {}).get("url")
        data = _json(read_bounded(resp, MAX_LIST_BODY, f"{client.name}: referrers of {repo}@{digest}"),
                     f"{client.name}: referrers of {repo}@{digest}")
        manifests = data.get("manifests") if isinstance(data, dict) else None
        if not isinstance(manifests, list):
            raise BadContent(f"{client.name}: the referrers list of {repo}@{digest} is not an image index")
        for i, item in enumerate(manifests):
            desc = descriptor(item, f"referrers of {digest}: manifests[{i}]")
            if artifact_types and "artifactType" not in applied and desc.artifact_type not in artifact_types:
                continue
            out.append(desc)
        pages += 1
        if nxt and pages < MAX_PAGES:
            # only relative (same-origin) links are followed: credentials stay with their origin
            url = nxt if nxt.startswith("/") and not nxt.startswith("//") else None
            params = None
        else:
            url = None
    return out


def blob_exists(client: RegistryClient, repo: str, digest: str) -> bool:
    return client.blob_exists(repo, digest, scope=repository_scope(repo, "pull,push"))


def mount_blob(client: RegistryClient, repo: str, digest: str, from_repo: str) -> bool:
    return client.mount_blob(repo, digest, from_repo)


def push_blob(client: RegistryClient, repo: str, digest: str, reader, size: int, chunk_size: int | None) -> None:  # noqa: ANN001
    client.push_blob(repo, digest, reader, size, chunk_size=chunk_size)


__all__ = ["RegistryError", "LISTING_REFUSED", "read_bounded", "head_manifest", "get_manifest", "put_manifest",
           "download_blob", "tags", "catalog", "harbor_repositories", "referrers", "blob_exists", "mount_blob",
           "push_blob"]
