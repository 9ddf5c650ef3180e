"""Every metric (and label) the rules and dashboards read is one the real programs export.

The exporter's line metrics come from `tailpage-exporter oneshot` on a small log written here; its
live-mode metrics are checked against a running `tailpage-exporter run` in
test_prometheus_integration.py. The receiver's come from its real metrics object.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promql_exprs import (
    PROMETHEUS_SERIES,
    REPO,
    base_name,
    dashboard_exprs,
    metric_names,
    readme_metrics,
    recorded_names,
    rule_exprs,
)

EXPORTER = Path(sys.executable).with_name("tailpage-exporter")
TARGET_LABELS = {"job", "instance", "namespace", "pod"}


def used_metrics() -> set[str]:
    types = readme_metrics()
    names = set()
    for e in rule_exprs() + dashboard_exprs():
        names |= {base_name(n, types) for n in metric_names(e.expr)}
    return names - recorded_names() - PROMETHEUS_SERIES


def exposed(text: str) -> set[str]:
    """Metric names in an exposition; counters with _total whether or not they have samples."""
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name + "_total" if fam.type == "counter" else fam.name)
        names |= {s.name for s in fam.samples}
    return names


def readme_rows() -> dict[str, tuple[str, set[str], bool]]:
    """name -> (type, labels, live-mode only) from the metrics reference (docs/metrics.md)."""
    text = (REPO / "docs" / "metrics.md").read_text()
    rows = {}
    for name, kind, labels, what in re.findall(
            r"^\| `(tailpage_\w+)` \| (\w+) \| ([^|]*) \| ([^|]*) \|", text, flags=re.M):
        rows[name] = (kind, set(re.findall(r"\w+", labels)), "live mode" in what)
    return rows


def test_every_used_label_is_in_the_metrics_reference():
    rows = readme_rows()
    types = {n: r[0] for n, r in rows.items()}
    bad = set()
    for e in rule_exprs() + dashboard_exprs():
        if "ALERTS" in metric_names(e.expr):
            continue  # Prometheus' own series: the alert's labels, any of them
        allowed = set(TARGET_LABELS)
        for name in metric_names(e.expr):
            base = base_name(name, types)
            if base in rows:
                allowed |= rows[base][1] | ({"le"} if name.endswith("_bucket") else set())
        for name in re.findall(r"\b(by|without|on|ignoring)\s*\(([^)]*)\)", e.expr):
            used = set(re.findall(r"\w+", name[1]))
            bad |= {(e.where, label) for label in used - allowed}
        for sel in re.findall(r"\b(tailpage_\w+)\{([^}]*)\}", e.expr):
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", sel[1]))
            bad |= {(e.where, label) for label in used - allowed}
    assert bad == set()


SAMPLE_LOG = [
    {"level": "info", "message": "request completed", "component": "api", "duration_ms": 12.5},
    {"level": "warn", "message": "slow query on table orders", "component": "db",
     "duration_ms": 900},
    {"level": "error", "message": "upstream timeout after 3000ms calling /v1/classify",
     "error_type": "TimeoutError", "component": "search", "duration_ms": 3000},
    {"level": "error", "message": "invalid field 'email' for user 17",
     "error_type": "ValidationError", "component": "auth", "duration_ms": 3},
    {"level": "fatal", "message": "database connection failed: host db-1.internal port 5432",
     "error_type": "DatabaseConnectionError", "component": "payments", "duration_ms": 5000},
]


def test_exporter_oneshot_exports_every_line_metric_used(tmp_path):
    log = tmp_path / "app.log"
    lines = [json.dumps(r) for r in SAMPLE_LOG] + ["{not json at all", "\x00\x01binary"]
    log.write_text("\n".join(lines) + "\n")
    # A series limit of 1 makes the second component fold into __other__, so the
    # series-dropped counter has a sample too.
    config = tmp_path / "exporter.yaml"
    config.write_text("limits:\n  max_series_per_metric: 1\n")
    run = subprocess.run([str(EXPORTER), "oneshot", "--config", str(config), str(log)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    names = exposed(run.stdout)
    rows = readme_rows()
    line_metrics = {n for n in used_metrics() if n in rows and not rows[n][2]
                    and not n.startswith("tailpage_receiver_")}
    assert "tailpage_errors_total" in line_metrics
    assert line_metrics - names == set()


def test_receiver_exports_every_receiver_metric_used():
    from receiver.metrics import Metrics

    metrics = Metrics()
    metrics.init_channels(["slack"])
    names = exposed(generate_latest(metrics.registry).decode())
    used = {n for n in used_metrics() if n.startswith("tailpage_receiver_")}
    assert "tailpage_receiver_notifications_total" in used
    assert used - names == set()
