"""The rules and dashboards against a real Prometheus (Debian 2.42) scraping a real
`tailpage-exporter run` that tails a log being written (and a real receiver, so its panels are
checked too).

Checks through Prometheus' HTTP API: every rule loads and evaluates without error; CriticalError
stays quiet while only info/warn lines are written and fires for one fatal line; every dashboard
query returns data where the series it reads have data. Runs in about 30 s.
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom-integration")
    log = tmp / "app.log"
    log.touch()
    exporter_port, receiver_port, prom_port = free_port(), free_port(), free_port()
    (tmp / "exporter.yaml").write_text(yaml.safe_dump({
        "inputs": [{"path": str(log), "start_at": "beginning"}],
        "checkpoint": {"path": str(tmp / "checkpoints.json"), "interval": "1s"},
        "tail": {"poll_interval": "100ms", "rescan_interval": "1s"},
    }))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in RULE_FILES],
        "scrape_configs": [
            {"job_name": "app", "static_configs": [{
                "targets": [f"127.0.0.1:{exporter_port}"],
                "labels": {"namespace": "shop", "pod": "app-1"}}]},
            {"job_name": "tailpage-receiver", "static_configs": [{
                "targets": [f"127.0.0.1:{receiver_port}"],
                "labels": {"namespace": "tailpage", "pod": "tailpage-receiver-0"}}]},
        ],
    }))
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(
            [str(BIN / "tailpage-exporter"), "run", "--config", str(tmp / "exporter.yaml"),
             "--listen", f"127.0.0.1:{exporter_port}"], tmp / "exporter.out", tmp))
        stack.enter_context(process(
            [str(BIN / "tailpage-receiver"), "run", "--listen", f"127.0.0.1:{receiver_port}"],
            tmp / "receiver.out", tmp))
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
                f"http://127.0.0.1:{exporter_port}/-/ready"), 20)
            wait_for("Prometheus to see info lines", lambda: prom.query(
                'sum(tailpage_log_lines_total{job="app",level="info"}) > 20'), 30)
        except AssertionError:
            for name in ("exporter.out", "receiver.out", "prometheus.out"):
                print(f"--- {name}\n{(tmp / name).read_text()[-3000:]}")
            raise
        yield prom, writer, f"http://127.0.0.1:{exporter_port}/metrics"


def test_every_rule_loads_and_evaluates(stack):
    prom, _, _ = stack

    def evaluated() -> list:
        groups = prom.api("rules")["groups"]
        short = [r for g in groups if g["interval"] <= 1 for r in g["rules"]]
        return groups if all(r["health"] == "ok" for r in short) else []

    groups = wait_for("every 1s rule evaluated", evaluated, 15)
    assert {g["name"] for g in groups} == {g["name"] for _, g in rule_groups()}
    errors = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
              if r["health"] == "err"]
    assert errors == []


def test_critical_error_quiet_for_info_lines_then_fires_for_one_fatal_line(stack):
    prom, writer, _ = stack
    # Info and warn lines have flowed for a while and the rules have been evaluated on them.
    lines = prom.query('sum(tailpage_log_lines_total{job="app"})')
    assert float(lines[0]["value"][1]) > 20
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
    # Errors and a fatal line, so the error panels have series; CriticalError makes ALERTS; a
    # malformed line for the parse-failure panel.
    writer.append([*ERRORS * 5, FATAL, '{"level": "error", "message": truncated'])
    wait_for("errors scraped", lambda: prom.query(
        'sum(tailpage_errors_total{component="search"}) >= 5'), 15)
    wait_for("CriticalError in ALERTS", lambda: prom.query(
        'ALERTS{alertname="CriticalError",alertstate="firing"}'), 20)
    time.sleep(2)
    checked, no_data, empty = [], [], []
    for f, d in dashboards():
        for p in panels(d):
            for t in p.get("targets", []):
                expr = concrete(t["expr"], DURATIONS)
                where = f"{f.name}: {p['title']} {t['refId']}"
                missing = [s for s in _selectors(expr) if not prom.query(s)]
                if missing:
                    no_data.append((where, missing))
                    continue
                checked.append(where)
                if not prom.query(expr):
                    empty.append((where, expr))
    for e in dashboard_exprs(DURATIONS):
        if " variable " in e.where and not prom.query(e.expr):
            empty.append((e.where, e.expr))
    print(f"{len(checked)} queries returned data; no data to read for: {no_data}")
    assert empty == []
    # Only series that need rare events (dropped series, escalations...) or the 2-minute
    # long-window group may be missing: most panels must really have been checked.
    assert len(checked) >= 45, no_data
