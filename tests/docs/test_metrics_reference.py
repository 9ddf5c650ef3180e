"""docs/metrics.md against real scrapes: a real `tailpage-exporter run` following files that get
lines, errors past the series limit, a malformed line, a rotation and a truncation, and a real
`tailpage-receiver run` that accepts an alert, rejects a bad webhook and delivers to a console
channel. Every tailpage_* family scraped must be documented, in its program's section and with
its type; every documented one must be scraped.

The same two processes check the README's five-minute walk-through: its log line gives the metric
line it shows, and its webhook and ack commands get the answers it shows."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "metrics.md"
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent
DEADLINE = 60.0  # generous: the machine may be loaded

# Metrics that only exist after an event this test cannot produce cheaply: name -> the event.
# Each must still be documented. Prefer producing the event below to adding a name here.
AFTER_EVENTS: dict[str, str] = {}


def documented() -> dict[str, dict[str, str]]:
    """{"Exporter"|"Receiver": {name: type}} from the page's tables under `## Exporter...` and
    `## Receiver...` headings (a section such as "## Receiver heartbeats" counts as Receiver)."""
    out: dict[str, dict[str, str]] = {"Exporter": {}, "Receiver": {}}
    for section in re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]:
        title = section.split("\n", 1)[0].strip()
        program = next((p for p in out if title.lower().startswith(p.lower())), title)
        rows = re.findall(r"^\| `(tailpage_\w+)` \| (\w+) \|", section, flags=re.M)
        if rows:
            out.setdefault(program, {}).update(rows)
    return out


def families(text: str) -> dict[str, str]:
    """tailpage_* metric families of an exposition as the page names them: name -> type."""
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        if name.startswith("tailpage_"):
            out[name] = fam.type
    # prometheus_client's `<counter or histogram>_created` series parse as gauges of their own
    return {n: t for n, t in out.items() if not (
        n.endswith("_created") and {n[:-8], n[:-8] + "_total"} & out.keys())}


def get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def until(cond: Callable[[], bool], what: str, log: Path) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}; log:\n{log.read_text()}"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write(path: Path, *records: dict | str) -> None:
    with open(path, "a") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


@pytest.fixture(scope="module")
def exporter_scrape(tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("exporter")
    logs = tmp / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.touch()
    cfg = tmp / "exporter.yaml"
    cfg.write_text(f"""
inputs: [{{path: "{logs}/*.log"}}]
checkpoint: {{path: "{tmp}/state/checkpoints.json", interval: 200ms}}
tail: {{poll_interval: 100ms, rescan_interval: 500ms, partial_flush_timeout: 1s}}
limits: {{max_series_per_metric: 2}}
""")
    log = tmp / "exporter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([BIN / "tailpage-exporter", "run", "--config", cfg, "--listen",
                                 "127.0.0.1:0"], stdout=out, stderr=out, start_new_session=True)
    try:
        def listening() -> bool:
            assert proc.poll() is None, log.read_text()
            return "listening on http://127.0.0.1:" in log.read_text()

        until(listening, "the exporter to listen", log)
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)/metrics", log.read_text())[1]
        until(lambda: get(url + "/-/ready")[0] == 200, "/-/ready", log)

        def scrape() -> str:
            status, text = get(url + "/metrics")
            assert status == 200
            return text

        readme_line = re.search(r"^echo '(\{.*\})' >> logs/app\.log", README, re.M)
        assert readme_line, "README: the walk-through's `echo '{...}' >> logs/app.log` is gone"
        write(app, readme_line[1],  # first, so its series is within the limit of 2
              {"level": "info", "message": "request done", "component": "api",
                    "duration_ms": 42},
              '{"level": "info", "broken',  # malformed: a parse failure
              *({"level": "error", "message": "payment failed for order 17",
                 "component": c, "error_type": "PaymentDeclined"} for c in "abcd"))
        until(lambda: "tailpage_exporter_series_dropped_total{" in scrape(), "errors", log)
        os.rename(app, logs / "app.log.1")  # rename-and-create rotation
        write(app, {"level": "warn", "message": "after rotation"})
        until(lambda: "tailpage_exporter_rotations_total{" in scrape(), "a rotation", log)
        with open(app, "r+") as f:  # copytruncate
            f.truncate(0)
        until(lambda: "tailpage_exporter_truncations_total{" in scrape(), "a truncation", log)
        until(lambda: 'tailpage_exporter_checkpoint_writes_total{result="success"}' in scrape(),
              "a checkpoint", log)
        yield scrape()
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def receiver_run(tmp_path_factory) -> Iterator[dict]:
    """The receiver's scrape, its answers to the README's commands and its console output."""
    tmp = tmp_path_factory.mktemp("receiver")
    cfg = tmp / "receiver.yml"
    cfg.write_text(f"""
store: sqlite:///{tmp}/receiver.db
channels:
  console: {{url: "console://", rate_limit: {{burst: 5, per: 1m}}}}
routes:
  - match: {{}}
    channels: [console]
    escalate: [{{after: 1h, channels: [console]}}]
delivery: {{poll_interval: 50ms}}
""")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "receiver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([BIN / "tailpage-receiver", "run", "--config", cfg, "--listen",
                                 f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        until(lambda: proc.poll() is None and get(base + "/-/ready")[0] == 200, "/-/ready", log)
        alert = (REPO / "tests" / "receiver" / "payloads" / "firing.json").read_bytes()
        json_type = {"Content-Type": "application/json"}
        answers = [get(base + "/alerts", alert, json_type) for _ in range(2)]  # then a duplicate
        assert get(base + "/alerts", b"{not json", json_type)[0] == 400  # a rejection
        until(lambda: 'tailpage_receiver_notifications_total{channel="console",result="success"}'
              in get(base + "/metrics")[1], "a delivery", log)
        ack = re.search(r"curl -s -XPOST '127\.0\.0\.1:9097(/api/v1/alerts/\w+/ack\?by=\w+)'",
                        README)
        assert ack, "README: the walk-through's ack command is gone"
        acked = get(base + ack[1], b"")
        yield {"scrape": get(base + "/metrics")[1], "answers": answers, "ack": acked, "log": log}
    finally:
        stop(proc)


def test_every_scraped_metric_is_documented_and_every_documented_one_is_scraped(
        exporter_scrape, receiver_run):
    docs = documented()
    assert docs["Exporter"] and docs["Receiver"], f"{PAGE}: no '## Exporter'/'## Receiver' table"
    scraped = {"Exporter": families(exporter_scrape), "Receiver": families(receiver_run["scrape"])}
    all_documented = {n for rows in docs.values() for n in rows}
    problems = []
    for program, names in scraped.items():
        rows = docs.get(program, {})
        for name, kind in sorted(names.items()):
            if name not in all_documented:
                problems.append(f"scraped from the {program.lower()} but not documented in "
                                f"docs/metrics.md (add a row under '## {program}'): {name}")
            elif name not in rows:
                problems.append(f"scraped from the {program.lower()} but documented under "
                                f"another section of docs/metrics.md: {name}")
            elif rows[name] != kind:
                problems.append(f"docs/metrics.md says {name} is a {rows[name]}, "
                                f"the {program.lower()} exposes a {kind}")
    for program, rows in docs.items():
        for name in sorted(rows):
            if name in scraped.get(program, {}) or name in AFTER_EVENTS:
                continue
            problems.append(f"documented under '## {program}' in docs/metrics.md but not in the "
                            f"{program.lower()}'s scrape: {name}")
    assert not problems, "\n".join(problems)


def test_metrics_only_seen_after_events_are_documented():
    names = {n for rows in documented().values() for n in rows}
    missing = sorted(set(AFTER_EVENTS) - names)
    assert not missing, f"AFTER_EVENTS names not documented in docs/metrics.md: {missing}"


def test_readme_walkthrough_line_gives_the_metric_line_it_shows(exporter_scrape):
    shown = re.findall(r"^(tailpage_errors_total\{.*\}) (\S+)$", README, re.M)
    assert len(shown) == 1, "README: the walk-through's tailpage_errors_total line is gone"
    scraped = dict(ln.rsplit(" ", 1) for ln in exporter_scrape.splitlines()
                   if ln.startswith("tailpage_errors_total{"))
    assert scraped.get(shown[0][0]) == shown[0][1], (shown, scraped)


def test_readme_walkthrough_webhook_and_ack_answer_as_shown(receiver_run):
    said = re.findall(r"# (\{\"accepted\": \d+, \"duplicates\": \d+\})", README)
    assert said, "README: the walk-through's webhook answer is gone"
    first, again = (json.loads(body) for status, body in receiver_run["answers"])
    assert json.loads(said[0]) == first
    dup = re.search(r'\(`"duplicates": (\d+)`\)', README)
    assert dup and again == {"accepted": 0, "duplicates": int(dup[1])}, again
    assert receiver_run["ack"][0] == 200, receiver_run["ack"]
    shown = re.search(r"The console channel prints `([^`]+)`", README)
    assert shown and shown[1] in receiver_run["log"].read_text()
