"""The ports a LocalRegistry (the demo's and the tests' real docker-registry) is given.

The kernel may hand a port that was just released to the next bind(port 0): two free_port() calls
one after the other returned the same port twice in 20,000 tries here, and a registry whose API and
debug server were given one port died with "bind: address already in use". The fake socket below is
the kernel at its least helpful: bind(0) always gives the lowest port nobody holds.
"""

from __future__ import annotations

import socket

from regwatch import localregistry
from regwatch.localregistry import LocalRegistry, free_ports


class LowestFreePort:
    held: set[int] = set()

    def __init__(self, *args):
        self.port = None

    def bind(self, address):
        self.port = min(set(range(40000, 40010)) - self.held)
        self.held.add(self.port)

    def getsockname(self):
        return ("127.0.0.1", self.port)

    def close(self):
        self.held.discard(self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_a_registry_never_gets_one_port_for_its_api_and_its_debug_server(monkeypatch, tmp_path):
    monkeypatch.setattr(localregistry.socket, "socket", LowestFreePort)
    registry = LocalRegistry(tmp_path)
    assert registry.port != registry.debug_port
    assert registry.config["http"]["addr"] != registry.config["http"]["debug"]["addr"]


def test_free_ports_are_distinct_and_free():
    ports = free_ports(8)
    assert len(set(ports)) == 8
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
