"""The chart's wiring, run outside Kubernetes: the rendered pod's command, config and mounts against a real registry.

The test plays kubelet: it renders the chart with real Helm, lays out every volume the serve
container mounts (the ConfigMap's config.yaml, the referenced Secret's keys, the storage volume)
under a temp dir at the same paths, and runs the image's ENTRYPOINT (parsed from the Dockerfile)
with the container's args and env. Paths are the only thing rewritten, from ``/x`` to
``<tmp>/x``. If the chart pointed password_file at the wrong mount, or the args at the wrong
config, the registry would not be collected and the assertions below would fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from regwatch.images import build_image, push_image
from regwatch.localregistry import free_port, wait_for_port
from tests.conftest import REPO_ROOT
from tests.dockerfile import image_entrypoint
from tests.fakes.kubeapi import render

# Every render is a Helm install against a fake Kubernetes API server the test starts.
pytestmark = pytest.mark.servers

CHART = REPO_ROOT / "helm" / "regwatch"


class Pod:
    """A rendered pod template run as a local process, its volumes laid out under ``root``."""

    def __init__(self, docs: list[dict], workload: dict, root: Path, secrets: dict[str, dict[str, str]],
                 claims: dict[str, Path], pod_name: str):
        self.spec = workload["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        self.root = root
        config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        self.mounts = {m["mountPath"]: root / m["mountPath"].lstrip("/") for m in self.container["volumeMounts"]}
        for mount in self.container["volumeMounts"]:
            volume, target = volumes[mount["name"]], self.mounts[mount["mountPath"]]
            target.parent.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                data = config_maps[volume["configMap"]["name"]]
                if "subPath" in mount:
                    target.write_text(self.rewrite(data[mount["subPath"]]))
                else:
                    target.mkdir(exist_ok=True)
                    for key, value in data.items():
                        (target / key).write_text(self.rewrite(value))
            elif "secret" in volume:
                target.mkdir(exist_ok=True)
                for key, value in secrets[volume["secret"]["secretName"]].items():
                    (target / key).write_text(value)
            elif "persistentVolumeClaim" in volume:
                target.symlink_to(claims[volume["persistentVolumeClaim"]["claimName"]])
            elif "emptyDir" in volume:
                target.mkdir(exist_ok=True)
            else:
                raise AssertionError(f"the test cannot lay out volume {volume}")
        command = self.container.get("command") or image_entrypoint()
        entry = Path(sys.executable).parent / command[0]
        self.argv = [str(entry), *command[1:], *[self.rewrite(a) for a in self.container.get("args", [])]]
        self.env = {**os.environ, "HOSTNAME": pod_name,
                    **{e["name"]: e["value"] for e in self.container.get("env", []) if "value" in e}}
        self.port = self.container["ports"][0]["containerPort"]
        self.proc: subprocess.Popen | None = None

    def rewrite(self, text: str) -> str:
        """Every absolute path under a mount point, moved under ``root`` (one pass, longest mount first)."""
        alternatives = "|".join(re.escape(m) for m in sorted(self.mounts, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=/|$|[\s\"',])", re.M)
        return pattern.sub(lambda match: str(self.mounts[match.group(1)]), text)

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        port = next(p["containerPort"] for p in self.container["ports"] if p["name"] == get["port"]) \
            if isinstance(get["port"], str) else get["port"]
        return f"http://127.0.0.1:{port}{get['path']}"

    def start(self) -> Pod:
        self.log = open(self.root / "pod.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.root)
        assert wait_for_port("127.0.0.1", self.port, 20, self.proc), (self.root / "pod.log").read_text()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if requests.get(self.probe_url("readinessProbe"), timeout=5).status_code == 200:
                return
            time.sleep(0.1)
        raise AssertionError((self.root / "pod.log").read_text())

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


@pytest.fixture
def pods():
    started: list[Pod] = []

    def make(*args, **kwargs) -> Pod:
        pod = Pod(*args, **kwargs)
        started.append(pod)
        return pod

    yield make
    for pod in started:
        pod.stop()


def workload(docs: list[dict], kind: str) -> dict:
    return next(d for d in docs if d["kind"] == kind)


def test_rendered_deployment_collects_a_real_registry_with_the_mounted_secret(registry, registry_client, pods,
                                                                                tmp_path):
    image = build_image([{"hello.txt": b"hello"}])
    repos = ["library/alpine", "team/app"]
    for repo in repos:
        push_image(registry_client, repo, "v1", image)
    port = free_port()
    docs = render(str(CHART), {
        "containerPort": port,
        "config": {
            "targets": [{"name": "hub", "kind": "distribution", "url": registry.url, "username": registry.username,
                         "passwordSecret": {"name": "hub-credentials", "key": "password"}, "interval": "60s"}],
            "storage": [{"name": "registry-data", "path": "/var/lib/registry",
                         "volume": {"persistentVolumeClaim": {"claimName": "registry-data", "readOnly": True}}}],
        },
    })
    pod = pods(docs, workload(docs, "Deployment"), tmp_path / "pod",
               secrets={"hub-credentials": {"password": registry.password}},
               claims={"registry-data": registry.root}, pod_name="regwatch-7d9c-x2x4p").start()
    pod.wait_ready()

    assert requests.get(pod.probe_url("livenessProbe"), timeout=5).status_code == 200
    metrics = pod.metrics()
    assert metrics[("regwatch_target_up", (("kind", "distribution"), ("target", "hub")))] == 1
    assert metrics[("regwatch_registry_repositories", (("target", "hub"),))] == len(repos)
    stat = os.statvfs(registry.root)
    assert metrics[("regwatch_storage_capacity_bytes", (("volume", "registry-data"),))] == stat.f_blocks * stat.f_frsize


def test_rendered_deployment_with_a_wrong_secret_reports_the_target_down(registry, pods, tmp_path):
    """The counter-check of the test above: the secret file really is what authenticates."""
    port = free_port()
    docs = render(str(CHART), {"containerPort": port, "config": {"targets": [
        {"name": "hub", "kind": "distribution", "url": registry.url, "username": registry.username,
         "passwordSecret": {"name": "hub-credentials", "key": "password"}}]}})
    pod = pods(docs, workload(docs, "Deployment"), tmp_path / "pod",
               secrets={"hub-credentials": {"password": "not-the-password"}}, claims={},
               pod_name="regwatch-0").start()
    pod.wait_ready()
    assert pod.metrics()[("regwatch_target_up", (("kind", "distribution"), ("target", "hub")))] == 0


def test_rendered_statefulset_pods_each_collect_their_own_shard(registry, pods, tmp_path):
    names = [f"hub-{i}" for i in range(8)]
    port = free_port()
    docs = render(str(CHART), {"containerPort": port, "sharding": {"shards": 2}, "config": {"targets": [
        {"name": name, "kind": "distribution", "url": registry.url, "username": registry.username,
         "passwordSecret": {"name": "hub-credentials", "key": "password"}} for name in names]}})
    statefulset = workload(docs, "StatefulSet")
    collected = []
    for ordinal in range(statefulset["spec"]["replicas"]):
        pod = pods(docs, statefulset, tmp_path / f"pod{ordinal}",
                   secrets={"hub-credentials": {"password": registry.password}}, claims={},
                   pod_name=f"{statefulset['metadata']['name']}-{ordinal}").start()
        pod.wait_ready()
        up = {dict(labels)["target"]: value for (name, labels), value in pod.metrics().items()
              if name == "regwatch_target_up"}
        assert set(up.values()) <= {1.0}
        collected.append(set(up))
        pod.stop()  # the pods share a port here (in Kubernetes each has its own IP)
    assert collected[0].isdisjoint(collected[1]) and collected[0] | collected[1] == set(names)
    assert collected[0] and collected[1]
