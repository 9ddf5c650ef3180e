"""Shared helpers for the rules/dashboards tests: collect every PromQL expression the repository
ships (rule files, dashboard panels and variables), make Grafana's variables concrete, and list the
metric names an expression reads."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((REPO / "dashboards").glob("*.json"))

# Series Prometheus makes itself; every other name must be exported by tailpage or recorded here.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Expr:
    where: str  # "rules/x.yml alert Foo" or "dashboards/y.json panel 'Title' A"
    expr: str


def rule_groups() -> list[tuple[Path, dict]]:
    return [(f, g) for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]


def rules() -> list[tuple[Path, dict]]:
    return [(f, r) for f, g in rule_groups() for r in g["rules"]]


def rule_exprs() -> list[Expr]:
    return [
        Expr(f"{f.relative_to(REPO)} {r.get('alert') or r.get('record')}", r["expr"])
        for f, r in rules()
    ]


def recorded_names() -> set[str]:
    return {r["record"] for _, r in rules() if "record" in r}


def dashboards() -> list[tuple[Path, dict]]:
    return [(f, json.loads(f.read_text())) for f in DASHBOARD_FILES]


def panels(dashboard: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


# Values Grafana would put in place of its variables. Label-matcher variables become a regex that
# matches anything so the query selects every series, as "All" does.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}


def concrete(expr: str, durations: dict[str, str] | None = None) -> str:
    values = {**GRAFANA_VARIABLES, **(durations or {})}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr)


def dashboard_exprs(durations: dict[str, str] | None = None) -> list[Expr]:
    out = []
    for f, d in dashboards():
        for p in panels(d):
            for t in p.get("targets", []):
                where = f"{f.relative_to(REPO)} panel {p['title']!r} {t['refId']}"
                out.append(Expr(where, concrete(t["expr"], durations)))
        for v in d["templating"]["list"]:
            if v["type"] != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
            assert m, f"{f.name} variable {v['name']}: unexpected query {q!r}"
            out.append(Expr(f"{f.relative_to(REPO)} variable {v['name']}", concrete(m.group(1))))
    return out


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (a small scanner, enough for our own rules)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", "{}", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", e):
        rest = e[m.end():].lstrip()
        if m.group(1).lower() in _KEYWORDS or rest.startswith("("):
            continue
        names.add(m.group(1))
    return names


def readme_metrics() -> dict[str, str]:
    """Metric name -> type from the tables of the metrics reference (docs/metrics.md)."""
    text = (REPO / "docs" / "metrics.md").read_text()
    return dict(re.findall(r"^\| `(tailpage_\w+)` \| (\w+) \|", text, flags=re.M))


def base_name(name: str, types: dict[str, str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and types.get(stem) == "histogram":
            return stem
    return name


def promtool_check(exprs: list[Expr], tmp_path: Path) -> subprocess.CompletedProcess:
    """Parse arbitrary expressions with promtool: one recording rule per expression."""
    doc = {"groups": [{"name": "parse-only", "rules": [
        {"record": f"parse_check_{i}", "expr": e.expr} for i, e in enumerate(exprs)
    ]}]}
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run(["promtool", "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)
