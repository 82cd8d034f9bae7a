"""The Helm chart, linted and rendered by real Helm (helm-sdkpy), every object checked against its schema.

Rendering is Helm's install action against the fake Kubernetes API of ``tests/fakes/kubeapi.py``:
the manifests are exactly what a ``helm install`` would apply. Kubernetes objects are validated
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), the
Prometheus Operator objects against schemas written from the operator's CRDs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from regwatch.config import Config
from tests.conftest import REPO_ROOT
from tests.fakes.kubeapi import RenderError, lint, render
from tests.fakes.prometheus_operator_crds import SCHEMAS

# Every render is a Helm install against a fake Kubernetes API server the test starts.
pytestmark = pytest.mark.servers

CHART = REPO_ROOT / "helm" / "regwatch"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
INVALID_VALUES = sorted((CHART / "ci" / "invalid").glob("*-values.yaml"))
KUBERNETES_VERSION = "1.30.0"
RULES_COPY = CHART / "files" / "regwatch.rules.yml"
DASHBOARDS_COPY = CHART / "files" / "dashboards"
# The chart's rules and dashboards are copies of `regwatch generate` output (make generate).
HAVE_COPIES = RULES_COPY.is_file() and any(DASHBOARDS_COPY.glob("*.json"))
HAVE_GENERATOR = importlib.util.find_spec("regwatch.generate") is not None
needs_copies = pytest.mark.skipif(
    not HAVE_COPIES and not HAVE_GENERATOR,
    reason="regwatch/generate (the alert and dashboard generator) is not in this checkout yet, so there is "
           "nothing to copy into helm/regwatch/files/; test_generated_copies_are_present fails once it is")


def values_of(path: Path) -> dict:
    values = yaml.safe_load(path.read_text()) or {}
    if not HAVE_COPIES and not HAVE_GENERATOR:
        values.get("dashboards", {}).pop("enabled", None)  # prometheusRule still renders its extraGroups
    return values


_rendered: dict[str, list[dict]] = {}
# The least a release needs: something to watch (serve refuses a config without).
WATCHING = {"config": {"targets": [{"name": "hub", "kind": "distribution", "url": "https://registry.example.com"}]}}


def rendered(name: str) -> list[dict]:
    """The objects of ci/<name>-values.yaml, rendered once per session (each render is a Helm install)."""
    if name not in _rendered:
        _rendered[name] = render(str(CHART), values_of(CHART / "ci" / f"{name}-values.yaml"))
    return _rendered[name]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((f"CronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions In/NotIn/Exists)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


# --------------------------------------------------------------------------- lint


def test_helm_lint_reports_no_error():
    result = lint(str(CHART))
    errors = [m for m in result["Messages"] if m["Severity"] >= 3]
    assert result["TotalChartsLinted"] == 1
    assert errors == []


def test_helm_lint_catches_a_broken_template(tmp_path):
    broken = tmp_path / "regwatch"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "service.yaml").write_text("{{ .Values.service.port | nosuchfunction }}\n")
    assert any(m["Severity"] == 3 for m in lint(str(broken))["Messages"])


# --------------------------------------------------------------------------- render and validate


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_object_is_valid(values):
    docs = rendered(values.name.removesuffix("-values.yaml"))
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']} from {values.name}"
        if doc["kind"] in SCHEMAS:
            try:
                jsonschema.validate(doc, SCHEMAS[doc["kind"]])
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {list(exc.absolute_path)}")
        else:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message}")


def test_the_validators_reject_a_broken_object():
    """The schema checks above can fail: a misspelt field is caught by each validator."""
    deployment = of_kind(rendered("default"), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    monitor = of_kind(rendered("full"), "ServiceMonitor")[0]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SCHEMAS["ServiceMonitor"])


@pytest.mark.parametrize("values", INVALID_VALUES, ids=lambda p: p.name)
def test_invalid_values_fail_on_the_schema(values):
    with pytest.raises(RenderError) as err:
        render(str(CHART), values_of(values))
    assert "schema" in str(err.value).lower()


def test_the_invalid_values_differ_from_valid_ones_only_in_the_mistake():
    """Each invalid file fails for its stated reason: the key it names is what the schema rejects."""
    messages = {}
    for values in INVALID_VALUES:
        with pytest.raises(RenderError) as err:
            render(str(CHART), values_of(values))
        messages[values.name] = str(err.value)
    assert "serviceMonitr" in messages["typo-values.yaml"]
    assert "password" in messages["literal-password-values.yaml"]
    assert "shards" in messages["bad-shards-values.yaml"]


def test_a_config_with_nothing_to_watch_fails_at_install_not_in_a_crash_loop():
    with pytest.raises(RenderError) as err:
        render(str(CHART), {})
    assert "regwatch: config has nothing to watch; set config.targets (or config.storage, config.auth_logs, " \
           "config.drill.report_dir) in your values" in str(err.value)


def test_defaults_are_one_deployment_service_and_config():
    kinds = sorted(d["kind"] for d in rendered("default"))
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    assert of_kind(rendered("default"), "Deployment")[0]["spec"]["replicas"] == 1


# --------------------------------------------------------------------------- what the objects say


@pytest.mark.parametrize("name", ["default", "full", "sharded"])
def test_every_pod_is_non_root_read_only_and_unprivileged(name):
    specs = pod_specs(rendered(name))
    assert specs
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["limits"]["memory"], where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", ["default", "full"])
def test_serve_pods_probe_healthz_and_readyz_on_the_serving_port(name):
    for where, spec in pod_specs(rendered(name)):
        if where.startswith("CronJob"):
            continue
        container = spec["containers"][0]
        port_names = {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
        assert container["livenessProbe"]["httpGet"]["port"] in port_names


def test_secrets_are_only_referenced_and_every_secret_file_is_a_mounted_secret():
    docs = rendered("full")
    assert of_kind(docs, "Secret") == []
    values = values_of(CHART / "ci" / "full-values.yaml")
    config = yaml.safe_load(of_kind(docs, "ConfigMap")[0]["data"]["config.yaml"])
    Config.model_validate(config)  # the chart writes a config regwatch accepts
    files = [t["password_file"] for t in config["targets"] if "password_file" in t] + \
            [s["elasticsearch"]["api_key_file"] for s in config["auth_logs"]]
    refs = [t["passwordSecret"] for t in values["config"]["targets"] if "passwordSecret" in t] + \
           [s["elasticsearch"]["apiKeySecret"] for s in values["config"]["auth_logs"]]
    assert len(files) == len(refs) == 3
    for where, spec in pod_specs(docs):
        if "logs" in where:
            continue
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = spec["containers"][0]["volumeMounts"]
        for path, ref in zip(files, refs, strict=True):
            mount = next(m for m in mounts if path.startswith(m["mountPath"] + "/"))
            assert volumes[mount["name"]]["secret"]["secretName"] == ref["name"], where
            assert path == f"{mount['mountPath']}/{ref['key']}", where
            assert mount["readOnly"] is True


def test_sharded_values_run_a_statefulset_whose_pods_take_their_shard_from_the_hostname():
    docs = rendered("sharded")
    assert of_kind(docs, "Deployment") == []
    (sts,) = of_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 5
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shards") + 1] == "5" and "--shard-from-hostname" in args
    headless = next(s for s in of_kind(docs, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_prometheusrule_carries_extra_groups_and_the_release_label():
    (rule,) = of_kind(rendered("full"), "PrometheusRule")
    extra = values_of(CHART / "ci" / "full-values.yaml")["prometheusRule"]["extraGroups"]
    assert rule["spec"]["groups"][-len(extra):] == extra
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["role"] == "alert-rules"


def test_servicemonitor_scrapes_serve_and_logs_services_once_each_and_carries_the_release_label():
    docs = rendered("full")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    labels = monitor["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack" and labels["prometheus"] == "main"
    picked = sorted(s["metadata"]["name"] for s in of_kind(docs, "Service")
                    if selects(monitor["spec"]["selector"], s["metadata"]["labels"]))
    assert picked == ["regwatch", "regwatch-logs"]  # not the headless one: each pod scraped once
    for service in of_kind(docs, "Service"):
        assert [p["name"] for p in service["spec"]["ports"]] == [monitor["spec"]["endpoints"][0]["port"]]
    workloads = of_kind(docs, "StatefulSet") + of_kind(docs, "DaemonSet")
    for service in of_kind(docs, "Service"):
        selected = [w for w in workloads if selects({"matchLabels": service["spec"]["selector"]},
                                                    w["spec"]["template"]["metadata"]["labels"])]
        assert len(selected) == 1, service["metadata"]["name"]


def test_generated_copies_are_present():
    """Once the generator exists, the chart must carry its output (run `make generate`)."""
    if HAVE_GENERATOR:
        assert HAVE_COPIES, "helm/regwatch/files/ lacks the generated rules or dashboards: run `make generate`"


@needs_copies
def test_generated_copies_are_identical_to_what_regwatch_generate_writes(tmp_path):
    for what in ("alerts", "dashboards"):
        subprocess.run([sys.executable, "-m", "regwatch", "generate", what, "--out", str(tmp_path / what)],
                       check=True, capture_output=True, cwd=REPO_ROOT, timeout=120)
    assert RULES_COPY.read_text() == (tmp_path / "alerts" / "regwatch.rules.yml").read_text()
    fresh = {p.name: p.read_text() for p in (tmp_path / "dashboards" / "provisioning").glob("*.json")}
    copies = {p.name: p.read_text() for p in DASHBOARDS_COPY.glob("*.json")}
    assert fresh and copies == fresh


def test_enabling_rules_or_dashboards_without_the_generated_copies_fails_with_the_fix(tmp_path):
    bare = tmp_path / "regwatch"
    shutil.copytree(CHART, bare, ignore=shutil.ignore_patterns("*.json", "regwatch.rules.yml"))
    shutil.copy(CHART / "values.schema.json", bare / "values.schema.json")
    for key in ("prometheusRule", "dashboards"):
        with pytest.raises(RenderError, match="make generate"):
            render(str(bare), {key: {"enabled": True}, **WATCHING})


@needs_copies
def test_prometheusrule_carries_exactly_the_generated_rules():
    (rule,) = of_kind(rendered("full"), "PrometheusRule")
    generated = yaml.safe_load(RULES_COPY.read_text())
    extra = values_of(CHART / "ci" / "full-values.yaml")["prometheusRule"]["extraGroups"]
    assert rule["spec"]["groups"] == generated["groups"] + extra
    assert rule["metadata"]["labels"]["role"] == "alert-rules"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_each_dashboard_file_becomes_one_sidecar_configmap_verbatim(tmp_path):
    """Template mechanics, on a chart copy with two dashboards: Grafana's {{label}} legends stay as they are."""
    chart = tmp_path / "regwatch"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "files" / "dashboards", ignore_errors=True)
    (chart / "files" / "dashboards").mkdir(parents=True)
    dashboards = {
        "regwatch-overview.json": {"uid": "regwatch-overview", "title": "Registries / Overview", "panels": [
            {"type": "timeseries", "targets": [{"expr": "regwatch_registry_tags", "legendFormat": "{{target}}"}]}]},
        "regwatch-probes.json": {"uid": "regwatch-probes", "title": "Registries / Probes", "panels": []},
    }
    for name, body in dashboards.items():
        (chart / "files" / "dashboards" / name).write_text(json.dumps(body, indent=2))
    docs = render(str(chart), {"dashboards": {"enabled": True, "folder": "Registries", "labelValue": "yes"},
                               **WATCHING})
    maps = [c for c in of_kind(docs, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert sorted(key for c in maps for key in c["data"]) == sorted(dashboards)
    for config_map in maps:
        kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
        ((name, body),) = config_map["data"].items()
        assert json.loads(body) == dashboards[name]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "yes"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Registries"}


@needs_copies
def test_one_dashboard_configmap_per_generated_dashboard_for_the_grafana_sidecar():
    files = sorted(DASHBOARDS_COPY.glob("*.json"))
    maps = [c for c in of_kind(rendered("full"), "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert len(maps) == len(files) > 0
    by_key = {key: (c, body) for c in maps for key, body in c["data"].items()}
    for path in files:
        config_map, body = by_key[path.name]
        assert json.loads(body) == json.loads(path.read_text())
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "Container registries"


def test_drill_cronjob_fans_out_over_repository_groups_as_an_indexed_job():
    docs = rendered("full")
    (cron,) = of_kind(docs, "CronJob")
    job = cron["spec"]["jobTemplate"]["spec"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["completionMode"] == "Indexed" and job["completions"] == 2
    repos = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("drill-repos"))["data"]
    assert repos["repos-0"].split() == ["--repo", "library/*"]
    assert repos["repos-1"].split() == ["--repo", "team-a/*", "--repo", "team-b/*"]
    script = job["template"]["spec"]["containers"][0]["args"][0]
    assert "--pushgateway" in script and "JOB_COMPLETION_INDEX" in script and script.startswith("set -f")
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_plain_drill_cronjob_passes_repos_as_arguments_to_the_image_entrypoint():
    (cron,) = of_kind(rendered("sharded"), "CronJob")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's ENTRYPOINT, regwatch
    args = container["args"]
    assert args[:3] == ["drill", "--config", "/etc/regwatch/config.yaml"]
    assert args[args.index("--repo") + 1] == "library/*" and args[args.index("--store") + 1] == "/store"
    volumes = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "store", "persistentVolumeClaim": {"claimName": "drill-store"}} in volumes


def test_log_daemonset_mounts_the_node_logs_read_only_and_keeps_positions_on_the_node():
    docs = rendered("full")
    (daemonset,) = of_kind(docs, "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/var/log"]["readOnly"] is True
    config = yaml.safe_load(next(c for c in of_kind(docs, "ConfigMap")
                                 if c["metadata"]["name"] == "regwatch-logs")["data"]["config.yaml"])
    Config.model_validate(config)
    assert "targets" not in config  # the DaemonSet tails logs only; the serve pods collect the targets
    assert config["auth_logs"][0]["positions_file"].startswith("/var/lib/regwatch/")
    assert "/var/lib/regwatch" in mounts
