"""Upstream pull-rate-limit headroom (``kind: upstream``): manifest HEADs only, through Docker Hub's token auth.

The upstream is ``tests/fakes/dockerhub.py``: Docker Hub's documented pull limit (a manifest GET counts, a
HEAD does not; ``ratelimit-limit``/``ratelimit-remaining`` with ``;w=`` and ``docker-ratelimit-source`` on
manifest answers; 429 when nothing is left) in front of a real docker-registry 2.8.2 whose token realm is a
token server on another port, as auth.docker.io is for registry-1.docker.io. The test's own pulls spend the
limit, directly and through a real 2.8.2 pull-through cache; regwatch's figures must equal the fake's state,
and the fake must have seen nothing but HEADs from regwatch.
"""

from __future__ import annotations

from regwatch.budget import Budget
from regwatch.client import RegistryClient
from tests.fakes.hostile import HostileServer, Reply


def test_a_client_that_does_not_pace_on_the_rate_limit_never_waits_for_it():
    """A manifest HEAD does not spend Docker Hub's limit, so the client that reads the limit must not spread its
    requests over what is left of it (5 of 100: one request per 72 minutes), or it stops reading the limit just
    when it matters."""
    low = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "5;w=21600", "Docker-Content-Digest":
           "sha256:" + "a" * 64, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    server = HostileServer({("HEAD", "/v2/library/alpine/manifests/latest"): Reply(200, low)}).start()
    try:
        for pace, expected in ((False, []), (True, [21600 / 5])):
            waits: list[float] = []
            budget = Budget(timeout=5, sleep=waits.append)
            with RegistryClient(server.url, name="hub", budget=budget, pace_ratelimit=pace) as client:
                for _ in range(3):
                    client.head_manifest("library/alpine", "latest")
            assert [round(w) for w in waits] == [round(e) for e in expected], f"pace_ratelimit={pace}"
    finally:
        server.stop()
