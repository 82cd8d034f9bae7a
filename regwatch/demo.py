"""``regwatch demo``: a throwaway real registry with images and traffic, watched by ``serve``.

The story it tells, in order: a real Docker Distribution registry (htpasswd auth) starts,
with a pull-through cache of a public upstream beside it (Distribution 2.8 cannot send Basic
credentials upstream, so the upstream is anonymous, as Docker Hub's public images are);
images are pushed; users pull, a CI bot fails to log in, someone pulls the same upstream
image twice through the cache. Only then does regwatch collect, so every
number the demo prints about that traffic is what ``/metrics`` says, and the printed lines
are copied from one scrape of ``/metrics``. It ends with three commands to try against the
demo registry and a starter config for the user's own registry.

Everything except the starter config lives in one temporary directory (registry data,
htpasswd, logs, config, secrets) that is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shlex
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from regwatch.client import RegistryClient, RegistryError
from regwatch.collectors import build_jobs, factories
from regwatch.config import parse_config
from regwatch.images import build_image, build_index, push_image, push_index
from regwatch.localregistry import LocalRegistry, free_port
from regwatch.runner import WAKE_FLOOR, Runner, wait_until
from regwatch.server import MetricsServer

log = logging.getLogger("regwatch.demo")

DEMO_USER, MONITOR_USER, BOT_USER = "demo", "monitor", "ci-bot"
TARGET, CACHE_TARGET, VOLUME, AUTH_SOURCE = "demo", "demo-cache", "registry-data", "demo-registry"
PROBE_IMAGE = "team/api:1.2.0"
CACHE_IMAGE = ("library/busybox-demo", "1.36")  # on the public upstream, pulled through the cache
# Long enough that the numbers printed stay what /metrics says for a while after the printout.
INTERVAL = "15s"

# (repository, tags): small images built here, sharing a base layer as real images do.
SEED = [
    ("library/alpine-demo", ["3.19", "3.20"]),
    ("team/api", ["1.0.0", "1.1.0", "1.2.0"]),
    ("team/web", ["latest"]),
    ("team/worker", ["2024.11", "2024.12"]),
]
MULTIARCH = ("team/base", "multiarch")


@dataclass
class Traffic:
    """What the demo did, counted here, independently of regwatch."""

    pulls: int = 0
    failed_logins: int = 0
    anonymous: int = 0
    # The pull-through cache: (repository, digest) it already holds, and per object requests/hits/misses.
    cached: set[tuple[str, str]] = field(default_factory=set)
    cache: dict[str, dict[str, int]] = field(
        default_factory=lambda: {obj: {"requests": 0, "hits": 0, "misses": 0} for obj in ("blob", "manifest")})

    def cache_request(self, obj: str, repo: str, digest: str) -> None:
        counts = self.cache[obj]
        counts["requests"] += 1
        counts["hits" if (repo, digest) in self.cached else "misses"] += 1
        self.cached.add((repo, digest))


@dataclass
class Demo:
    workdir: Path
    registry: LocalRegistry
    upstream: LocalRegistry
    cache: LocalRegistry
    runner: Runner
    server: MetricsServer
    config_path: Path
    passwords: dict[str, str]
    images: int
    traffic: Traffic = field(default_factory=Traffic)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def metrics_url(self) -> str:
        host, port = self.server.address
        return f"http://{host}:{port}/metrics"

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:  # noqa: S310 - our own loopback server
            return resp.read().decode()


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
    push_index(client, *MULTIARCH, index)
    return count + 1


def pull(client: RegistryClient, repo: str, tag: str) -> list[tuple[str, str]]:
    """Pull as a runtime does: the manifest, then the config and every layer; returns (object, digest) fetched."""
    manifest = client.get_manifest(repo, tag)
    fetched = [("manifest", manifest.digest)]
    body = json.loads(manifest.body)
    if manifest.is_index:
        child = client.get_manifest(repo, body["manifests"][0]["digest"])
        fetched.append(("manifest", child.digest))
        body = json.loads(child.body)
    for desc in [body["config"], *body["layers"]]:
        with client.get_blob(repo, desc["digest"]) as resp:
            for _ in resp.iter_content(65536):
                pass
        fetched.append(("blob", desc["digest"]))
    return fetched


def make_traffic(demo: Demo, rng: random.Random, good_pulls: int, bad_logins: int, anonymous: int,
                 cache_pulls: int) -> None:
    url = demo.registry.url
    with RegistryClient(url, username=DEMO_USER, password=demo.passwords[DEMO_USER], retries=0) as client:
        for _ in range(good_pulls):
            repo, tags = rng.choice(SEED)
            pull(client, repo, rng.choice(tags))
            demo.traffic.pulls += 1
    for _ in range(bad_logins):
        with RegistryClient(url, username=BOT_USER, retries=0,
                            password="expired-token") as client:  # noqa: S106 - wrong on purpose: a failed login
            try:
                client.ping()
            except RegistryError:
                demo.traffic.failed_logins += 1
    for _ in range(anonymous):
        with RegistryClient(url, retries=0) as client:
            try:
                client.ping()
            except RegistryError:
                demo.traffic.anonymous += 1
    with RegistryClient(demo.cache.url, retries=0) as client:
        for _ in range(cache_pulls):
            for obj, digest in pull(client, *CACHE_IMAGE):
                demo.traffic.cache_request(obj, CACHE_IMAGE[0], digest)


def settle(demo: Demo, timeout: float = 15.0) -> None:
    """Wait until the registry's log and the cache's counters stop moving: the traffic is all on record.

    The cache stores a blob it fetched from the upstream after the client has it, and the
    registry writes its log lines as requests finish; a collection before that would count
    less than the demo did.
    """
    def snapshot() -> tuple[int, object]:
        with urllib.request.urlopen(f"{demo.cache.debug_url}/debug/vars", timeout=5) as resp:  # noqa: S310 - our own cache
            counters = json.loads(resp.read(1 << 20)).get("registry", {}).get("proxy")  # not memstats: they always move
        return demo.registry.log_path.stat().st_size, counters

    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = snapshot()
        if now == last:
            return
        last = now
        time.sleep(0.3)


def start(listen: str | None = None, echo: Callable[[str], None] = print) -> Demo:
    workdir = Path(tempfile.mkdtemp(prefix="regwatch-demo-"))
    try:
        return _start(workdir, listen, echo)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start(workdir: Path, listen: str | None, echo: Callable[[str], None]) -> Demo:
    rng = random.Random(42)  # noqa: S311 - a reproducible demo (traffic, seed data), nothing secret
    passwords = {DEMO_USER: secrets.token_urlsafe(12), MONITOR_USER: secrets.token_urlsafe(12)}
    echo(f"Starting a real Docker Distribution registry in {workdir} ...")
    started: list[LocalRegistry] = []
    try:
        registry = LocalRegistry(workdir / "registry", users=passwords)
        started.append(registry.start())
        upstream = LocalRegistry(workdir / "upstream", debug=False)
        started.append(upstream.start())
        cache = LocalRegistry(workdir / "cache", proxy={"remoteurl": upstream.url})
        started.append(cache.start())
        with RegistryClient(registry.url, username=DEMO_USER, password=passwords[DEMO_USER]) as client:
            images = seed(client, rng)
        with RegistryClient(upstream.url) as client:
            push_image(client, *CACHE_IMAGE, build_image([{"bin/busybox": rng.randbytes(40_000)}]))
        echo(f"Pushed {images} images to {registry.url} (user {DEMO_USER}). A pull-through cache at {cache.url} "
             f"mirrors a public upstream at {upstream.url}.")

        secret = workdir / "monitor-password"
        secret.write_text(passwords[MONITOR_USER])
        secret.chmod(0o600)
        config = _config(registry, cache, secret, workdir)
        config_path = workdir / "regwatch.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        runner = Runner(build_jobs(parse_config(config, str(config_path))))
        host, port = _listen(listen)
        server = MetricsServer(runner, host, port)
    except BaseException:
        for reg in started:
            reg.stop()
        raise
    demo = Demo(workdir, registry, upstream, cache, runner, server, config_path, passwords, images)
    try:
        # The traffic first, then the first collection: what the demo says it did is on record.
        make_traffic(demo, rng, good_pulls=10, bad_logins=3, anonymous=2, cache_pulls=2)
        settle(demo)
    except BaseException:
        shutdown(demo)
        raise
    server.start()
    runner.start()
    return demo


def _config(registry: LocalRegistry, cache: LocalRegistry, secret: Path, workdir: Path) -> dict:
    target: dict = {"name": TARGET, "kind": "distribution", "url": registry.url, "debug_url": registry.debug_url,
                    "username": MONITOR_USER, "password_file": str(secret), "interval": INTERVAL, "timeout": "5s"}
    mirror: dict = {"name": CACHE_TARGET, "kind": "distribution", "url": cache.url, "debug_url": cache.debug_url,
                    "interval": INTERVAL, "timeout": "5s"}
    config: dict = {"targets": [target, mirror],
                    "storage": [{"name": VOLUME, "path": str(registry.root), "interval": INTERVAL}]}
    available = factories()
    if "probe" in available:
        target["probes"] = [{"image": PROBE_IMAGE, "interval": INTERVAL}]
    if "authlogs" in available:
        config["auth_logs"] = [{"name": AUTH_SOURCE, "path": str(registry.log_path), "format": "distribution",
                                "start_at": "beginning", "positions_file": str(workdir / "positions.json"),
                                "interval": INTERVAL}]
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


def scrape_caught_up(demo: Demo, timeout: float = 10.0) -> str:
    """A scrape of /metrics once regwatch's own first collections are on record too.

    The catalog walk and the probe log in to the registry as well, and the log follower counts those
    lines a moment after the collections have ended: a scrape at ``ready`` can show fewer logins than
    the next one. Wait until the registry's log stops growing, then until the auth-log source has read
    all of it and two scrapes agree on it.
    """
    settle(demo)
    lag = f'regwatch_auth_log_lag_bytes{{source="{AUTH_SOURCE}"}}'
    deadline = time.monotonic() + timeout
    last = None
    while True:
        text = demo.scrape()
        lines = series_lines(text)
        auth = {k: v for k, v in lines.items() if k.startswith("regwatch_auth_")}
        if (auth == last and lines.get(lag, "0.0") == "0.0") or time.monotonic() > deadline:
            return text
        last = auth
        time.sleep(2 * WAKE_FLOOR)


# (heading, metric families) the printout shows, in order. Counters and gauges that did not move
# (zero) are left out, except the up/success gauges, whose zero is news.
HIGHLIGHTS = [
    ("The registry and its cache", ["regwatch_target_up", "regwatch_registry_repositories", "regwatch_registry_tags"]),
    ("Logins, from the registry's log (failures by reason)",
     ["regwatch_auth_requests_total", "regwatch_auth_failures_total"]),
    (f"A pull of {PROBE_IMAGE}, phase by phase", ["regwatch_probe_success", "regwatch_probe_phase_duration_seconds",
                                                   "regwatch_probe_pulled_bytes_total"]),
    ("Storage of the registry's volume", ["regwatch_storage_used_bytes", "regwatch_storage_capacity_bytes",
                                          "regwatch_storage_used_ratio"]),
    ("The pull-through cache", ["regwatch_proxy_cache_requests_total", "regwatch_proxy_cache_hits_total",
                                "regwatch_proxy_cache_misses_total"]),
]
_ALWAYS = {"regwatch_target_up", "regwatch_probe_success"}


def series_lines(exposition: str) -> dict[str, str]:
    """``name{labels}`` -> value text, for every sample line of a text exposition."""
    out = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = value
    return out


def highlights(exposition: str) -> list[tuple[str, list[str]]]:
    """(heading, sample lines copied from ``exposition``) for each topic of HIGHLIGHTS that has any."""
    lines = series_lines(exposition)
    out = []
    for heading, names in HIGHLIGHTS:
        picked = []
        for name in names:
            for series, value in lines.items():
                if series.partition("{")[0] == name and (name in _ALWAYS or float(value) != 0):
                    picked.append(f"{series} {value}")
        if picked:
            out.append((heading, picked))
    return out


def regwatch_command() -> str:
    """How to run this regwatch from a shell: ``regwatch`` if that is on PATH, else its full path.

    ``make demo`` runs ``.venv/bin/regwatch``, which is not on PATH.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "regwatch" and Path(argv0).is_file():
        script = os.path.abspath(argv0)
        on_path = shutil.which("regwatch")
        return "regwatch" if on_path and os.path.samefile(on_path, script) else shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m regwatch"


def try_commands(demo: Demo) -> list[tuple[str, str]]:
    """(what it shows, command): three commands that work against the running demo registry."""
    regwatch = regwatch_command()
    config = shlex.quote(str(demo.config_path))
    store = shlex.quote(str(demo.workdir / "drill-store"))
    alerts = shlex.quote(str(demo.workdir / "alerts"))
    return [
        ("pull an image once and time every phase",
         f"{regwatch} probe --config {config} {TARGET}/{PROBE_IMAGE}"),
        ("back up the team/* repositories and verify every blob of the backup",
         f"{regwatch} drill --config {config} --source {TARGET} --backup --verify --repo 'team/*' --store {store}"),
        ("write the alert rules (and their promtool tests) for these metrics",
         f"{regwatch} generate alerts --out {alerts}"),
    ]


STARTER_CONFIG = """\
# regwatch config for your own registry: a starting point written by `regwatch demo`.
# Edit the values marked CHANGE, then:
#   regwatch check-config {path}      # exit 0, or every problem with its key path
#   regwatch serve --config {path}    # /metrics on :9732
# Every key is described in docs/configuration.md.

listen: ":9732"

targets:
  - name: my-registry                   # becomes the `target` label; CHANGE to a short name
    kind: distribution                  # distribution | harbor | nexus | artifactory
    url: https://registry.example.com   # CHANGE: the registry's base URL (without /v2/)
    # debug_url: http://registry.example.com:5001   # Distribution's debug address: cache hits and misses
    # Credentials: a read-only account. Without these, regwatch tries REGWATCH_USERNAME /
    # REGWATCH_PASSWORD, then your docker config (docker login). Never a literal password here.
    # username: monitor
    # password_file: /run/secrets/registry-password   # or password_env: REGISTRY_PASSWORD
    interval: 60s
    timeout: 10s
    # probes:                           # time a real pull of one small image
    #   - image: library/alpine:3.20
    #     interval: 60s

# storage:                              # the volume the registry stores its data on (if it is local)
#   - name: registry-data
#     path: /var/lib/registry

# auth_logs:                            # failed logins, from the registry's log
#   - name: registry
#     path: /var/log/registry/registry.log
#     format: distribution              # distribution | harbor-core | nginx | auto
#     positions_file: /var/lib/regwatch/positions.json
"""


def write_starter_config(path: Path) -> bool:
    """Write the starter config to ``path``; False (and nothing written) if a file is already there."""
    try:
        with open(path, "x") as out:
            out.write(STARTER_CONFIG.format(path=shlex.quote(str(path))))
    except FileExistsError:
        return False
    return True


def run_traffic_loop(demo: Demo, rng: random.Random) -> None:
    """Keep pulling (and now and then failing a login) so rates move in the demo."""
    while not demo.stop.wait(5):
        try:
            make_traffic(demo, rng, good_pulls=2, bad_logins=rng.choice([0, 0, 1]), anonymous=1, cache_pulls=1)
        except RegistryError as exc:
            log.warning("demo traffic failed", extra={"err": str(exc)})


def shutdown(demo: Demo) -> None:
    demo.stop.set()
    demo.server.stop()
    demo.runner.stop(timeout=1.0)
    demo.cache.stop()
    demo.upstream.stop()
    demo.registry.stop()
    shutil.rmtree(demo.workdir, ignore_errors=True)


def report(demo: Demo, exposition: str, ready: bool, elapsed: float, starter: Path | None, wrote_starter: bool,
           echo: Callable[[str], None]) -> None:
    t = demo.traffic
    base = demo.metrics_url.removesuffix("/metrics")
    echo("")
    echo(f"regwatch is serving:   {demo.metrics_url}")
    echo(f"landing page:          {base}/")
    echo(f"registry under watch:  {demo.registry.url} (debug: {demo.registry.debug_url})")
    echo(f"cache under watch:     {demo.cache.url} (debug: {demo.cache.debug_url})")
    echo(f"config in use:         {demo.config_path}")
    echo("")
    echo("What happened before regwatch's first collection (counted by the demo):")
    echo(f"  {demo.images} images pushed in {len(SEED) + 1} repositories")
    echo(f"  {t.pulls} pulls by {DEMO_USER}, {t.anonymous} anonymous requests (challenged, not failures)")
    echo(f"  {t.failed_logins} failed logins by {BOT_USER} (wrong password)")
    blob, manifest = t.cache["blob"], t.cache["manifest"]
    echo(f"  {CACHE_IMAGE[0]}:{CACHE_IMAGE[1]} pulled twice through the cache: {manifest['requests']} manifest "
         f"requests ({manifest['misses']} from upstream), {blob['requests']} blob requests "
         f"({blob['misses']} from upstream)")
    if not ready:
        echo("warning: not every collector has finished its first run yet: " + ", ".join(demo.runner.pending()))
    echo("")
    echo(f"What /metrics says, {elapsed:.1f}s after start (the lines as served, signals that moved):")
    for heading, lines in highlights(exposition):
        echo(f"  {heading}:")
        for line in lines:
            echo(f"    {line}")
    echo("")
    echo("Try these against the demo registry while it runs (the config holds the monitor account's password file):")
    for what, command in try_commands(demo):
        echo(f"  # {what}")
        echo(f"  {command}")
    echo(f"Everything under {demo.workdir} is removed when the demo stops.")
    if starter is not None:
        echo("")
        path = os.path.abspath(starter)
        if wrote_starter:
            echo(f"A starter config for your own registry: {path}")
            echo(f"  edit it, then: {regwatch_command()} check-config {shlex.quote(path)}")
        else:
            echo(f"Kept your existing {path}; remove it to get a fresh starter config next time.")
    echo("")
    echo("Press Ctrl-C to stop; everything the demo made is removed.")


def run(listen: str | None, duration: float | None, echo: Callable[[str], None],
        starter: Path | None = Path("regwatch.yml"), traffic: bool = True) -> None:
    started = time.monotonic()
    demo = start(listen, echo)
    try:
        ready = wait_ready(demo)
        exposition = scrape_caught_up(demo)
        wrote = write_starter_config(starter) if starter is not None else False
        report(demo, exposition, ready, time.monotonic() - started, starter, wrote, echo)
        # Only now: traffic from here on is for the rates, after the printed numbers.
        if traffic:
            rng = random.Random(7)  # noqa: S311 - which demo image to pull next, nothing secret
            threading.Thread(target=run_traffic_loop, args=(demo, rng), daemon=True).start()
        if duration is None:
            threading.Event().wait()
        else:
            time.sleep(duration)
    except KeyboardInterrupt:
        echo("\nStopping ...")
    finally:
        shutdown(demo)
        echo(f"Removed {demo.workdir}.")
