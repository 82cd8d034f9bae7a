"""Start a real Docker Distribution registry (Debian's ``docker-registry``) in a directory.

Used by ``regwatch demo``, by the tests' fixtures and by the benchmarks: one place that
knows how to write the registry's config, wait for it, and clean it up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

REGISTRY_BINARY = "docker-registry"


class RegistryStartError(RuntimeError):
    pass


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports: each socket stays bound until all are chosen, so the kernel
    cannot hand the same port out twice (it may, one call after another)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd entry (the only hash Distribution accepts), made by Apache's ``htpasswd``."""
    if shutil.which("htpasswd") is None:
        raise RegistryStartError("htpasswd not found: install Debian's apache2-utils (make installs it)")
    out = subprocess.run(  # noqa: S603 - Apache's htpasswd with arguments, no shell
        ["htpasswd", "-nbB", "-C", "4", username, password],  # noqa: S607 - by name: checked on PATH above
        check=True, capture_output=True, text=True).stdout
    return out.strip() + "\n"


class LocalRegistry:
    """A ``docker-registry serve`` process on a free loopback port.

    ``users`` turns on htpasswd auth; ``token`` (a dict with realm, service, issuer,
    rootcertbundle) turns on token auth; ``proxy`` (remoteurl, username, password) makes it a
    pull-through cache; ``tls`` is ``(certificate, key)`` paths. The registry's log (app and
    access log, both on its stdout) goes to ``log_path``.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        users: dict[str, str] | None = None,
        token: dict[str, str] | None = None,
        proxy: dict[str, str] | None = None,
        tls: tuple[str, str] | None = None,
        debug: bool = True,
        log_formatter: str = "text",
        extra: dict[str, Any] | None = None,
        host: str = "127.0.0.1",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root = self.workdir / "data"
        self.log_path = self.workdir / "registry.log"
        self.host = host
        # Two free_port() calls can return the same port: the registry would then bind its API and its
        # debug server to one port and die.
        self.port, self.debug_port = free_ports(2, host) if debug else (free_port(host), None)
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": log_formatter, "fields": {"service": "registry"}},
            "storage": {"filesystem": {"rootdirectory": str(self.root)}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": f"{host}:{self.port}", "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if debug:
            config["http"]["debug"] = {"addr": f"{host}:{self.debug_port}",
                                       "prometheus": {"enabled": True, "path": "/metrics"}}
        if tls:
            config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        if users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
            config["auth"] = {"htpasswd": {"realm": "regwatch", "path": str(htpasswd)}}
        if token:
            config["auth"] = {"token": dict(token)}
        if proxy:
            config["proxy"] = dict(proxy)
        for key, value in (extra or {}).items():
            config[key] = value
        self.config = config
        self.config_path = self.workdir / "config.yml"
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def debug_url(self) -> str | None:
        return f"http://{self.host}:{self.debug_port}" if self.debug_port else None

    def start(self, timeout: float = 15.0) -> LocalRegistry:
        if shutil.which(REGISTRY_BINARY) is None:
            raise RegistryStartError(f"{REGISTRY_BINARY} not found: install Debian's docker-registry package "
                                     "(`make test` and `make demo` install it)")
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OTEL_TRACES_EXPORTER": "none"}
        self.proc = subprocess.Popen(  # noqa: S603 - Debian's docker-registry, checked on PATH above; no shell
            [REGISTRY_BINARY, "serve", str(self.config_path)], stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        if not wait_for_port(self.host, self.port, timeout, self.proc):
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RegistryStartError(f"docker-registry did not start on {self.host}:{self.port}:\n{tail}")
        if self.debug_port and not wait_for_port(self.host, self.debug_port, timeout, self.proc):
            self.stop()
            raise RegistryStartError("docker-registry's debug server did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
