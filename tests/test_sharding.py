"""Scale-out: N replicas of ``regwatch serve`` split the targets so each is collected exactly once.

The end-to-end tests read which targets each ``regwatch serve --shard i/N`` process really
collected from its /metrics (``regwatch_target_up`` series), against one real registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from regwatch.sharding import Shard, ShardError, assign, shard_of, shard_jobs
from tests.conftest import REPO_ROOT, regwatch_cmd

TARGETS = [f"registry-{i:02d}" for i in range(30)]


def collected_targets(metrics_text: str) -> set[str]:
    return {sample.labels["target"]
            for family in text_string_to_metric_families(metrics_text) if family.name == "regwatch_target_up"
            for sample in family.samples}


@pytest.fixture
def thirty_targets_config(registry, write_config, tmp_path):
    """30 targets (all on one real registry, each under its own name) and a local volume."""
    secret = tmp_path / "password"
    secret.write_text(registry.password)
    return write_config({
        "targets": [{"name": name, "kind": "distribution", "url": registry.url, "username": registry.username,
                     "password_file": str(secret), "interval": "60s"} for name in TARGETS],
        "storage": [{"name": "data", "path": str(tmp_path)}],
    })


def start_shards(serve, config, specs: list[str]) -> list[str]:
    """Start one serve per shard spec at once; return each one's /metrics once all are ready."""
    procs = [serve(config, "--shard", spec) for spec in specs]
    with ThreadPoolExecutor(len(procs)) as pool:
        list(pool.map(lambda p: p.wait_ready(60), procs))
    return [p.metrics() for p in procs]


@pytest.mark.slow
def test_three_shards_collect_every_target_exactly_once_and_a_fourth_moves_about_a_quarter(
        serve, thirty_targets_config):
    three = [collected_targets(text) for text in start_shards(serve, thirty_targets_config, ["0/3", "1/3", "2/3"])]
    four = [collected_targets(text) for text in
            start_shards(serve, thirty_targets_config, ["0/4", "1/4", "2/4", "3/4"])]

    for shards in (three, four):
        assert sorted(t for shard in shards for t in shard) == sorted(TARGETS), "each target exactly once"
        assert all(shards), "no shard is idle with 30 targets"
    moved = {t for i in range(3) for t in three[i] - four[i]}
    # Rendezvous hashing: a target moves only if the new shard wins it, so every mover lands on shard 3 ...
    assert moved == four[3]
    # ... and about a quarter move (7.5 expected; a modulo hash would move about three quarters).
    assert 3 <= len(moved) <= 12, sorted(moved)


@pytest.mark.slow
def test_node_local_sources_run_on_shard_zero_only(serve, thirty_targets_config):
    texts = start_shards(serve, thirty_targets_config, ["0/2", "1/2"])
    has_volume = ['regwatch_storage_used_bytes{volume="data"}' in text for text in texts]
    assert has_volume == [True, False]


def test_shard_from_statefulset_hostname_is_the_pod_ordinal():
    """In pod ``regwatch-2`` (Kubernetes sets HOSTNAME to the pod name) ``--shard-from-hostname --shards 3`` is 2/3."""
    code = "from regwatch.commands.serve import _shard; print(_shard(None, True, 3))"
    out = subprocess.run(python_cmd(code), capture_output=True, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "HOSTNAME": "regwatch-2"}, check=True)
    assert out.stdout.strip() == "2/3"


def python_cmd(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/3"], "out of range"),
    (["--shard", "one of three"], "INDEX/COUNT"),
    (["--shard-from-hostname"], "needs --shards"),
    (["--shard", "0/2", "--shard-from-hostname", "--shards", "2"], "not both"),
])
def test_bad_shard_options_exit_2_with_the_fix(args, message, thirty_targets_config):
    out = subprocess.run(regwatch_cmd("serve", "--config", str(thirty_targets_config), *args),
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
                         env={**os.environ, "HOSTNAME": "not-a-statefulset-pod"})
    assert out.returncode == 2
    assert message in out.stderr


def test_hostname_without_ordinal_is_refused_with_the_alternative():
    with pytest.raises(ShardError, match="--shard INDEX/COUNT"):
        Shard.from_hostname(3, "regwatch-abcde")


# --------------------------------------------------------------------------- the pure assignment


@settings(max_examples=50, deadline=None)
@given(names=st.sets(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20),
                     min_size=1, max_size=60),
       count=st.integers(1, 12))
def test_every_target_has_exactly_one_shard(names, count):
    shards = assign(sorted(names), count)
    assert sorted(t for ts in shards.values() for t in ts) == sorted(names)
    assert set(shards) == set(range(count))
    assert all(Shard(i, count).owns(t) == (t in shards[i]) for i in range(count) for t in names)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9])
def test_adding_a_shard_moves_about_one_over_n_and_only_onto_the_new_shard(count):
    names = [f"harbor-{i}.example.com" for i in range(4000)]
    before = {t: shard_of(t, count) for t in names}
    after = {t: shard_of(t, count + 1) for t in names}
    moved = [t for t in names if before[t] != after[t]]
    assert all(after[t] == count for t in moved)
    expected = len(names) / (count + 1)
    assert abs(len(moved) - expected) < 0.15 * expected


def test_load_is_spread_evenly():
    names = [f"t{i}" for i in range(6000)]
    sizes = [len(v) for v in assign(names, 6).values()]
    assert max(sizes) < 1.1 * 1000 and min(sizes) > 0.9 * 1000


def test_assignment_is_stable_across_processes():
    """Python's hash() is salted per process; the shard must not be."""
    code = "from regwatch.sharding import shard_of; print([shard_of(f'r{i}', 7) for i in range(50)])"
    runs = {subprocess.run(python_cmd(code), capture_output=True, text=True, cwd=REPO_ROOT, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(runs) == 1
    assert runs.pop().strip() == str([shard_of(f"r{i}", 7) for i in range(50)])


class _Job:
    def __init__(self, target: str):
        self.target = target


def test_shard_jobs_keeps_target_jobs_by_owner_and_other_jobs_on_shard_zero():
    jobs = [_Job(name) for name in TARGETS] + [_Job("registry-data-volume"), _Job("auth-log")]
    per_shard = [shard_jobs(jobs, Shard(i, 3), TARGETS) for i in range(3)]
    assert [j.target for j in per_shard[0] if j.target not in TARGETS] == ["registry-data-volume", "auth-log"]
    assert all(j.target in TARGETS for shard in per_shard[1:] for j in shard)
    assert sum(len(s) for s in per_shard) == len(jobs)
    assert shard_jobs(jobs, None, TARGETS) == jobs


@pytest.mark.parametrize("spec", ["0/0", "-1/3", "2/2", "a/b", ""])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ShardError):
        Shard.parse(spec)
