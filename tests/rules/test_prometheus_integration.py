"""The rules and dashboards against a real Prometheus (Debian 2.42) scraping a real
`tailpage-exporter run` that tails a log being written, with a real Alertmanager (Debian 0.25)
sending the alerts to a real `tailpage-receiver run`, so the receiver's panels are fed too.

Checks through Prometheus' HTTP API: every rule loads and evaluates without error; CriticalError
stays quiet for info, warn and non-critical error lines and fires for one fatal line; every
dashboard query (and variable) returns data. A second exporter with a series limit of 1 makes the
series-dropped counter exist; the receiver's route escalates after 1s so the escalation counter
does. The rule files are loaded as they are except that each group's `interval` is dropped, so
the 2-minute long-window group is evaluated every second like the others. Runs in about 15 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from promql_exprs import (
    RULE_FILES,
    base_name,
    concrete,
    dashboard_exprs,
    dashboards,
    metric_names,
    panels,
    readme_metrics,
    rule_groups,
)

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# Grafana's variables for a Prometheus scraping every second: rate windows of 15 s hold 15 samples.
DURATIONS = {"__rate_interval": "15s", "__interval": "1s", "__range": "5m"}
INFO = {"level": "info", "message": "request completed", "method": "GET", "status": 200}
FATAL = {"level": "fatal", "message": "database connection failed: host db-1.internal port 5432",
         "error_type": "DatabaseConnectionError", "component": "payments", "duration_ms": 5000.0}
ERRORS = [
    {"level": "error", "message": "upstream timeout after 3000ms calling /v1/classify",
     "error_type": "TimeoutError", "component": "search", "duration_ms": 3000.0},
    {"level": "error", "message": "invalid field 'email' for user 42",
     "error_type": "ValidationError", "component": "auth", "duration_ms": 4.0},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            last = check()
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


@contextlib.contextmanager
def process(args: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                             start_new_session=True)
    try:
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


class Writer(threading.Thread):
    """Appends info/warn request lines (with durations, several components) until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            with self.path.open("a") as f:
                for comp in ("api", "payments", "search", "auth"):
                    n += 1
                    rec = {**INFO, "component": comp, "request_id": f"req_{n:08x}",
                           "duration_ms": float(n % 300)}
                    if n % 10 == 0:
                        rec.update(level="warn", message="slow query on table orders")
                    f.write(json.dumps(rec) + "\n")
            self.stop.wait(0.1)

    def append(self, records: list[dict | str]) -> None:
        """Records as JSON lines; strings as they are (malformed lines)."""
        with self.path.open("a") as f:
            f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> dict | list:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = json.loads(get(f"{self.base}/api/v1/{path}{query}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


def rules_for_the_test(dest: Path) -> list[Path]:
    """rules/*.yml as they are, minus per-group `interval` (everything every second)."""
    out = []
    for f in RULE_FILES:
        doc = yaml.safe_load(f.read_text())
        for g in doc["groups"]:
            g.pop("interval", None)
        (dest / f.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(dest / f.name)
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom-integration")
    (tmp / "rules").mkdir()
    log, small_log = tmp / "app.log", tmp / "small.log"
    log.touch()
    # Two components' errors for an exporter allowed one label set per metric: one is folded.
    small_log.write_text("".join(json.dumps(r) + "\n" for r in ERRORS))
    exporter_port, small_port = free_port(), free_port()
    receiver_port, am_port, prom_port = free_port(), free_port(), free_port()
    (tmp / "exporter.yaml").write_text(yaml.safe_dump({
        "inputs": [{"path": str(log), "start_at": "beginning"}],
        "checkpoint": {"path": str(tmp / "checkpoints.json"), "interval": "1s"},
        "tail": {"poll_interval": "100ms", "rescan_interval": "1s"},
    }))
    (tmp / "small.yaml").write_text(yaml.safe_dump({
        "inputs": [{"path": str(small_log), "start_at": "beginning"}],
        "checkpoint": {"path": str(tmp / "small-checkpoints.json"), "interval": "1s"},
        "limits": {"max_series_per_metric": 1},
    }))
    (tmp / "receiver.yaml").write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{receiver_port}",
        "store": f"sqlite:///{tmp / 'receiver.db'}",
        "channels": {"console": {"url": "console://"}},
        "routes": [{"channels": ["console"],
                    "escalate": [{"after": "1s", "channels": ["console"]}]}],
        "delivery": {"poll_interval": "200ms"},
        "escalation": {"poll_interval": "200ms"},
    }))
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "tailpage", "group_by": ["alertname"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "tailpage", "webhook_configs": [{
            "url": f"http://127.0.0.1:{receiver_port}/alerts", "send_resolved": True}]}],
    }))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rules_for_the_test(tmp / "rules")],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "app", "static_configs": [
                {"targets": [f"127.0.0.1:{exporter_port}"],
                 "labels": {"namespace": "shop", "pod": "app-1"}},
                {"targets": [f"127.0.0.1:{small_port}"],
                 "labels": {"namespace": "shop", "pod": "app-2"}}]},
            {"job_name": "tailpage-receiver", "static_configs": [{
                "targets": [f"127.0.0.1:{receiver_port}"],
                "labels": {"namespace": "tailpage", "pod": "tailpage-receiver-0"}}]},
        ],
    }))
    outputs = ("exporter.out", "small.out", "receiver.out", "alertmanager.out", "prometheus.out")
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(
            [str(BIN / "tailpage-exporter"), "run", "--config", str(tmp / "exporter.yaml"),
             "--listen", f"127.0.0.1:{exporter_port}"], tmp / "exporter.out", tmp))
        stack.enter_context(process(
            [str(BIN / "tailpage-exporter"), "run", "--config", str(tmp / "small.yaml"),
             "--listen", f"127.0.0.1:{small_port}"], tmp / "small.out", tmp))
        stack.enter_context(process(
            [str(BIN / "tailpage-receiver"), "run", "--config", str(tmp / "receiver.yaml")],
            tmp / "receiver.out", tmp))
        stack.enter_context(process(
            ["prometheus-alertmanager", f"--config.file={tmp / 'alertmanager.yml'}",
             f"--storage.path={tmp / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
             "--cluster.listen-address="], tmp / "alertmanager.out", tmp))
        stack.enter_context(process(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], tmp / "prometheus.out", tmp))
        writer = Writer(log)
        writer.start()
        stack.callback(writer.join, 5)
        stack.callback(writer.stop.set)
        prom = Prometheus(prom_port)
        try:
            wait_for("exporter ready", lambda: get(
                f"http://127.0.0.1:{exporter_port}/-/ready"), 30)
            wait_for("Prometheus to see info lines", lambda: prom.query(
                'sum(tailpage_log_lines_total{job="app",level="info"}) > 20'), 60)
            yield prom, writer, f"http://127.0.0.1:{exporter_port}/metrics"
        except BaseException:
            for name in outputs:
                print(f"--- {name}\n{(tmp / name).read_text()[-3000:]}")
            raise


def test_every_rule_loads_and_evaluates(stack):
    prom, _, _ = stack

    def evaluated() -> list:
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return groups if all(r["health"] == "ok" for r in rules) else []

    groups = wait_for("every rule evaluated", evaluated, 30)
    assert {g["name"] for g in groups} == {g["name"] for _, g in rule_groups()}
    errors = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
              if r["health"] == "err"]
    assert errors == []


def test_critical_error_quiet_for_info_and_error_lines_then_fires_for_one_fatal_line(stack):
    prom, writer, _ = stack
    # Info and warn lines have flowed for a while and the rules have been evaluated on them.
    lines = prom.query('sum(tailpage_log_lines_total{job="app"})')
    assert float(lines[0]["value"][1]) > 20
    # Errors that are not critical (the second exporter's) are counted, and do not page either.
    wait_for("non-critical errors scraped",
             lambda: prom.query('tailpage_errors_total{severity!="critical"}'), 20)
    time.sleep(3)
    assert prom.alerts("CriticalError") == []
    assert prom.query('tailpage_errors_total{severity="critical"}') == []

    writer.append([FATAL])
    fired = wait_for("CriticalError firing", lambda: [
        a for a in prom.alerts("CriticalError") if a["state"] == "firing"], 20)
    (alert,) = fired
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["component"] == "payments"
    assert alert["labels"]["error_type"] == "DatabaseConnectionError"
    assert alert["labels"]["namespace"] == "shop"
    assert alert["annotations"]["runbook_url"].endswith("#criticalerror")
    assert "payments" in alert["annotations"]["summary"]


def test_exporter_serves_every_live_metric_used(stack):
    _, _, metrics_url = stack
    text = get(metrics_url)
    exposed = set()
    for fam in text_string_to_metric_families(text):
        exposed.add(fam.name + "_total" if fam.type == "counter" else fam.name)
        exposed |= {s.name for s in fam.samples}
    types = readme_metrics()
    used = set()
    for _, d in dashboards():
        for p in panels(d):
            used |= {base_name(n, types) for t in p.get("targets", [])
                     for n in metric_names(t["expr"])}
    live = {n for n in used if n.startswith("tailpage_exporter_")}
    assert "tailpage_exporter_lag_bytes" in live
    assert live - exposed == set()


def _selectors(expr: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"\b(?:tailpage[_:][\w:]+|up|ALERTS)(?:\{[^}]*\})?",
                                            expr)]


def test_every_dashboard_query_returns_data(stack):
    prom, writer, _ = stack
    # Errors and a fatal line, so the error panels have series; CriticalError makes ALERTS and,
    # through Alertmanager, the receiver's alert, notification and escalation series; a malformed
    # line for the parse-failure panel.
    writer.append([*ERRORS * 5, FATAL, '{"level": "error", "message": truncated'])
    for what, expr in [
        ("errors scraped", 'sum(tailpage_errors_total{component="search"}) >= 5'),
        ("CriticalError in ALERTS", 'ALERTS{alertname="CriticalError",alertstate="firing"}'),
        ("the receiver got the alert from Alertmanager",
         'tailpage_receiver_alerts_received_total{status="firing"} > 0'),
        ("a console notification", 'tailpage_receiver_notifications_total{result="success"} > 0'),
        ("an escalation step", "tailpage_receiver_escalations_total > 0"),
        ("a label set folded by the series limit", "tailpage_exporter_series_dropped_total > 0"),
        ("the long-window rules", "tailpage:slo_error_budget_remaining:ratio_30d"),
    ]:
        wait_for(what, lambda e=expr: prom.query(e), 45)
    queries = [(f"{f.name}: {p['title']} {t['refId']}", concrete(t["expr"], DURATIONS))
               for f, d in dashboards() for p in panels(d) for t in p.get("targets", [])]
    queries += [(e.where, e.expr) for e in dashboard_exprs(DURATIONS) if " variable " in e.where]
    assert len(queries) > 45

    def empty() -> list[tuple[str, str]]:
        return [(where, expr) for where, expr in queries if not prom.query(expr)]

    # A counter born a moment ago needs two scrapes inside the rate window: poll, do not sleep.
    try:
        wait_for("every dashboard query to return data", lambda: not empty(), 30)
    except AssertionError:
        missing = {where: [s for s in _selectors(expr) if not prom.query(s)]
                   for where, expr in empty()}
        pytest.fail(f"queries without data (series they read that have none): {missing}")
