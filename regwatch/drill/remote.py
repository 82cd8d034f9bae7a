"""Every registry request the drill makes, in one place, on top of ``regwatch.client`` (which bounds
every body, binds credentials to the registry's origin, paces ``max_rps`` and the registry's own rate
limit, and honours ``Retry-After``).

What the drill adds: the answers are hostile, so a manifest is hashed by the caller and parsed by
``manifest.py``; referrers descriptors are checked; a blob download is read with the descriptor's
size as its limit; Harbor's project/repository listing for sources that refuse ``_catalog``.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from regwatch.client import (AuthFailed, Forbidden, NotFound, ProtocolError, RateLimited, RegistryClient,
                             RegistryError, iter_body, parse_json, repository_scope)
from regwatch.drill.manifest import MEDIA_OCI_MANIFEST, BadContent, Descriptor, descriptor
from regwatch.oci import is_repository

LISTING_REFUSED = (AuthFailed, Forbidden, NotFound)


def head_manifest(client: RegistryClient, repo: str, ref: str) -> str | None:
    """The digest the registry serves for ``ref`` (None: no such tag, or no valid Docker-Content-Digest)."""
    return client.head_manifest(repo, ref)


def get_manifest(client: RegistryClient, repo: str, ref: str) -> tuple[bytes, str, str]:
    """(body, media type, sha256 of the body) of a manifest, read with the client's 4 MiB cap."""
    m = client.get_manifest(repo, ref)
    return m.body, m.media_type, m.digest


def put_manifest(client: RegistryClient, repo: str, ref: str, body: bytes, media_type: str) -> str | None:
    """Push a manifest; returns the ``OCI-Subject`` the registry answered (distribution-spec "Pushing
    Manifests with Subject": a registry with the referrers API processed the subject), or None."""
    resp = client.request("PUT", f"{client.v2_prefix}/{repo}/manifests/{ref}",
                          scope=repository_scope(repo, "pull,push"), ok=(201,), data=body,
                          headers={"Content-Type": media_type or MEDIA_OCI_MANIFEST})
    return resp.headers.get("OCI-Subject")


def download_blob(client: RegistryClient, repo: str, desc: Descriptor, store) -> int:  # store: a Store
    """Stream one blob into the store, reading at most ``desc.size`` bytes (the client refuses more, and
    the store stops at the size too)."""
    resp = client.get_blob(repo, desc.digest, desc.size)
    return store.write_blob(desc.digest, desc.size, iter_body(resp, desc.size))


def tags(client: RegistryClient, repo: str) -> list[str]:
    """The repository's tags (the client drops names the distribution-spec does not allow)."""
    return client.tags(repo)


def catalog(client: RegistryClient) -> list[str]:
    return list(client.catalog())


def harbor_repositories(client: RegistryClient) -> tuple[list[str], list[str]]:
    """Every repository the account can see through Harbor's REST API (api/v2.0 swagger: listProjects,
    then listRepositories per project; ``Repository.name`` is the full ``project/repo``). Returns
    (repositories, refused names)."""
    good: list[str] = []
    bad: list[str] = []
    for project in _harbor_list(client, "/api/v2.0/projects", {"page_size": 100, "with_detail": "false"}):
        name = project.get("name") if isinstance(project, dict) else None
        if not isinstance(name, str) or not is_repository(name) or "/" in name:
            bad.append(repr(name)[:80])
            continue
        for repo in _harbor_list(client, f"/api/v2.0/projects/{quote(name, safe='')}/repositories",
                                 {"page_size": 100}):
            full = repo.get("name") if isinstance(repo, dict) else None
            if isinstance(full, str) and is_repository(full) and full.startswith(name + "/"):
                good.append(full)
            else:
                bad.append(repr(full)[:80])
    return good, bad


def _harbor_list(client: RegistryClient, path: str, params: dict) -> Iterator[object]:
    for resp in client.paginate(path, params=params, preemptive_basic=True):
        data = parse_json(resp.content, f"target {client.name}: {path}", "is it a Harbor?")
        if not isinstance(data, list):
            raise ProtocolError(f"target {client.name}: {path} did not answer with a JSON list (is it a Harbor?)")
        yield from data


def referrers(client: RegistryClient, repo: str, digest: str,
              artifact_types: tuple[str, ...] = ()) -> list[Descriptor] | None:
    """The referrers of ``digest`` (distribution-spec v1.1 "Listing Referrers"), each descriptor checked,
    filtered by ``artifact_types`` (asked of the registry when there is one, and applied here too: a
    registry may ignore the filter). None: the registry has no referrers API, so the tag schema applies."""
    found = client.referrers(repo, digest, artifact_types[0] if len(artifact_types) == 1 else None)
    if found is None:
        return None
    out = []
    for i, item in enumerate(found):
        desc = descriptor(item, f"referrers of {digest}: manifests[{i}]")
        if not artifact_types or desc.artifact_type in artifact_types:
            out.append(desc)
    return out


def blob_exists(client: RegistryClient, repo: str, digest: str) -> bool:
    return client.blob_exists(repo, digest, scope=repository_scope(repo, "pull,push"))


def mount_blob(client: RegistryClient, repo: str, digest: str, from_repo: str) -> bool:
    return client.mount_blob(repo, digest, from_repo)


def push_blob(client: RegistryClient, repo: str, digest: str, reader, size: int, chunk_size: int | None) -> None:
    client.push_blob(repo, digest, reader, size, chunk_size=chunk_size)


__all__ = ["BadContent", "LISTING_REFUSED", "RateLimited", "RegistryError", "blob_exists", "catalog",
           "download_blob", "get_manifest", "harbor_repositories", "head_manifest", "mount_blob", "push_blob",
           "put_manifest", "referrers", "tags"]
