"""Reading a manifest or an index that came from outside (a registry or a store): every field the
drill follows is checked here, so a hostile or broken body becomes one ``BadContent`` (a per-image
failure in the report), never a KeyError, a TypeError or a walk into ``../``.

What is checked, per image-spec v1.1 (``manifest.md``, ``image-index.md``, ``descriptor.md``):

- the body is at most ``MAX_MANIFEST`` bytes (4 MiB, the cap registries and containerd use) and a
  JSON object;
- ``manifests`` (index) and ``layers`` (image) are lists of descriptor objects, ``config`` and
  ``subject`` descriptor objects;
- a descriptor has a ``digest`` of the distribution-spec grammar (sha256 only: the store holds
  ``blobs/sha256``), a non-negative integer ``size`` (required: a blob download stops at it) and, if
  present, a string ``mediaType`` and string ``artifactType``;
- indexes nest at most ``MAX_DEPTH`` levels (backup and verify share the limit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from regwatch.oci import is_digest

MAX_MANIFEST = 4 << 20
MAX_DEPTH = 4
MAX_DESCRIPTORS = 10_000  # per manifest: a 4 MiB index holds fewer descriptors than this anyway

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST})
MANIFEST_TYPES = frozenset({MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST})


class BadContent(ValueError):
    """A manifest, index, descriptor or store entry that cannot be followed safely; the message says
    which field and why, and becomes the image's failure in the report."""


@dataclass(frozen=True)
class Descriptor:
    digest: str
    size: int
    media_type: str = ""
    artifact_type: str = ""
    platform: str = ""  # "os/architecture[/variant]" of an index entry, "" otherwise
    annotations: dict = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Parsed:
    media_type: str
    children: tuple[Descriptor, ...]   # an index's manifests
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str
    annotations: dict

    @property
    def is_index(self) -> bool:
        return bool(self.children) or self.media_type in INDEX_TYPES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return ((self.config,) if self.config else ()) + self.layers

    def referrer_artifact_type(self) -> str:
        """The ``artifactType`` a referrers list gives this manifest (distribution-spec "Listing
        Referrers"): its own, else its config's media type (an image manifest), else none (an index)."""
        if self.artifact_type:
            return self.artifact_type
        return self.config.media_type if self.config and not self.is_index else ""


def _where(what: str, digest: str) -> str:
    return f"{what} of {digest}" if digest else what


def descriptor(value: object, what: str) -> Descriptor:
    """One descriptor object, checked; ``what`` names it in the error (``layers[2] of sha256:...``)."""
    if not isinstance(value, dict):
        raise BadContent(f"{what} is {type(value).__name__}, not a descriptor object")
    digest = value.get("digest")
    if not is_digest(digest):
        shown = repr(digest)[:80] if digest is not None else "missing"
        raise BadContent(f"{what}: digest {shown} is not a valid digest")
    if not digest.startswith("sha256:"):
        raise BadContent(f"{what}: digest {digest[:80]} uses an algorithm the store does not hold (sha256 only)")
    size = value.get("size")
    if isinstance(size, bool) or not isinstance(size, int):
        raise BadContent(f"{what} ({digest}) has no size (a descriptor must say how many bytes to fetch)"
                         if size is None else f"{what} ({digest}): size {size!r:.40} is not an integer")
    if size < 0:
        raise BadContent(f"{what} ({digest}): size {size} is negative")
    media_type = value.get("mediaType", "")
    artifact_type = value.get("artifactType", "")
    if not isinstance(media_type, str) or not isinstance(artifact_type, str):
        raise BadContent(f"{what} ({digest}): mediaType and artifactType must be strings")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in annotations.items()):
        raise BadContent(f"{what} ({digest}): annotations must map strings to strings")
    platform = ""
    if isinstance(value.get("platform"), dict):
        p = value["platform"]
        platform = "/".join(str(p[k])[:40] for k in ("os", "architecture", "variant") if isinstance(p.get(k), str)
                            and p.get(k))
    return Descriptor(digest, size, media_type, artifact_type, platform, annotations)


def _descriptor_list(value: object, what: str) -> tuple[Descriptor, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadContent(f"{what} is {type(value).__name__}, not a list of descriptors")
    if len(value) > MAX_DESCRIPTORS:
        raise BadContent(f"{what} lists {len(value)} descriptors, more than the {MAX_DESCRIPTORS} regwatch follows")
    return tuple(descriptor(item, f"{what}[{i}]") for i, item in enumerate(value))


def parse(body: bytes, media_type: str = "", digest: str = "") -> Parsed:
    """Parse and check a manifest or index body (``media_type``: what the registry or descriptor said)."""
    if len(body) > MAX_MANIFEST:
        raise BadContent(f"{_where('manifest', digest)} is {len(body)} bytes, over the {MAX_MANIFEST >> 20} MiB "
                         "manifest limit")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise BadContent(f"{_where('manifest', digest)} is not JSON") from None
    if not isinstance(data, dict):
        raise BadContent(f"{_where('manifest', digest)} is a JSON {type(data).__name__}, not an object")
    own_type = data.get("mediaType", "")
    if not isinstance(own_type, str):
        raise BadContent(f"{_where('manifest', digest)}: mediaType is not a string")
    kind = own_type or media_type
    where = _where("manifest", digest)
    children = _descriptor_list(data.get("manifests"), f"manifests of {digest or 'the index'}")
    if children or kind in INDEX_TYPES or "manifests" in data:
        if "layers" in data or "config" in data:
            raise BadContent(f"{where} has both manifests (an index) and layers/config (an image)")
        config, layers = None, ()
    else:
        config = descriptor(data["config"], f"config of {digest or 'the manifest'}") \
            if data.get("config") is not None else None
        layers = _descriptor_list(data.get("layers"), f"layers of {digest or 'the manifest'}")
    subject = descriptor(data["subject"], f"subject of {digest or 'the manifest'}") \
        if data.get("subject") is not None else None
    artifact_type = data.get("artifactType", "")
    annotations = data.get("annotations") or {}
    if not isinstance(artifact_type, str) or not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise BadContent(f"{where}: artifactType must be a string and annotations map strings to strings")
    return Parsed(kind, children, config, layers, subject, artifact_type, annotations)
