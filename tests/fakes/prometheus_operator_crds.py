"""JSON schemas for the Prometheus Operator objects the chart renders: ServiceMonitor and PrometheusRule.

Written from the documented spec of the operator's CRDs, monitoring.coreos.com/v1 (the
openAPIV3Schema of example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml and
..._prometheusrules.yaml, operator v0.82), reduced to the fields a chart sets, and stricter than
the CRD in one way: unknown fields are errors (additionalProperties false), so a misspelt key in
a template fails the test instead of being pruned silently by the API server.
"""

from __future__ import annotations

# The operator's Duration pattern, shared by every duration field of its CRDs.
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                    "maxLength": 253},
                           "namespace": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP}}

LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"},
                           "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}

RELABEL_ACTIONS = ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
                   "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                   "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]
RELABEL_CONFIG = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"}, "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0}, "replacement": {"type": "string"},
        "action": {"enum": RELABEL_ACTIONS},
    },
}

ENDPOINT = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "port": {"type": "string"}, "targetPort": {"type": ["integer", "string"]}, "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]}, "params": {"type": "object"},
        "interval": DURATION, "scrapeTimeout": DURATION, "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"}, "tlsConfig": {"type": "object"},
        "bearerTokenSecret": {"type": "object"}, "authorization": {"type": "object"},
        "basicAuth": {"type": "object"}, "oauth2": {"type": "object"}, "proxyUrl": {"type": "string"},
        "followRedirects": {"type": "boolean"}, "enableHttp2": {"type": "boolean"},
        "relabelings": {"type": "array", "items": RELABEL_CONFIG},
        "metricRelabelings": {"type": "array", "items": RELABEL_CONFIG},
    },
}


def custom_resource(kind: str, spec: dict) -> dict:
    """The schema of a monitoring.coreos.com/v1 object of ``kind`` whose spec follows ``spec``."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": kind},
                       "metadata": METADATA, "spec": spec},
    }


SERVICE_MONITOR = custom_resource("ServiceMonitor", {
    "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
    "properties": {
        "jobLabel": {"type": "string"},
        "targetLabels": {"type": "array", "items": {"type": "string"}},
        "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "endpoints": {"type": "array", "minItems": 1, "items": ENDPOINT},
        "selector": LABEL_SELECTOR,
        "namespaceSelector": {"type": "object", "additionalProperties": False,
                              "properties": {"any": {"type": "boolean"},
                                             "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "sampleLimit": {"type": "integer", "minimum": 0},
        "scrapeClass": {"type": "string", "minLength": 1},
    },
})

RULE = {
    "type": "object", "additionalProperties": False, "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": ["string", "integer"]},
        "for": DURATION, "keep_firing_for": DURATION, "labels": STRING_MAP, "annotations": STRING_MAP,
    },
}

PROMETHEUS_RULE = custom_resource("PrometheusRule", {
    "type": "object", "additionalProperties": False,
    "properties": {"groups": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}, "interval": DURATION,
                       "labels": STRING_MAP, "limit": {"type": "integer"}, "query_offset": DURATION,
                       "partial_response_strategy": {"type": "string",
                                                     "pattern": "^([aA][bB][oO][rR][tT]|[wW][aA][rR][nN])?$"},
                       "rules": {"type": "array", "items": RULE}}}}},
})

SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}
