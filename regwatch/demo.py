"""``regwatch demo``: a throwaway real registry with images and traffic, watched by ``serve``.

Everything lives in one temporary directory (registry data, htpasswd, logs, config,
secrets) that is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import logging
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from regwatch.client import RegistryClient, RegistryError
from regwatch.collectors import build_jobs, factories
from regwatch.config import parse_config
from regwatch.images import build_image, build_index, push_image, push_index
from regwatch.localregistry import LocalRegistry, free_port
from regwatch.runner import Runner, wait_until
from regwatch.server import MetricsServer

log = logging.getLogger("regwatch.demo")

DEMO_USER, MONITOR_USER = "demo", "monitor"

# (repository, tags): small images built here, sharing a base layer as real images do.
SEED = [
    ("library/alpine-demo", ["3.19", "3.20"]),
    ("team/api", ["1.0.0", "1.1.0", "1.2.0"]),
    ("team/web", ["latest"]),
    ("team/worker", ["2024.11", "2024.12"]),
]


@dataclass
class Demo:
    workdir: Path
    registry: LocalRegistry
    runner: Runner
    server: MetricsServer
    config_path: Path
    passwords: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    pulls: int = 0
    failed_logins: int = 0

    @property
    def metrics_url(self) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}/metrics"


def seed(client: RegistryClient, rng: random.Random) -> int:
    base = {"etc/os-release": b'NAME="regwatch demo base"\n', "bin/sh": rng.randbytes(20_000)}
    count = 0
    for repo, tags in SEED:
        for tag in tags:
            image = build_image([base, {f"app/{repo}/{tag}": rng.randbytes(50_000)}],
                                labels={"org.opencontainers.image.version": tag})
            push_image(client, repo, tag, image)
            count += 1
    index = build_index([build_image([base, {"arch": b"amd64"}]),
                         build_image([base, {"arch": b"arm64"}], architecture="arm64")])
    push_index(client, "team/base", "multiarch", index)
    return count + 1


def pull(client: RegistryClient, repo: str, tag: str) -> None:
    """Pull as a runtime does: the manifest, then the config and every layer."""
    import json

    manifest = client.get_manifest(repo, tag)
    body = json.loads(manifest.body)
    if manifest.is_index:
        body = json.loads(client.get_manifest(repo, body["manifests"][0]["digest"]).body)
    for desc in [body["config"], *body["layers"]]:
        with client.get_blob(repo, desc["digest"]) as resp:
            for _ in resp.iter_content(65536):
                pass


def make_traffic(demo: Demo, rng: random.Random, good_pulls: int, bad_logins: int, anonymous: int) -> None:
    url = demo.registry.url
    with RegistryClient(url, username=DEMO_USER, password=demo.passwords[DEMO_USER], retries=0) as client:
        for _ in range(good_pulls):
            repo, tags = rng.choice(SEED)
            pull(client, repo, rng.choice(tags))
            demo.pulls += 1
    for _ in range(bad_logins):
        with RegistryClient(url, username="ci-bot", password="expired-token", retries=0) as client:
            try:
                client.ping()
            except RegistryError:
                demo.failed_logins += 1
    for _ in range(anonymous):
        with RegistryClient(url, retries=0) as client:
            try:
                client.ping()
            except RegistryError:
                pass


def start(listen: str | None = None, echo: Callable[[str], None] = print) -> Demo:
    workdir = Path(tempfile.mkdtemp(prefix="regwatch-demo-"))
    try:
        return _start(workdir, listen, echo)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start(workdir: Path, listen: str | None, echo: Callable[[str], None]) -> Demo:
    rng = random.Random(42)
    passwords = {DEMO_USER: secrets.token_urlsafe(12), MONITOR_USER: secrets.token_urlsafe(12)}
    echo(f"Starting a real Docker Distribution registry in {workdir} ...")
    registry = LocalRegistry(workdir / "registry", users=passwords).start()
    try:
        with RegistryClient(registry.url, username=DEMO_USER, password=passwords[DEMO_USER]) as client:
            images = seed(client, rng)
        echo(f"Pushed {images} images to {registry.url} (user {DEMO_USER}).")

        secret = workdir / "monitor-password"
        secret.write_text(passwords[MONITOR_USER])
        secret.chmod(0o600)
        config = _config(registry, secret, workdir)
        config_path = workdir / "regwatch.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        parsed = parse_config(config, str(config_path))
        runner = Runner(build_jobs(parsed))
        host, port = _listen(listen)
        server = MetricsServer(runner, host, port)
    except BaseException:
        registry.stop()
        raise
    demo = Demo(workdir, registry, runner, server, config_path, passwords)
    server.start()
    runner.start()
    make_traffic(demo, rng, good_pulls=10, bad_logins=3, anonymous=2)
    return demo


def _config(registry: LocalRegistry, secret: Path, workdir: Path) -> dict:
    target: dict = {"name": "demo", "kind": "distribution", "url": registry.url, "debug_url": registry.debug_url,
                    "username": MONITOR_USER, "password_file": str(secret), "interval": "5s", "timeout": "5s"}
    config: dict = {"targets": [target], "storage": [{"name": "registry-data", "path": str(registry.root),
                                                      "interval": "5s"}]}
    available = factories()
    if "probes" in available:
        target["probes"] = [{"image": "team/api:1.2.0", "interval": "10s"}]
    if "authlogs" in available:
        config["auth_logs"] = [{"name": "demo-registry", "path": str(registry.log_path), "format": "distribution",
                                "start_at": "beginning", "positions_file": str(workdir / "positions.json"),
                                "interval": "5s"}]
    return config


def _listen(listen: str | None) -> tuple[str, int]:
    if listen:
        host, _, port = listen.rpartition(":")
        return host or "127.0.0.1", int(port)
    try:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 9732))
        return "127.0.0.1", 9732
    except OSError:
        return "127.0.0.1", free_port()


def wait_ready(demo: Demo, timeout: float = 30) -> bool:
    return wait_until(lambda: demo.runner.ready, timeout)


def highlights(demo: Demo) -> list[tuple[str, str]]:
    """The lines of /metrics a newcomer should look at first."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = ("regwatch_target_up", "regwatch_registry_repositories", "regwatch_registry_tags",
              "regwatch_registry_healthy", "regwatch_storage_used_ratio", "regwatch_auth_requests_total",
              "regwatch_auth_failures_total", "regwatch_probe_success", "regwatch_probe_phase_duration_seconds")
    rows = []
    for family in text_string_to_metric_families(demo.runner.exposition().decode()):
        for sample in family.samples:
            if sample.name in wanted:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                rows.append((f"{sample.name}{{{labels}}}", f"{sample.value:g}"))
    return rows


def run_traffic_loop(demo: Demo, rng: random.Random) -> None:
    """Keep pulling (and now and then failing a login) so rates move in the demo."""
    while not demo.stop.wait(5):
        try:
            make_traffic(demo, rng, good_pulls=2, bad_logins=rng.choice([0, 0, 1]), anonymous=1)
        except RegistryError as exc:
            log.warning("demo traffic failed", extra={"err": str(exc)})


def shutdown(demo: Demo) -> None:
    demo.stop.set()
    demo.server.stop()
    demo.runner.stop(timeout=1.0)
    demo.registry.stop()
    shutil.rmtree(demo.workdir, ignore_errors=True)


def run(listen: str | None, duration: float | None, echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    demo = start(listen, echo)
    try:
        traffic = threading.Thread(target=run_traffic_loop, args=(demo, random.Random(7)), daemon=True)
        traffic.start()
        ready = wait_ready(demo)
        echo("")
        echo(f"regwatch is serving:   {demo.metrics_url}")
        echo(f"landing page:          {demo.metrics_url.removesuffix('/metrics')}/")
        echo(f"registry under watch:  {demo.registry.url} (debug: {demo.registry.debug_url})")
        echo(f"config in use:         {demo.config_path}")
        echo(f"traffic so far:        {demo.pulls} pulls, {demo.failed_logins} failed logins")
        if not ready:
            echo("warning: not every collector has finished its first run yet: " + ", ".join(demo.runner.pending()))
        echo(f"\nMetrics from the real registry {time.monotonic() - started:.1f}s after start. What to look at:")
        for name, value in highlights(demo):
            echo(f"  {name} {value}")
        echo("\nTry: curl -s " + demo.metrics_url + " | grep ^regwatch_")
        echo("Press Ctrl-C to stop; everything the demo made is removed.")
        if duration is None:
            threading.Event().wait()
        else:
            time.sleep(duration)
    except KeyboardInterrupt:
        echo("\nStopping ...")
    finally:
        shutdown(demo)
        echo(f"Removed {demo.workdir}.")
