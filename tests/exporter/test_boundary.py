"""No line crashes the line path: the lines that once raised out of `Source.feed` (and so out of
`oneshot` and the live `run`) are counted or skipped, and the good lines around them are counted
exactly, however the file is split into reads."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import DEADLINE, run, samples
from loop_paths import LOOPS, on

from exporter import config
from exporter.expose import render
from exporter.pipeline import Pipeline

EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))

STEPS = [1 << 20, 64, 7, 1]
BIG = b"1" + b"0" * 399  # an integer of 400 digits: no float holds it


def lines_total(ss: dict) -> dict[str, float]:
    return {dict(lbl)["level"]: v for (n, lbl), v in ss.items()
            if n == "tailpage_log_lines_total" and v}


def failures(ss: dict) -> dict[str, float]:
    return {dict(lbl)["reason"]: v for (n, lbl), v in ss.items()
            if n == "tailpage_exporter_parse_failures_total"}


def durations(ss: dict, component: str) -> tuple[float, float]:
    return (ss[("tailpage_request_duration_seconds_count", (("component", component),))],
            ss[("tailpage_request_duration_seconds_sum", (("component", component),))])


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("step", STEPS)
def test_a_duration_no_float_holds_is_no_duration(step: int, loop: str) -> None:
    data = b"\n".join([
        b'{"level":"info","component":"api","duration_ms":5}',
        b'{"level":"info","component":"api","duration_ms":' + BIG + b"}",
        b'{"level":"error","component":"api","message":"boom","duration_ms":-' + BIG + b"}",
        b'{"level":"warn","component":"api","latency_ms":' + BIG + b"}",  # the next field
        b'{"level":"warn","component":"api","duration_ms":"1e400"}',
        b'{"level":"info","component":"api","duration_ms":7}',
    ]) + b"\n"
    with on(loop):
        ss = run(data, step)
    assert lines_total(ss) == {"info": 3, "error": 1, "warning": 2}
    assert durations(ss, "api") == (2, pytest.approx(0.012))
    assert failures(ss) == {}


@pytest.mark.parametrize("step", STEPS)
def test_a_user_metric_value_no_float_holds_is_skipped(step: int) -> None:
    data = b"\n".join([
        b'{"level":"info","component":"api","bytes":10}',
        b'{"level":"info","component":"api","bytes":' + BIG + b"}",
        b'{"level":"info","component":"api","bytes":"1e400"}',
        b'{"level":"info","component":"api","bytes":20}',
    ]) + b"\n"
    ss = run(data, step, metrics=[
        {"name": "app_bytes", "type": "histogram", "value": "bytes", "buckets": [15]},
        {"name": "app_bytes_total", "type": "counter", "value": "bytes", "scale": 0.5}])
    assert lines_total(ss) == {"info": 4}
    assert ss[("app_bytes_count", ())] == 2
    assert ss[("app_bytes_sum", ())] == 30
    assert ss[("app_bytes_total", ())] == 15


@pytest.mark.parametrize("step", STEPS)
def test_a_level_of_digits_that_are_not_ascii_is_unknown(step: int) -> None:
    data = "".join(line + "\n" for line in [
        '{"level":"info","msg":"a"}', '{"level":"²","msg":"x"}', '{"level":"٣","msg":"x"}',
        '{"level":"' + "9" * 5000 + '","msg":"x"}', '{"level":"error","msg":"b"}']).encode()
    ss = run(data, step)
    assert lines_total(ss) == {"info": 1, "unknown": 2, "fatal": 1, "error": 1}
    assert failures(ss) == {}


GLUED = [b'{"level":"info","msg":"a"}', b'{"level":"error","msg":"x"}{"x":1}', b"",
         b'{"level":"error","msg":"after"}']


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("blank", [b"", b" \t", b"\r"])
def test_two_objects_glued_on_a_line_then_a_blank_line(step: int, blank: bytes,
                                                       loop: str) -> None:
    """msgspec reads the glued line as two records and skips the blank one: as many records as
    lines, but not one per line. The glued line is one invalid line, the others count."""
    lines = [*GLUED[:2], blank, GLUED[3]]
    with on(loop):
        ss = run(b"\n".join(lines) + b"\n", step)
    assert lines_total(ss) == {"info": 1, "error": 1}
    assert failures(ss) == {"invalid_json": 1}
    errors = {dict(lbl)["level"]: v for (n, lbl), v in ss.items() if n == "tailpage_errors_total"}
    assert errors == {"error": 1}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("step", [1 << 20, 64])
def test_glued_and_blank_lines_among_many(step: int, loop: str) -> None:
    """The same in a chunk of many lines, where the fast path reads whole chunks: the errors
    around are classified from their own lines, not their neighbours'."""
    lines = []
    for i in range(500):
        lines.append(b'{"level":"info","msg":"ok %d","component":"api"}' % i)
        if i % 50 == 10:
            lines.append(b'{"level":"error","msg":"x"}{"level":"error","msg":"y"}')
        if i % 50 == 20:
            lines.append(b"")
        if i % 50 == 30:
            lines.append(b'{"level":"error","msg":"payment failed","component":"pay"}')
    with on(loop):
        ss = run(b"\n".join(lines) + b"\n", step)
    assert lines_total(ss) == {"info": 500, "error": 10}
    assert failures(ss) == {"invalid_json": 10}
    errors = {dict(lbl)["component"]: v for (n, lbl), v in ss.items()
              if n == "tailpage_errors_total"}
    assert errors == {"pay": 10}


# ---- the error boundary: a line that raises for real ------------------------------------------
#
# A message nested close to Python's recursion limit is a genuine exception path: msgspec decodes
# the line (it counts the nesting against the interpreter's recursion limit), but the error's
# text is made by encoding the message back to JSON, a few Python frames deeper, where the same
# nesting raises RecursionError. Which depth falls in that gap depends on the stack, so the file
# holds every depth up to past the limit: the shallow ones count as errors, the deepest fail to
# decode (too_deep), and the one or two in the gap raise inside the line path.

DEPTHS = range(1, 1200)


def deep_file() -> bytes:
    out = []
    for n in DEPTHS:
        out.append(b'{"level":"error","msg":' + b"[" * n + b"]" * n + b"}")
        out.append(b'{"level":"info","msg":"ok %d","component":"api","duration_ms":%d}' % (n, n))
    return b"\n".join(out) + b"\n"


def feed(pipe: Pipeline, path: str, data: bytes, step: int) -> None:
    src = pipe.open(path)
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()


def boundary_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The boundary's reports of lines skipped (a chunk read again is reported apart)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "exporter.source" and ": a line at byte " in r.getMessage()]


def assert_names_a_raising_line(message: str, path: str, data: bytes) -> None:
    """The log line names the file and the byte offset of a nested line, never its content."""
    assert message.startswith(f"{path}: a line at byte ")
    assert "RecursionError" in message and "[[" not in message
    offset = int(re.search(r"at byte (\d+)", message).group(1))
    assert data[offset - 1:offset] == b"\n"
    assert data[offset:].startswith(b'{"level":"error","msg":[[')


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("step", [1 << 20, 4096, 997])
def test_a_line_that_raises_is_counted_skipped_and_logged(
        step: int, loop: str, caplog: pytest.LogCaptureFixture) -> None:
    data = deep_file()
    with on(loop):
        pipe = Pipeline(config.Config(config.validate({}, "<test>")))
    with caplog.at_level(logging.ERROR, logger="exporter.source"):
        feed(pipe, "app.log", data, step)
    ss = samples(render(pipe.registry, False).decode())
    got, fails = lines_total(ss), failures(ss)
    assert got["info"] == len(DEPTHS)  # every good line around, exactly
    assert durations(ss, "api") == (len(DEPTHS), pytest.approx(sum(DEPTHS) / 1000))
    assert fails["internal"] >= 1
    assert got["error"] + fails.get("too_deep", 0) + fails["internal"] == len(DEPTHS)
    logs = boundary_logs(caplog)
    assert len(logs) == 1
    assert_names_a_raising_line(logs[0], "app.log", data)


def test_the_boundary_logs_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Two files of such lines in one pipeline: every raising line counted, one log line."""
    data = deep_file()
    pipe = Pipeline(config.Config(config.validate({}, "<test>")))
    with caplog.at_level(logging.ERROR, logger="exporter.source"):
        feed(pipe, "a.log", data, 1 << 20)
        once = failures(samples(render(pipe.registry, False).decode()))["internal"]
        feed(pipe, "b.log", data, 1 << 20)
    ss = samples(render(pipe.registry, False).decode())
    assert failures(ss)["internal"] == 2 * once
    assert lines_total(ss)["info"] == 2 * len(DEPTHS)
    assert len(boundary_logs(caplog)) == 1


def test_oneshot_exits_0_and_logs_the_raising_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    data = deep_file()
    log.write_bytes(data)
    r = subprocess.run([EXE, "oneshot", str(log)], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    ss = samples(r.stdout)
    got, fails = lines_total(ss), failures(ss)
    assert got["info"] == len(DEPTHS)
    assert fails["internal"] >= 1
    assert got["error"] + fails.get("too_deep", 0) + fails["internal"] == len(DEPTHS)
    logged = [ln for ln in r.stderr.splitlines() if ": a line at byte " in ln]
    assert len(logged) == 1
    assert all(": a chunk at byte " in ln for ln in r.stderr.splitlines() if ln not in logged)
    assert_names_a_raising_line(logged[0], str(log), data)


def test_run_keeps_counting_after_a_line_that_raises(tmp_path: Path) -> None:
    """The live sidecar: the raising lines are counted and skipped, the process stays up and
    counts what is appended afterwards."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(f'inputs:\n  - path: "{logs}/*.log"\n'
                   f'checkpoint:\n  path: "{tmp_path}/checkpoints.json"\n')
    err = tmp_path / "exporter.err"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([EXE, "run", "--config", str(cfg), "--listen", "127.0.0.1:0"],
                                stdout=fh, stderr=fh, start_new_session=True)
    try:
        url = wait_for(lambda: listening(proc, err), "listening", err)
        data = deep_file()
        (logs / "app.log").write_bytes(data)

        def scraped() -> dict | None:
            ss = scrape(url)
            return ss if lines_total(ss).get("info") == len(DEPTHS) else None

        ss = wait_for(scraped, "the file counted", err)
        fails = failures(ss)
        assert fails["internal"] >= 1
        assert lines_total(ss)["error"] + fails.get("too_deep", 0) + fails["internal"] \
            == len(DEPTHS)
        with open(logs / "app.log", "ab") as fh:
            fh.write(b'{"level":"warn","msg":"still here"}\n')
        wait_for(lambda: lines_total(scrape(url)).get("warning") == 1, "a line appended after",
                 err)
        assert proc.poll() is None
        assert "Traceback" not in err.read_text()
        assert "at byte" in err.read_text()
        assert re.search(r"line path: (C loop|pure Python) \(", err.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def listening(proc: subprocess.Popen, err: Path) -> str | None:
    assert proc.poll() is None, err.read_text()
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/metrics", err.read_text())
    return m.group(1) if m else None


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return samples(r.read().decode())


def wait_for(cond: Callable[[], Any], what: str, err: Path) -> Any:
    end = time.monotonic() + DEADLINE
    while not (got := cond()):
        assert time.monotonic() < end, f"not reached: {what}; log:\n{err.read_text()}"
        time.sleep(0.05)
    return got
