"""Image references as people type them: ``127.0.0.1:5000/library/alpine:3.20``,
``https://registry.example.com/team/app@sha256:...``, ``alpine`` (Docker Hub)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from regwatch.oci import BadName
from regwatch.oci import split_image as oci_split_image

DOCKER_HUB = "https://registry-1.docker.io"
class BadReference(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    base_url: str  # scheme://host[:port], no trailing slash
    repository: str
    reference: str  # tag or digest

    @property
    def image(self) -> str:
        """``repository:tag`` or ``repository@digest``, as a probe's ``image`` is configured."""
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.repository}{sep}{self.reference}"


def split_image(image: str) -> tuple[str, str]:
    """``repo:tag`` / ``repo@digest`` / ``repo`` -> (repository, tag or digest); ``latest`` when none is given."""
    try:
        return oci_split_image(image)
    except BadName as exc:
        raise BadReference(str(exc)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_reference(text: str) -> ImageRef:
    """Parse what a user typed. Without a scheme, a loopback registry is plain http (as Docker's default
    insecure-registries list has 127.0.0.0/8) and any other is https."""
    text = text.strip()
    scheme = None
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            scheme, text = prefix[:-3], text[len(prefix):]
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host = first
        if scheme is None:
            scheme = "http" if _is_loopback(host.rsplit(":", 1)[0] if host.count(":") == 1 else host) else "https"
        base = f"{scheme}://{host}"
    elif scheme is not None:
        raise BadReference(f"{scheme}://{text} has no repository after the host; write e.g. "
                           f"{scheme}://{first or 'HOST:PORT'}/library/alpine:3.20")
    else:
        base, rest = DOCKER_HUB, (text if "/" in text else f"library/{text}")
    if not rest:
        raise BadReference("the reference has no repository; write e.g. 127.0.0.1:5000/library/alpine:3.20")
    repo, reference = split_image(rest)
    return ImageRef(base, repo, reference)
