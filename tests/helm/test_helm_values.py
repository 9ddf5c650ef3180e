"""values.yaml is documented key by key, and values.schema.json declares every key it has."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from helmkit import CHART

VALUES = CHART / "values.yaml"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# Maps whose keys are the user's (labels, annotations, channel names) or whose value is a
# Kubernetes object the chart passes through (kubernetes-validate checks the rendered result).
FREE_FORM = {
    "commonLabels", "receiver.channels", "receiver.config", "receiver.persistence.annotations",
    "receiver.service.annotations", "receiver.serviceAccount.annotations", "receiver.resources",
    "receiver.podSecurityContext", "receiver.securityContext", "receiver.podAnnotations",
    "receiver.podLabels", "receiver.nodeSelector", "receiver.affinity",
    "exporter.checkpoint.volume", "exporter.config", "exporter.resources",
    "exporter.securityContext", "podMonitor.labels", "podMonitor.namespaceSelector",
    "serviceMonitor.labels", "prometheusRule.labels", "alertmanagerConfig.labels",
    "alertmanagerConfig.heartbeat.labels",
    "dashboards.labels", "dashboards.annotations",
}
KEY = re.compile(r"^(\s*)([A-Za-z_][\w-]*):")
HELM_DOCS = re.compile(r"^# --(?: |$)")  # not a "# -----" rule line


def documented_keys(text: str) -> dict[str, bool]:
    """Dotted key path -> documented. A key is documented by a comment right above it (blank
    lines allowed), or by a `# --` comment on an ancestor: helm-docs' rule, where such a comment
    describes the whole value below it (a resources or securityContext block, say)."""
    lines = text.splitlines()
    out: dict[str, bool] = {}
    stack: list[tuple[int, str, bool]] = []  # (indent, key, covers its subtree)
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m or line.lstrip().startswith(("#", "-")):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        # The comment block above this key: does it contain a `# --` line?
        k = j
        while k >= 0 and lines[k].strip().startswith("#") and not HELM_DOCS.match(lines[k].strip()):
            k -= 1
        helm_docs = k >= 0 and bool(HELM_DOCS.match(lines[k].strip())) and all(
            lines[n].strip().startswith("#") for n in range(k, j + 1))
        # Own comment: the comment block right above, with words in it (not only a rule line).
        block = j
        while block >= 0 and lines[block].strip().startswith("#"):
            block -= 1
        own = any(re.search(r"[A-Za-z]", lines[n]) for n in range(block + 1, j + 1))
        covered = any(c for _, _, c in stack)
        path = ".".join([k_ for _, k_, _ in stack] + [m.group(2)])
        out[path] = own or covered
        stack.append((indent, m.group(2), helm_docs))
    return out


def test_every_key_is_documented() -> None:
    keys = documented_keys(VALUES.read_text())
    assert len(keys) > 100
    assert [k for k, ok in keys.items() if not ok] == []


def test_the_documentation_check_sees_a_bare_key() -> None:
    text = ("# -- documented\na: 1\n# -------\nsection:\n  # -- inner\n  b: 2\n  c: 3\n"
            "block:\n  d: 1\n")
    keys = documented_keys(text)
    assert keys == {"a": True, "section": False, "section.b": True, "section.c": False,
                    "block": False, "block.d": False}
    covered = documented_keys("# -- a whole block\nres:\n  requests: {cpu: 1}\n  limits: {}\n")
    assert all(covered.values())


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        node: Any = SCHEMA
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def test_schema_declares_every_key_and_closes_every_section() -> None:
    values = yaml.safe_load(VALUES.read_text())
    undeclared, open_sections, free = [], [], set()

    def walk(value: Any, schema: dict[str, Any], path: str) -> None:
        schema = _resolve(schema)
        if not isinstance(value, dict):
            return
        props = schema.get("properties")
        if props is None:
            free.add(path)
            return
        if schema.get("additionalProperties") is not False:
            open_sections.append(path or "(top)")
        for key, sub in value.items():
            where = f"{path}.{key}" if path else key
            if key in props:
                walk(sub, props[key], where)
            else:
                undeclared.append(where)

    walk(values, SCHEMA, "")
    assert undeclared == []
    assert open_sections == []  # a misspelt key fails the install
    assert free == FREE_FORM
