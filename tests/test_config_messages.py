"""Every key of the config model, given every YAML type: each problem is plain words with its key path,
never pydantic's own wording, never a traceback (issue 14 "every message is plain words").

The walk is the independent count here: it finds which pydantic error types a user can reach, and
the test fails on one that regwatch.config has no words for.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwatch import config as model
from regwatch.config import ConfigError, parse_config

BASE = {
    "targets": [
        {"name": "d", "kind": "distribution", "url": "http://r:5000", "tls": {}, "probes": [{"image": "a/b:1"}]},
        {"name": "h", "kind": "harbor", "url": "http://h", "harbor": {}},
        {"name": "n", "kind": "nexus", "url": "http://n", "nexus": {"docker_connectors": {"x": "http://n:1"}}},
        {"name": "a", "kind": "artifactory", "url": "http://a", "artifactory": {}},
        {"name": "u", "kind": "upstream", "url": "http://u", "upstream": {"image": "a/b"}},
    ],
    "storage": [{"name": "s", "path": "/"}],
    "auth_logs": [{"name": "l", "path": "/x"}, {"name": "e", "elasticsearch": {"url": "http://e", "tls": {}}}],
    "drill": {},
}
# Where each model sits in BASE.
HOLDERS = [
    ((), model.Config), (("targets", 0), model.DistributionTarget), (("targets", 0, "tls"), model.TLSConfig),
    (("targets", 0, "probes", 0), model.ProbeConfig), (("targets", 1), model.HarborTarget),
    (("targets", 1, "harbor"), model.HarborConfig), (("targets", 2), model.NexusTarget),
    (("targets", 2, "nexus"), model.NexusConfig), (("targets", 3), model.ArtifactoryTarget),
    (("targets", 3, "artifactory"), model.ArtifactoryConfig), (("targets", 4), model.UpstreamTarget),
    (("targets", 4, "upstream"), model.UpstreamConfig), (("storage", 0), model.StorageConfig),
    (("auth_logs", 0), model.AuthLogConfig), (("auth_logs", 1, "elasticsearch"), model.ElasticsearchConfig),
    (("drill",), model.DrillConfig),
]
# One of each YAML shape, and the edges of numbers and strings.
VALUES = [None, True, 0, -1, 5, 2.5, 10**12, "", "text", "x" * 300, [], ["x"], [1], [None], [{}], {}, {"a": 1},
          {"a": "b"}, {"a": None}]
PYDANTIC_WORDING = ("Input should", "Field required", "Extra inputs", "Value error", "Unable to extract",
                    "valid list", "valid dictionary", "valid integer", "valid boolean", "valid string",
                    "does not match any of the expected tags", "String should", "[type=")


def test_every_model_is_walked():
    """A new options model must be added to HOLDERS (and so be checked below)."""
    seen, todo = set(), [model.Config]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        for field in cls.model_fields.values():
            stack = [field.annotation]
            while stack:
                tp = stack.pop()
                if isinstance(tp, type) and issubclass(tp, model.BaseModel):
                    if tp not in seen:
                        todo.append(tp)
                else:
                    stack.extend(getattr(tp, "__args__", ()))
    seen.discard(model.TargetConfig)  # abstract: only its kinds appear in a config
    assert seen == {cls for _, cls in HOLDERS}


def _every_mistake():
    for loc, cls in HOLDERS:
        for field in cls.model_fields:
            for value in VALUES:
                data = copy.deepcopy(BASE)
                node = data
                for part in loc:
                    node = node[part]
                node[field] = value
                yield f"{'.'.join(map(str, loc))}.{field}={value!r:.20}", data


def test_every_key_with_every_yaml_type_gets_plain_words(monkeypatch):
    reached: set[str] = set()
    words = model._message

    def spy(err, where):
        reached.add(err["type"])
        return words(err, where)

    monkeypatch.setattr(model, "_message", spy)
    for case, data in _every_mistake():
        try:
            parse_config(data)
        except ConfigError as exc:
            for problem in exc.problems:
                text = str(problem)
                assert problem.path, f"{case}: no key path in {text!r}"
                assert not problem.message.startswith(model.UNMAPPED), f"{case}: {text}"
                assert not any(w in text for w in PYDANTIC_WORDING), f"{case}: {text}"
    # The pydantic error types a config can reach; a new one must get words in _message first.
    assert reached == {
        "bool_parsing", "bool_type", "dict_type", "extra_forbidden", "greater_than", "greater_than_equal",
        "int_from_float", "int_parsing", "int_type", "less_than_equal", "list_type", "literal_error", "missing",
        "model_attributes_type", "model_type", "path_type", "string_pattern_mismatch", "string_too_long",
        "string_type", "union_tag_invalid", "union_tag_not_found", "value_error"}


yaml_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=8)
keys = st.sampled_from(sorted({k for _, cls in HOLDERS for k in cls.model_fields} | {"type", "user", "password"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["listen", "targets", "storage", "auth_logs", "drill"]),
                       yaml_values | st.lists(st.dictionaries(keys, yaml_values, max_size=6), max_size=3),
                       max_size=4))
def test_arbitrary_yaml_is_a_config_or_a_list_of_plain_problems(data):
    try:
        parse_config(data)
    except ConfigError as exc:
        for problem in exc.problems:
            assert not problem.message.startswith(model.UNMAPPED), str(problem)
            assert not any(w in str(problem) for w in PYDANTIC_WORDING), str(problem)


@pytest.mark.parametrize("key, owner, suggestion", [
    ("type", model.DistributionTarget, "kind"), ("user", model.DistributionTarget, "username"),
    ("usernme", model.DistributionTarget, "username"), ("host", model.DistributionTarget, "url"),
    ("ca_file", model.DistributionTarget, "tls.ca_file"), ("skip", model.HarborTarget, "harbor.skip"),
    ("image", model.UpstreamTarget, "upstream.image"), ("intervall", model.StorageConfig, "interval"),
    ("target", model.Config, "targets"), ("password_fle", model.ElasticsearchConfig, "password_file"),
])
def test_did_you_mean_looks_among_the_keys_valid_at_that_path(key, owner, suggestion):
    assert model._suggest(key, owner) == suggestion
