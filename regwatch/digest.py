"""Content digests as registries write them (``sha256:<hex>``)."""

from __future__ import annotations

import hashlib
import re

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    return bool(DIGEST_RE.match(value))


def hex_of(digest: str) -> str:
    """The hex part of ``sha256:<hex>``; raises ValueError for anything else."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    return digest.split(":", 1)[1]
