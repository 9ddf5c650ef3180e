"""Rules and dashboards checked with the real promtool (Debian's prometheus package)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from promql_exprs import (
    PROMETHEUS_SERIES,
    REPO,
    RULE_FILES,
    base_name,
    dashboard_exprs,
    metric_names,
    promtool_check,
    readme_metrics,
    recorded_names,
    rule_exprs,
    rules,
)

from receiver import route

RULE_TESTS = sorted((REPO / "rules" / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_BASE = "https://github.com/tailpage/tailpage/blob/main/docs/runbook.md#"


def alerts() -> list[dict]:
    return [r for _, r in rules() if "alert" in r]


def test_rule_files_exist():
    assert RULE_FILES, "no rules/*.yml"
    assert RULE_TESTS, "no rules/tests/*.yml"


def test_promtool_check_rules_is_clean():
    run = subprocess.run(["promtool", "check", "rules", *map(str, RULE_FILES)],
                         capture_output=True, text=True, timeout=60)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert out.count("SUCCESS") == len(RULE_FILES), out
    assert "WARNING" not in out.upper(), out


def test_promtool_unit_tests_pass():
    run = subprocess.run(["promtool", "test", "rules", *map(str, RULE_TESTS)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert out.count("SUCCESS") == len(RULE_TESTS), out


def _unit_tests() -> list[dict]:
    return [t for f in RULE_TESTS for t in yaml.safe_load(f.read_text())["tests"]]


def test_every_alert_is_unit_tested_firing_and_not_firing():
    firing, quiet = set(), set()
    for t in _unit_tests():
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), "alerts never tested firing"
    # a heartbeat (expr vector(1), e.g. TailpageWatchdog) fires always: it has no quiet case
    always = {a["alert"] for a in alerts() if a["expr"].strip() == "vector(1)"}
    assert names - quiet - always == set(), "alerts never tested not firing"
    assert (firing | quiet) - names == set(), "tests for alerts that do not exist"


def test_every_recording_rule_is_unit_tested():
    tested = set()
    for t in _unit_tests():
        for case in t.get("promql_expr_test", []):
            if case.get("exp_samples"):
                tested |= metric_names(case["expr"])
    assert recorded_names() - tested == set()


def test_alert_conventions():
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for a in alerts():
        name = a["alert"]
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]*)+(?:P\d+)?", name), f"{name}: not CamelCase"
        # The receiver's own normaliser, so a label it would file as "unknown" fails here.
        assert route.severity(a["labels"]) != "unknown", f"{name}: severity the receiver ignores"
        ann = a["annotations"]
        assert ann["summary"].strip(), name
        assert "{{" in ann["description"], f"{name}: description is not templated"
        assert ann["runbook_url"] == RUNBOOK_BASE + name.lower(), name


def _github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_runbook_url_points_at_an_existing_section():
    anchors = _github_anchors(RUNBOOK.read_text())
    missing = [a["alert"] for a in alerts()
               if a["annotations"]["runbook_url"].split("#", 1)[1] not in anchors]
    assert missing == []


def test_critical_error_pages_at_once():
    (crit,) = [a for a in alerts() if a["alert"] == "CriticalError"]
    assert crit["labels"]["severity"] == "critical"
    assert crit.get("for", "0m") in ("0m", "0s")
    assert 'severity="critical"' in crit["expr"]


def test_slo_target_is_set_in_one_place():
    text = "\n".join(e.expr for e in rule_exprs())
    target = [r for _, r in rules() if r.get("record") == "tailpage:slo_target:ratio"]
    assert len(target) == 1
    assert re.fullmatch(r"vector\(0\.\d+\)", target[0]["expr"].strip())
    literal = re.search(r"0\.\d+", target[0]["expr"]).group(0)
    assert text.count(literal) == 1, "the SLO target value is repeated outside its rule"
    for e in dashboard_exprs():  # the dashboards read the rule, never a copy of the value
        assert literal not in e.expr, e.where
    for a in alerts():
        if a["alert"].startswith("ErrorBudgetBurn"):
            assert "tailpage:slo_target:ratio" in a["expr"], a["alert"]


def _burn_pairs(alert: str) -> set[tuple[str, str, float]]:
    """(long window, short window, factor) of each `long > F * budget and short > F * budget`."""
    (a,) = [a for a in alerts() if a["alert"] == alert]
    cond = (r"tailpage:slo_errors_per_request:ratio_rate(\w+) > ([\d.]+)"
            r" \* scalar\(1 - tailpage:slo_target:ratio\)")
    pairs = re.findall(rf"{cond}\s+and\s+{cond}", a["expr"])
    assert all(f1 == f2 for _, f1, _, f2 in pairs), alert
    return {(long, short, float(f1)) for long, f1, short, _ in pairs}


def test_burn_rate_alerts_have_the_sre_workbook_windows_and_factors():
    # Page: 2% of a 30-day budget in 1h, 5% in 6h; ticket: 10% in 1d and in 3d. Short window 1/12.
    assert _burn_pairs("ErrorBudgetBurnFast") == {("1h", "5m", 14.4), ("6h", "30m", 6.0)}
    assert _burn_pairs("ErrorBudgetBurnSlow") == {("1d", "2h", 3.0), ("3d", "6h", 1.0)}
    severities = {a["alert"]: route.severity(a["labels"]) for a in alerts()}
    assert severities["ErrorBudgetBurnFast"] == "critical"  # pages
    assert severities["ErrorBudgetBurnSlow"] in ("medium", "low")  # a ticket, not a page


def test_dashboard_queries_are_valid_promql(tmp_path):
    exprs = dashboard_exprs()
    assert len(exprs) > 30
    run = promtool_check(exprs, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_promql_check_catches_a_broken_query(tmp_path):
    from promql_exprs import Expr

    run = promtool_check([Expr("broken", "sum by (job (rate(x[5m]))")], tmp_path)
    assert run.returncode != 0


def test_metric_scanner():
    expr = ('sum by (job, le) (rate(tailpage_request_duration_seconds_bucket{job=~"a|up"}[5m]))'
            ' / on (job) group_left () tailpage:x:ratio offset 5m > bool 1e3 unless up')
    assert metric_names(expr) == {"tailpage_request_duration_seconds_bucket",
                                  "tailpage:x:ratio", "up"}


@pytest.mark.parametrize("source", ["rules", "dashboards"])
def test_every_metric_used_is_in_the_metrics_reference(source):
    types = readme_metrics()
    assert len(types) > 20, "README metrics reference not found"
    known = set(types) | recorded_names() | PROMETHEUS_SERIES
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    unknown = {
        (e.where, name)
        for e in exprs
        for name in metric_names(e.expr)
        if base_name(name, types) not in known
    }
    assert unknown == set()
