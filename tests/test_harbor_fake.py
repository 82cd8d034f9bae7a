"""The fake Harbor is faithful to Harbor's swagger, and regwatch asks only for what the swagger has.

Every body the fake returned while regwatch collected (as admin, robot, plain user, and against
an old Harbor) validates against the response schema of its path in
../shared/harbor/swagger.yaml, and every path and query parameter regwatch sent is declared there.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import jsonschema
import pytest
import yaml

from regwatch.collectors import TargetContext
from regwatch.collectors.harbor import harbor_jobs_for
from regwatch.config import parse_config
from tests.fakes.harbor import FakeHarbor

SWAGGER_PATH = Path("/work/shared/harbor/swagger.yaml")
if not SWAGGER_PATH.exists():  # a checkout next to the shared notes
    SWAGGER_PATH = Path(__file__).resolve().parents[2] / "shared" / "harbor" / "swagger.yaml"


@pytest.fixture(scope="module")
def swagger() -> dict:
    return yaml.safe_load(SWAGGER_PATH.read_text())


def run_all_jobs(fake: FakeHarbor, user: str, password_file: Path) -> None:
    config = parse_config({"targets": [{"name": "h", "kind": "harbor", "url": fake.url, "username": user,
                                        "password_file": str(password_file),
                                        "harbor": {"detail_calls_per_cycle": 20}}]})
    for job in harbor_jobs_for(TargetContext(config.targets[0])):
        with contextlib.suppress(Exception):  # a role may fail the primary job; we only gather traffic here
            list(job.collector.collect())
        job.collector.close()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory) -> list[FakeHarbor]:
    fakes = []
    secrets = tmp_path_factory.mktemp("secrets")
    for version, user in (("v2.15.2", "admin"), ("v2.15.2", "robot$monitor"), ("v2.15.2", "dev"),
                          ("v2.2.0", "admin"), ("v2.15.2", "nobody")):
        fake = FakeHarbor(projects=7, repositories=260, version=version).start()
        # Enough manual runs to hide the last scheduled one, so its own query (trigger=scheduled) is made too.
        fake.executions[1][:0] = [fake.execution(100 + k, 1, "Succeed", 1_700_010_000.0 + k, trigger="manual")
                                  for k in range(10)]
        fake.add_audit("login", resource_type="user", result=False)
        fake.add_audit("push")
        password = secrets / f"{user}-{version}"
        password.write_text(fake.accounts.get(user, ("wrong", ""))[0])
        run_all_jobs(fake, user, password)
        fake.stop()
        fakes.append(fake)
    return fakes


def _resolve(swagger: dict, param: dict) -> dict:
    if "$ref" in param:
        return swagger["parameters"][param["$ref"].rsplit("/", 1)[-1]]
    return param


def test_every_response_validates_against_the_swagger_schema(swagger, traffic):
    validated = set()
    for fake in traffic:
        for template, status, body in fake.responses:
            op = swagger["paths"][template]["get"]
            schema = op["responses"][str(status)]["schema"]
            jsonschema.validate(body, {**schema, "definitions": swagger["definitions"]},
                                cls=jsonschema.Draft4Validator)
            validated.add(template)
    # Every endpoint regwatch reads was answered (and checked) at least once.
    assert validated >= {"/health", "/systeminfo", "/systeminfo/volumes", "/statistics", "/projects",
                         "/projects/{project_name_or_id}/summary", "/repositories", "/quotas", "/registries",
                         "/replication/policies", "/replication/executions", "/system/gc", "/system/gc/schedule",
                         "/system/purgeaudit", "/system/purgeaudit/schedule", "/scans/all/metrics", "/scanners",
                         "/security/summary", "/jobservice/queues", "/jobservice/pools", "/robots",
                         "/auditlog-exts", "/audit-logs",
                         "/projects/{project_name}/repositories/{repository_name}/artifacts",
                         "/system/scanAll/schedule", "/schedules", "/schedules/{job_type}/paused", "/retentions/{id}",
                         "/retentions/{id}/executions", "/projects/{project_name}/preheat/policies",
                         "/projects/{project_name}/preheat/policies/{preheat_policy_name}/executions",
                         "/projects/{project_name_or_id}/artifacts"}
    # The query for the last scheduled replication run was made (and answered within the swagger).
    assert any(t == "/replication/executions" and q.get("trigger") == ["scheduled"]
               for fake in traffic for t, _, q in fake.requests)


def test_the_schema_check_catches_a_wrong_body(swagger):
    schema = swagger["paths"]["/repositories"]["get"]["responses"]["200"]["schema"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"id": "seven", "artifact_count": 1}], {**schema, "definitions": swagger["definitions"]},
                            cls=jsonschema.Draft4Validator)


def test_every_path_and_query_parameter_regwatch_sends_is_in_the_swagger(swagger, traffic):
    sent = 0
    for fake in traffic:
        for template, raw_path, query in fake.requests:
            assert template in swagger["paths"], f"regwatch called {raw_path}, which the swagger does not have"
            op = swagger["paths"][template]["get"]
            params = [_resolve(swagger, p) for p in op.get("parameters", [])]
            allowed = {p["name"] for p in params if p["in"] == "query"}
            assert set(query) <= allowed, f"{template}: unknown query parameters {set(query) - allowed}"
            for p in params:
                if p["in"] == "query" and p["name"] in query and "maximum" in p:
                    assert int(query[p["name"]][0]) <= p["maximum"]
            sent += 1
    assert sent > 50
