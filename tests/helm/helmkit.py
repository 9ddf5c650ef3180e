"""Helpers for the chart tests: render the chart with Helm's own engine (helm-python-sdk binds
Helm v4's Go SDK) and check the objects against the Kubernetes and Prometheus Operator schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from operator_schemas import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tailpage"
EXAMPLE = ROOT / "helm" / "examples" / "myapp"
RELEASE, NAMESPACE = "tp", "monitoring"

# The oldest Kubernetes the chart supports with native sidecars, and the newest schema shipped.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version() + ".0")

# Every optional part on (the PostgreSQL store is its own case: it excludes the PVC).
ALL_ON: dict[str, Any] = {
    "demo": {"enabled": True},
    "podMonitor": {"enabled": True, "labels": {"release": "kps"}, "scrapeTimeout": "10s"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
    "alertmanagerConfig": {
        "enabled": True,
        "labels": {"alertmanagerConfig": "tailpage"},
        "matchers": [{"name": "severity", "value": "critical|high", "matchType": "=~"}],
    },
    "dashboards": {"enabled": True, "folder": "tailpage"},
    "exporter": {
        "nativeSidecar": True,
        "logs": {"sizeLimit": "1Gi"},
        "config": {"format": "auto", "checkpoint": {"interval": "2s"}},
        "readinessProbe": {"enabled": True},
    },
    "receiver": {
        "channels": {
            "slack": {"url": "slack://T1/B2/sekret-slack"},
            "pagerduty": {"url": "pagerduty://sekret-pd-key@sekret-routing"},
        },
        "routes": [
            {"match": {"severity": "critical"}, "channels": ["pagerduty", "slack"],
             "escalate": [{"after": "15m", "channels": ["pagerduty"]}]},
        ],
        "config": {"delivery": {"workers": 2}},
        "auth": {"bearerToken": "sekret-token"},
        "pdb": {"enabled": True},
        "networkPolicy": {"enabled": True, "restrictEgress": True},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "receiver"}}},
        ],
    },
}

POSTGRES_HA: dict[str, Any] = {
    "receiver": {
        "replicaCount": 3,
        "store": {"type": "postgresql",
                  "postgresql": {"host": "pg-rw.db.svc", "passwordSecret": {"name": "pg-app"}}},
        "pdb": {"enabled": True},
    },
}


def parse(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Rendered template files -> Kubernetes objects (NOTES.txt is text, not YAML)."""
    docs: list[dict[str, Any]] = []
    for name, text in sorted(manifests.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def render_chart(chart_dir: Path, values: dict[str, Any] | None) -> dict[str, str]:
    with helm_python.Chart.load(chart_dir) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs
            if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def validate_kubernetes(docs: list[dict[str, Any]]) -> list[str]:
    """Strict Kubernetes schema validation (unknown fields are errors) for every core kind, at
    each of KUBE_VERSIONS; returns the kinds that have no Kubernetes schema (the CRDs)."""
    unknown: list[str] = []
    for doc in docs:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unknown.append(doc["kind"])
                break
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid on {version}: "
                            f"{path}: {e.message}")
    return unknown


def validate_operator(doc: dict[str, Any]) -> None:
    """A Prometheus Operator object against the strict subset schemas of its CRD."""
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
    assert not errors, f"{doc['kind']}/{doc['metadata']['name']}: " + "; ".join(
        f"{'.'.join(str(p) for p in e.path)}: {e.message}" for e in errors)
