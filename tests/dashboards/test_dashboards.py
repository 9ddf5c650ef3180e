"""Grafana conventions for dashboards/*.json. PromQL validity and metric names are checked with
the rules in tests/rules/ (test_promtool.py, test_metric_sources.py, the Prometheus integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "dashboards").glob("*.json"))
DASHBOARDS = {f.name: json.loads(f.read_text()) for f in FILES}
DS = {"type": "prometheus", "uid": "${datasource}"}
RANGE_FUNCS = r"\b(rate|irate|increase|deriv|delta|idelta|changes|resets|\w+_over_time)\s*\("


def panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def variables(d: dict) -> dict[str, dict]:
    return {v["name"]: v for v in d["templating"]["list"]}


def test_the_three_dashboards_exist_with_stable_uids():
    uids = {d["uid"] for d in DASHBOARDS.values()}
    assert uids == {"tailpage-errors", "tailpage-error-budget", "tailpage-pipeline"}
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
class TestConventions:
    def test_header(self, name):
        d = DASHBOARDS[name]
        # Grafana 10.x-12.x load schemaVersion 39 as is (newer versions migrate it forward).
        assert d["schemaVersion"] == 39
        assert d["title"].startswith("tailpage / ")
        assert len(d["description"]) > 20
        assert "tailpage" in d["tags"]
        assert d["id"] is None, "exported dashboards must not pin a database id"
        assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"])

    def test_variables(self, name):
        v = variables(DASHBOARDS[name])
        assert v["datasource"]["type"] == "datasource"
        assert v["datasource"]["query"] == "prometheus"
        for var in ("namespace", "job"):
            assert v[var]["type"] == "query", var
            assert v[var]["datasource"] == DS, var
            assert v[var]["includeAll"] and v[var]["multi"], var
        assert "$namespace" in v["job"]["definition"], "job should follow the namespace choice"
        for var in v.values():
            if var["type"] == "query":
                assert var["definition"] == var["query"]["query"]

    def test_every_panel_uses_the_datasource_variable(self, name):
        for p in panels(DASHBOARDS[name]):
            assert p["datasource"] == DS, p["title"]
            assert p["targets"], p["title"]
            for t in p["targets"]:
                assert t["datasource"] == DS, (p["title"], t["refId"])

    def test_every_panel_has_title_description_and_unit(self, name):
        for p in panels(DASHBOARDS[name]):
            assert p["title"].strip()
            assert len(p.get("description", "")) > 10, p["title"]
            assert p["fieldConfig"]["defaults"].get("unit"), p["title"]

    def test_panel_ids_refids_and_layout(self, name):
        d = DASHBOARDS[name]
        all_panels = [p for p in d["panels"]]
        ids = [p["id"] for p in all_panels]
        assert len(ids) == len(set(ids))
        cells = set()
        for p in all_panels:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, p["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                    cells.add((x, y))
        for p in panels(d):
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]

    def test_range_functions_use_grafana_intervals(self, name):
        for p in panels(DASHBOARDS[name]):
            for t in p["targets"]:
                for m in re.finditer(RANGE_FUNCS, t["expr"]):
                    window = re.search(r"\[([^\]]*)\]", t["expr"][m.end():]).group(1)
                    assert window in ("$__rate_interval", "$__range"), (p["title"], window)

    def test_queries_follow_the_variables(self, name):
        for p in panels(DASHBOARDS[name]):
            for t in p["targets"]:
                for m in re.finditer(r"\b(tailpage[_:][\w:]+|up|ALERTS)(\{[^}]*\})?", t["expr"]):
                    metric, sel = m.group(1), m.group(2) or ""
                    if metric == "tailpage:slo_target:ratio":
                        continue  # one global constant, no labels
                    if metric.startswith("tailpage_receiver_"):
                        assert '$receiver_job' in sel, (p["title"], metric)
                    else:
                        assert 'namespace=~"$namespace"' in sel, (p["title"], metric)
                        assert 'job=~"$job"' in sel, (p["title"], metric)


def _exprs(uid: str) -> str:
    (d,) = [d for d in DASHBOARDS.values() if d["uid"] == uid]
    return "\n".join(t["expr"] for p in panels(d) for t in p["targets"])


def test_errors_overview_covers_the_issue():
    e = _exprs("tailpage-errors")
    for needle in ("by (severity)", "by (category)", "by (component)", "error_type",
                   "tailpage_errors_by_fingerprint_total", 'severity="critical"',
                   "histogram_quantile(0.95", "histogram_quantile(0.99", "by (level)",
                   "tailpage:errors_per_line:ratio_rate5m"):
        assert needle in e, needle


def test_error_budget_covers_the_issue():
    e = _exprs("tailpage-error-budget")
    for needle in ("tailpage:slo_target:ratio", "tailpage:slo_error_budget_remaining:ratio_30d",
                   "ALERTS{"):
        assert needle in e, needle
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert f"tailpage:slo_errors_per_request:ratio_rate{window}{{" in e, window


def test_pipeline_health_covers_the_issue():
    e = _exprs("tailpage-pipeline")
    for metric in ("lag_bytes", "lines_read_total", "parse_failures_total", "series_dropped_total",
                   "notifications_total", "notification_latency_seconds_bucket",
                   "queue_depth", "dead_letters_total", "escalations_total"):
        assert metric in e, metric
