"""The rendered containers run: the receiver with the chart's config and Secret answers its probes,
takes Alertmanager's webhook with the token the AlertmanagerConfig uses and delivers through a
channel URL from the chart's Secret; the demo pod's app and exporter sidecar, wired by the named
templates, count the app's errors. All on loopback (see podrun.py for what is mapped)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import pytest
from helmkit import ALL_ON, CHART, NAMESPACE, RELEASE, one
from podrun import BIN, http_get, prepare, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

RECEIVER = f"{RELEASE}-tailpage-receiver"
AMC = f"{RELEASE}-tailpage"  # the main AlertmanagerConfig; {AMC}-heartbeat is the heartbeat's
DEMO = f"{RELEASE}-tailpage-demo"
WEBHOOK = {
    "version": "4", "status": "firing", "receiver": "tailpage", "groupKey": "{}:{}",
    "groupLabels": {"alertname": "CriticalError"}, "commonLabels": {}, "commonAnnotations": {},
    "externalURL": "http://alertmanager.example:9093",
    "alerts": [{
        "status": "firing", "fingerprint": "1f2e3d4c5b6a7980",
        "labels": {"alertname": "CriticalError", "severity": "critical", "component": "payments"},
        "annotations": {"summary": "Critical error in payments (DatabaseConnectionError)"},
        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph"}],
}


class Sink(ThreadingHTTPServer):
    """A channel endpoint on loopback: apprise's json:// posts each notification here."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def post(url: str, body: dict[str, Any], token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_receiver_runs_as_rendered_and_pages_with_the_charts_secrets(render, sink, tmp_path):
    values = copy.deepcopy(ALL_ON)
    values["receiver"]["channels"] = {"ops": {"url": f"json://127.0.0.1:{sink.server_port}/hook"}}
    values["receiver"]["routes"] = [{"match": {"severity": "critical"}, "channels": ["ops"]}]
    docs = render(values)
    pod = prepare(docs, RECEIVER, "receiver", tmp_path)
    hook = one(docs, "AlertmanagerConfig", AMC)["spec"]["receivers"][0]["webhookConfigs"][0]
    cred = hook["httpConfig"]["authorization"]["credentials"]
    token = (pod.paths["/etc/tailpage/secrets"] / cred["key"]).read_text()
    assert token == "sekret-token"
    with pod.running(tmp_path):
        try:
            for probe, url in pod.probe_urls().items():
                wait_for(f"{probe} {url}", lambda u=url: http_get(u)[0] == 200, 60)
        except AssertionError:
            print(pod.log.read_text()[-3000:])
            raise
        url = pod.url("http", urlsplit(hook["url"]).path)
        assert post(url, WEBHOOK, None) == 401
        assert post(url, WEBHOOK, "not-the-token") == 401
        assert post(url, WEBHOOK, token) == 200
        wait_for("the notification at the channel", lambda: sink.bodies, 30)
    (body,) = sink.bodies
    assert "Critical error in payments" in json.dumps(body)
    assert "sekret" not in pod.log.read_text()  # no secret in the receiver's log


def test_notes_routes_command_works_on_the_rendered_config(render, tmp_path):
    docs = render(ALL_ON)
    pod = prepare(docs, RECEIVER, "receiver", tmp_path)
    with helm_python.Chart.load(CHART) as chart:
        notes = chart.render(ALL_ON, name=RELEASE, namespace=NAMESPACE)[
            "tailpage/templates/NOTES.txt"]
    (cmd,) = re.findall(r"-- (tailpage-receiver routes .+)$", notes, flags=re.M)
    args = [pod.local(a) for a in cmd.split()[1:]]
    out = subprocess.run([str(BIN / "tailpage-receiver"), *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # ALL_ON routes critical to pagerduty and slack, escalating to pagerduty after 15m.
    assert "pagerduty" in out.stdout and "slack" in out.stdout
    assert "escalate 1: after 900s" in out.stdout


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name]


def test_demo_pod_counts_its_apps_errors(render, tmp_path):
    values = copy.deepcopy(ALL_ON)
    values["demo"]["linesPerSecond"] = 100  # an error every 0.1s, the critical one every 0.5s
    docs = render(values)
    volumes: dict[str, Path] = {}  # the pod's shared volumes
    exporter = prepare(docs, DEMO, "tailpage-exporter", tmp_path, volumes)
    app = prepare(docs, DEMO, "app", tmp_path, volumes)
    assert exporter.paths["/var/log/app"] == app.paths["/var/log/app"]  # the shared emptyDir
    with exporter.running(tmp_path):
        for probe, url in exporter.probe_urls().items():
            wait_for(f"{probe} {url}", lambda u=url: http_get(u)[0] == 200, 60)
        with app.running(tmp_path):
            metrics = exporter.url("tailpage", "/metrics")

            def all_kinds() -> dict[str, str]:
                """error_type -> severity, once all three kinds the demo writes are counted."""
                kinds = {labels["error_type"]: labels["severity"] for labels, _ in
                         _samples(http_get(metrics)[1], "tailpage_errors_total")}
                return kinds if len(kinds) >= 3 else {}

            try:
                kinds = wait_for("every kind of demo error counted", all_kinds, 60)
            except AssertionError:
                print(exporter.log.read_text()[-3000:], app.log.read_text()[-3000:])
                raise
    # As values.yaml promises: errors of several severities, one kind critical (it pages).
    assert kinds == {"TimeoutError": "medium", "ValidationError": "low",
                     "DatabaseConnectionError": "critical"}
    assert (exporter.paths["/var/lib/tailpage"] / "exporter-checkpoints.json").exists()
