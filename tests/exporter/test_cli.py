"""The installed `tailpage-exporter` console script, run as a real process: oneshot (stdout only,
progress bar only on a terminal), explain (argument and stdin), check-config (exit 2 with file,
key path and what was expected)."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from exporter_helpers import samples
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)

EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
TIMEOUT = 120  # generous: the CI machine is small and shared


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert EXE, "tailpage-exporter is not installed in the venv"
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def write_log(path: Path) -> Path:
    recs = [
        {"level": "info", "message": "request completed", "component": "api",
         "duration_ms": 12.5},
        {"level": "warn", "message": "slow query", "component": "db", "duration_ms": 900},
        {"level": "error", "message": "payment processing failed for order 7",
         "component": "payments", "error_type": "PaymentDeclined", "request_id": "req_1"},
        {"level": "fatal", "message": "out of memory", "component": "worker"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "oops {\n")
    return path


# ---- oneshot ------------------------------------------------------------------------------

def test_oneshot_prints_prometheus_text(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log")
    r = cli("oneshot", str(log))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    v = samples(r.stdout)
    assert v[("tailpage_log_lines_total", (("level", "info"),))] == 1
    assert v[("tailpage_log_lines_total", (("level", "warning"),))] == 1
    assert v[("tailpage_errors_total", (("category", "payment"), ("component", "payments"),
                                        ("error_type", "PaymentDeclined"), ("level", "error"),
                                        ("severity", "critical")))] == 1
    assert v[("tailpage_exporter_parse_failures_total", (("reason", "invalid_json"),))] == 1
    assert v[("tailpage_request_duration_seconds_count", (("component", "db"),))] == 1


def test_oneshot_several_files_add_up(tmp_path: Path) -> None:
    a = write_log(tmp_path / "a.log")
    b = write_log(tmp_path / "b.log")
    v = samples(cli("oneshot", str(a), str(b)).stdout)
    assert v[("tailpage_log_lines_total", (("level", "fatal"),))] == 2


def test_oneshot_openmetrics_has_exemplars(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log")
    r = cli("oneshot", "--openmetrics", str(log))
    assert r.returncode == 0, r.stderr
    fam = next(f for f in om_families(r.stdout) if f.name == "tailpage_errors")
    ex = [s.exemplar for s in fam.samples if s.labels["component"] == "payments"]
    assert ex[0].labels == {"trace_id": "req_1"}


def test_oneshot_format_and_config(tmp_path: Path) -> None:
    log = tmp_path / "app.txt"
    log.write_text('level=error msg="connection refused" component=db\n'
                   "level=info msg=ok component=db took=15\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rules:\n  - name: db-down\n    when: {component: '^db$', message: refused}\n"
                   "    severity: critical\n    category: database\n")
    r = cli("oneshot", "--config", str(cfg), "--format", "logfmt", str(log))
    assert r.returncode == 0, r.stderr
    v = samples(r.stdout)
    assert v[("tailpage_errors_total", (("category", "database"), ("component", "db"),
                                        ("error_type", "unknown"), ("level", "error"),
                                        ("severity", "critical")))] == 1
    assert v[("tailpage_request_duration_seconds_sum", (("component", "db"),))] == 0.015


def test_oneshot_missing_file_exit_1_but_prints_the_rest(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log")
    r = cli("oneshot", str(tmp_path / "nope.log"), str(log))
    assert r.returncode == 1
    assert "nope.log" in r.stderr
    assert samples(r.stdout)[("tailpage_log_lines_total", (("level", "info"),))] == 1


# Lines that once made oneshot exit 1 with a traceback (and the live `run` die), each between
# good lines: the file's good lines as the counts they must give.
HOSTILE = {
    "huge-duration": ([b'{"level":"info","component":"api","duration_ms":1' + b"0" * 399 + b"}"],
                      {"info": 3}, {}),
    "unicode-digit-level": (['{"level":"²","msg":"x"}'.encode()], {"info": 2, "unknown": 1}, {}),
    "glued-then-blank": ([b'{"level":"error","msg":"x"}{"x":1}', b""], {"info": 2},
                         {"invalid_json": 1}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_oneshot_counts_the_good_lines_around_a_hostile_one(tmp_path: Path, case: str) -> None:
    bad, want_levels, want_failures = HOSTILE[case]
    log = tmp_path / "app.log"
    log.write_bytes(b"\n".join([b'{"level":"info","msg":"a","component":"api","duration_ms":5}',
                                *bad, b'{"level":"info","msg":"b"}']) + b"\n")
    r = cli("oneshot", str(log))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    v = samples(r.stdout)
    assert {dict(lbl)["level"]: n for (name, lbl), n in v.items()
            if name == "tailpage_log_lines_total" and n} == want_levels
    assert {dict(lbl)["reason"]: n for (name, lbl), n in v.items()
            if name == "tailpage_exporter_parse_failures_total"} == want_failures
    assert v[("tailpage_request_duration_seconds_count", (("component", "api"),))] == 1


def test_oneshot_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    log = write_log(tmp_path / "app.log")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([EXE, "oneshot", str(log)], stdout=subprocess.PIPE,
                              stderr=secondary, timeout=TIMEOUT, check=False)
        os.close(secondary)
        secondary = -1
        err = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert proc.returncode == 0
    assert b"100%" in err and b"#" in err
    assert b"100%" not in proc.stdout  # the exposition stays clean
    assert b"tailpage_log_lines_total" in proc.stdout


# ---- explain ------------------------------------------------------------------------------

LINE = json.dumps({"level": "ERROR", "message": "payment processing failed for user "
                   "ann@example.com order 31", "component": "payments",
                   "err": {"type": "CardError"}, "trace_id": "abc", "duration_ms": 250})


def test_explain_one_line() -> None:
    r = cli("explain", LINE)
    assert r.returncode == 0, r.stderr
    out = dict(row.split(":", 1) for row in r.stdout.splitlines() if ":" in row)
    out = {k.strip(): v.strip() for k, v in out.items()}
    assert out["level"] == "error"
    assert out["severity"] == "critical" and out["category"] == "payment"
    assert out["severity_rule"] == "payment-failed"
    assert out["error_type"] == "CardError"
    assert out["duration_seconds"] == "0.25"
    assert len(out["fingerprint"]) == 12
    assert out["normalized_message"] == \
        "payment processing failed for user <email> order <n>"
    assert '"component": "payments"' in out["labels"]


def test_explain_stdin_json_each_line() -> None:
    stdin = LINE + "\n" + 'level=warn msg="disk 91% full"\n' + "\x00garbage\n"
    r = cli("explain", "--json", stdin=stdin)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 3
    assert rows[0]["labels"]["tailpage_errors_total"]["severity"] == "critical"
    assert rows[0]["fingerprint"] == rows[0]["labels"][
        "tailpage_errors_by_fingerprint_total"]["fingerprint"]
    assert rows[1]["format"] == "logfmt" and rows[1]["level"] == "warning"
    assert "severity" not in rows[1]
    assert rows[2]["level"] == "unknown"


def test_explain_with_config_names_the_rule(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rules:\n  - name: big-refund\n    when:\n      field: {path: amount, gt: 100}\n"
                   "    severity: high\n    category: payment\n")
    r = cli("explain", "--config", str(cfg), "--json",
            json.dumps({"level": "error", "msg": "refund", "amount": 500}))
    row = json.loads(r.stdout)
    assert (row["severity"], row["category"], row["severity_rule"]) == \
        ("high", "payment", "big-refund")


# ---- check-config -------------------------------------------------------------------------

def test_check_config_ok(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("format: json\nlimits: {max_series_per_metric: 100}\nmetrics:\n"
                   "  - {name: orders_total, type: counter, labels: {outcome: outcome}}\n")
    r = cli("check-config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


@pytest.mark.parametrize(("text", "key_path", "expected"), [
    ("rules:\n  - name: x\n    when: {message: a}\n    severity: urgent\n",
     "rules[0].severity", "'critical', 'high', 'medium', 'low'"),
    ("limits:\n  max_series_per_metric: lots\n", "limits.max_series_per_metric", "integer"),
    ("metrics:\n  - {name: m, type: histogram}\n", "metrics[0]", "'value' is a required"),
    ("rules:\n  - name: x\n    when: {message: 'a('}\n    severity: high\n",
     "rules[0].when.message", "a valid regular expression"),
    ("rules:\n  - name: x\n    when: {duration_over: 5 seconds}\n    severity: high\n",
     "rules[0].when.duration_over", 'a duration such as "250ms"'),
    ("checkpoint: {interval: 5}\n", "checkpoint.interval", 'a duration such as "250ms"'),
    ("listen: localhost\n", "listen", "HOST:PORT to serve /metrics on"),
    ("listen: ':99999'\n", "listen", "a port from 0 to 65535, got 99999"),
    ("colour: blue\n", "(top)", "known keys:"),
    ("rules: [\n", "line 2", "valid YAML"),
])
def test_check_config_errors(tmp_path: Path, text: str, key_path: str, expected: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    r = cli("check-config", str(cfg))
    assert r.returncode == 2
    assert r.stdout == ""
    first = r.stderr.strip().splitlines()[0]
    assert f"{cfg}: {key_path}" in first, first
    assert expected in first, first


def test_check_config_missing_file(tmp_path: Path) -> None:
    r = cli("check-config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2
    assert "none.yaml" in r.stderr and "readable file" in r.stderr


def test_bad_config_stops_oneshot_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("format: xml\n")
    r = cli("oneshot", "--config", str(cfg), str(write_log(tmp_path / "a.log")))
    assert r.returncode == 2
    assert r.stdout == ""
    assert "format" in r.stderr
