from __future__ import annotations

import logging
import os
import queue
import signal
import sys

import click

from regwatch.collectors import build_jobs, factories
from regwatch.commands.common import LISTEN, load_or_exit
from regwatch.config import split_listen

log = logging.getLogger("regwatch.serve")


def _collector_options(fn):
    for name, factory in sorted(factories().items(), reverse=True):
        fn = click.option(
            f"--collector.{name}/--no-collector.{name}", f"collector_{name}", default=None,
            help=f"{factory.help} (default: {'enabled' if factory.default_enabled else 'disabled'})")(fn)
    return fn


@click.command("serve")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The regwatch config file (YAML).")
@click.option("--listen", type=LISTEN, help="PORT or HOST:PORT to serve on; overrides the config's listen.")
@click.option("--shard", "shard_spec", envvar="REGWATCH_SHARD", metavar="INDEX/COUNT",
              help="Collect only this replica's share of the targets, e.g. 0/3 (env REGWATCH_SHARD).")
@click.option("--shard-from-hostname", is_flag=True, envvar="REGWATCH_SHARD_FROM_HOSTNAME",
              help="Take the shard index from a StatefulSet pod name (regwatch-2 is shard 2); needs --shards.")
@click.option("--shards", type=click.IntRange(min=1), envvar="REGWATCH_SHARDS",
              help="Number of shards with --shard-from-hostname (env REGWATCH_SHARDS).")
@_collector_options
def serve(config_path: str, listen: str | None, shard_spec: str | None, shard_from_hostname: bool,
          shards: int | None, **switches: bool | None) -> None:
    """Run every configured collector in the background and serve /metrics, /healthz and /readyz."""
    from regwatch.runner import Runner
    from regwatch.server import MetricsServer

    shard = _shard(shard_spec, shard_from_hostname, shards)
    config = load_or_exit(config_path, watching=True)
    for warning in config.warnings:
        log.warning(str(warning))
    enabled = {key.removeprefix("collector_"): value for key, value in switches.items()}
    jobs = _shard_jobs(build_jobs(config, enabled), shard, config)
    host, port = split_listen(listen or config.listen)
    runner = Runner(jobs)
    try:
        server = MetricsServer(runner, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --listen") from None
    # The handler only puts the signal number on a SimpleQueue, whose put() is reentrant (safe in a
    # signal handler); the main thread does all the work. An Event set from a handler deadlocks when
    # the signal lands while the main thread holds that Event's lock (in wait() or clear()): serve
    # then ignored every later SIGHUP and SIGTERM while the HTTP thread kept serving the old runner.
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: signals.put(signum))
    server.start()
    runner.start()
    bound_host, bound_port = server.address
    log.info("serving", extra={"address": f"http://{bound_host}:{bound_port}/metrics", "jobs": len(jobs),
                               "shard": str(shard) if shard else "all", "max_connections": server.cap})
    while (signum := signals.get()) == signal.SIGHUP:
        runner = _reload(config_path, enabled, runner, server, shard)
    log.info("stopping", extra={"signal": signal.Signals(signum).name})
    server.stop(timeout=0.5)
    runner.stop(timeout=0.1)
    # Collections still in flight are abandoned, not awaited: their worker pools' threads would
    # otherwise hold the interpreter's exit until their requests time out. Their results are never
    # used, and every file regwatch writes is replaced atomically, so nothing is left half-written.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _shard(spec: str | None, from_hostname: bool, count: int | None):
    """The shard this replica is, from --shard or --shard-from-hostname; None collects everything."""
    from regwatch.sharding import Shard, ShardError

    try:
        if spec and from_hostname:
            raise click.UsageError("use either --shard or --shard-from-hostname, not both")
        if from_hostname:
            if count is None:
                raise click.UsageError("--shard-from-hostname needs --shards COUNT (or REGWATCH_SHARDS)")
            return Shard.from_hostname(count)
        return Shard.parse(spec) if spec else None
    except ShardError as exc:
        raise click.UsageError(str(exc)) from None


def _shard_jobs(jobs: list, shard, config) -> list:
    from regwatch.sharding import shard_jobs

    return shard_jobs(jobs, shard, (target.name for target in config.targets))


def _reload(config_path: str, enabled: dict, runner, server, shard=None):
    """SIGHUP: swap in a runner for the new config; on any problem keep the running one and say so."""
    from regwatch.config import ConfigError, load_config
    from regwatch.runner import Runner

    try:
        config = load_config(config_path, watching=True)
        new = Runner(_shard_jobs(build_jobs(config, enabled), shard, config))
    except ConfigError as exc:
        log.error("config reload failed; keeping the last good config", extra={"err": str(exc)})
        runner.reload_failed()
        return runner
    except Exception as exc:  # a reload must never stop a running serve
        log.exception("config reload failed; keeping the last good config",
                      extra={"err": f"{exc.__class__.__name__}: {exc}"})
        runner.reload_failed()
        return runner
    runner.stop(timeout=1.0)
    server.set_runner(new)
    new.start()
    log.info("config reloaded", extra={"jobs": len(new.jobs)})
    return new
