"""Names, tags and digests as the OCI distribution-spec defines them (spec.md, "Pulling manifests").

Every name, tag or digest that comes from outside (a registry's catalog or tags list, a manifest,
a store's index.json, a user) is checked here before it reaches a URL or a path, so
``../../v2/other`` can never become a request or a file.
"""

from __future__ import annotations

import re

# distribution-spec: <name> components separated by "/", each [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# image-spec descriptor.md: the registered algorithms and their encodings.
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
# Registries refuse longer names (Distribution: 255 for the whole name).
MAX_REPOSITORY = 255


class BadName(ValueError):
    """A repository name, tag or digest that the distribution-spec grammar does not allow."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_repository(name: object) -> str:
    if not isinstance(name, str) or len(name) > MAX_REPOSITORY or not REPOSITORY_RE.fullmatch(name):
        raise BadName(f"{_show(name)} is not a valid repository name (distribution-spec: lower-case "
                      "letters and digits, separated by . _ __ - or /)")
    return name


def check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise BadName(f"{_show(tag)} is not a valid tag (distribution-spec: up to 128 letters, digits, _ . -, "
                      "not starting with . or -)")
    return tag


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise BadName(f"{_show(digest)} is not a valid digest (sha256: and 64 hex digits, or sha512: and 128)")
    return digest


def check_reference(reference: object) -> str:
    """A manifest reference: a tag or a digest."""
    if isinstance(reference, str) and ":" in reference:
        return check_digest(reference)
    return check_tag(reference)


def is_repository(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_REPOSITORY and bool(REPOSITORY_RE.fullmatch(name))


def is_tag(tag: object) -> bool:
    return isinstance(tag, str) and bool(TAG_RE.fullmatch(tag))


def is_digest(digest: object) -> bool:
    return isinstance(digest, str) and bool(DIGEST_RE.fullmatch(digest))


def split_image(image: object) -> tuple[str, str]:
    """``repo:tag`` / ``repo@digest`` / ``repo`` -> (repository, tag or digest; ``latest`` when none is given),
    each checked against the grammar; raises BadName."""
    if not isinstance(image, str) or not image:
        raise BadName("an image is a repository, then :tag or @digest, e.g. library/alpine:3.20")
    if "@" in image:
        repository, _, reference = image.partition("@")
        check_digest(reference)
    else:
        head, _, last = image.rpartition("/")
        name, sep, tag = last.partition(":")
        repository, reference = (f"{head}/{name}" if head else name), (tag if sep else "latest")
        check_tag(reference)
    check_repository(repository)
    return repository, reference
