"""Strict JSON Schemas for the Prometheus Operator objects the chart renders.

kubernetes-validate ships only the built-in kinds, and no PyPI package ships the operator's CRDs
without side effects on the whole test run, so these are written from the operator's API
reference (monitoring.coreos.com v1 and v1alpha1, operator 0.80). They cover the fields the chart
may emit, with additionalProperties: false, so a misspelt or invented field fails here instead of
being pruned silently by the API server.
"""

from __future__ import annotations

from typing import Any

DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                         "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STR = {"type": "string"}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": required or []}


SECRET_KEY = _obj({"name": STR, "key": STR, "optional": {"type": "boolean"}}, ["key"])
LABEL_SELECTOR = _obj({"matchLabels": STR_MAP, "matchExpressions": {"type": "array"}})
NAMESPACE_SELECTOR = _obj({"any": {"type": "boolean"},
                           "matchNames": {"type": "array", "items": STR}})


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = _obj({"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
                 "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP}, ["name"])
    return _obj({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                 "metadata": meta, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


_SCRAPE_ENDPOINT = {"port": STR, "path": STR, "interval": DURATION, "scrapeTimeout": DURATION,
                    "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                    "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array"},
                    "metricRelabelings": {"type": "array"}}

RULE = {
    "type": "object", "additionalProperties": False, "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {"alert": STR, "record": STR, "expr": {"type": ["string", "integer"]},
                   "for": DURATION, "keep_firing_for": DURATION,
                   "labels": STR_MAP, "annotations": STR_MAP},
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "PodMonitor"): _resource(
        "monitoring.coreos.com/v1", "PodMonitor",
        _obj({"selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
              "jobLabel": STR, "podTargetLabels": {"type": "array", "items": STR},
              "podMetricsEndpoints": {"type": "array", "minItems": 1,
                                      "items": _obj(_SCRAPE_ENDPOINT)}},
             ["selector"])),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(
        "monitoring.coreos.com/v1", "ServiceMonitor",
        _obj({"selector": LABEL_SELECTOR, "namespaceSelector": NAMESPACE_SELECTOR,
              "jobLabel": STR, "targetLabels": {"type": "array", "items": STR},
              "endpoints": {"type": "array", "minItems": 1, "items": _obj(_SCRAPE_ENDPOINT)}},
             ["selector", "endpoints"])),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _resource(
        "monitoring.coreos.com/v1", "PrometheusRule",
        _obj({"groups": {"type": "array", "items": _obj(
            {"name": {"type": "string", "minLength": 1}, "interval": DURATION,
             "query_offset": DURATION, "limit": {"type": "integer"}, "labels": STR_MAP,
             "partial_response_strategy": STR, "rules": {"type": "array", "items": RULE}},
            ["name"])}})),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): _resource(
        "monitoring.coreos.com/v1alpha1", "AlertmanagerConfig",
        _obj({
            "route": _obj({
                "receiver": STR, "groupBy": {"type": "array", "items": STR},
                "groupWait": DURATION, "groupInterval": DURATION, "repeatInterval": DURATION,
                "continue": {"type": "boolean"}, "routes": {"type": "array"},
                "matchers": {"type": "array", "items": _obj(
                    {"name": {"type": "string", "minLength": 1}, "value": STR,
                     "matchType": {"enum": ["!=", "=", "=~", "!~"]}, "regex": {"type": "boolean"}},
                    ["name"])},
            }),
            "receivers": {"type": "array", "items": _obj({
                "name": {"type": "string", "minLength": 1},
                "webhookConfigs": {"type": "array", "items": _obj({
                    "url": {"type": "string", "pattern": "^https?://"},
                    "urlSecret": SECRET_KEY,
                    "sendResolved": {"type": "boolean"},
                    "maxAlerts": {"type": "integer", "minimum": 0},
                    "httpConfig": _obj({
                        "authorization": _obj({"type": STR, "credentials": SECRET_KEY}),
                        "basicAuth": _obj({"username": SECRET_KEY, "password": SECRET_KEY}),
                        "bearerTokenSecret": SECRET_KEY,
                        "followRedirects": {"type": "boolean"},
                    }),
                })},
            }, ["name"])},
        })),
}
