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

import fault
import pytest
from exporter_helpers import DEADLINE, run, samples
from loop_paths import LOOPS, on

from exporter import config, fingerprint
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


DEPTHS = range(1, 1200)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("step", [1 << 20, 997])
def test_a_message_nested_near_the_limit_is_an_error_or_too_deep(step: int, loop: str) -> None:
    """A message nested just under the decoder's limit (which counts the interpreter's frames)
    once decoded and then raised RecursionError when encoded back to text, a few frames deeper:
    now it is an error with a placeholder text. Every depth up to past the limit is either an
    error or too_deep, and the good lines around are counted."""
    out = []
    for n in DEPTHS:
        out.append(b'{"level":"error","msg":' + b"[" * n + b"]" * n + b"}")
        out.append(b'{"level":"info","msg":"ok %d","component":"api","duration_ms":%d}' % (n, n))
    with on(loop):
        ss = run(b"\n".join(out) + b"\n", step)
    got, fails = lines_total(ss), failures(ss)
    assert got["info"] == len(DEPTHS)
    assert set(fails) == {"too_deep"} and got["error"] >= 900
    assert got["error"] + fails["too_deep"] == len(DEPTHS)


# ---- the error boundary: a line that raises ---------------------------------------------------
#
# No known input raises in the line path any more, but the boundary guards against the bugs not
# yet found, so these tests inject a fault (tests/exporter/fault.py): an error line whose message
# carries fault.MARK raises in the classify stage, on the fast path (its chunk is then read
# again line by line) and on the per-line path (the line is counted as internal and skipped).

N = 1200  # good lines; every 7th is followed by a line that raises
RAISING = N // 7


def fault_file() -> bytes:
    out = []
    for n in range(1, N + 1):
        out.append(b'{"level":"info","msg":"ok %d","component":"api","duration_ms":%d}' % (n, n))
        if n % 7 == 0:
            out.append(b'{"level":"error","msg":"%s %d"}' % (fault.MARK.encode(), n))
        if n % 5 == 0:
            out.append(b'{"level":"error","msg":"payment %d failed","component":"pay"}' % n)
    return b"\n".join(out) + b"\n"


GOOD_ERRORS = N // 5


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint, "normalize", fault.wrap(fingerprint.normalize))


def with_fault(tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess whose line path has the fault, from interpreter start."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(fault.__file__, site / "fault.py")
    (site / "sitecustomize.py").write_text("import fault\n\nfault.install()\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def feed(pipe: Pipeline, path: str, data: bytes, step: int) -> None:
    src = pipe.open(path)
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()


def boundary_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The boundary's reports of lines skipped (a chunk read again is reported apart)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "exporter.source" and ": a line at byte " in r.getMessage()]


def assert_counted_exactly(ss: dict, times: int = 1) -> None:
    """Every good line and good error around the raising lines counted, each raising line
    counted as internal, nothing else failed."""
    assert lines_total(ss) == {"info": times * N, "error": times * GOOD_ERRORS}
    assert durations(ss, "api") == (times * N, pytest.approx(times * N * (N + 1) / 2000))
    assert failures(ss) == {"internal": times * RAISING}


def assert_names_a_raising_line(message: str, path: str, data: bytes) -> None:
    """The log line names the file and the byte offset of a raising line, never its content nor
    the exception's message."""
    assert message.startswith(f"{path}: a line at byte ")
    assert "InjectedFault" in message
    assert fault.MARK not in message and fault.SECRET not in message
    offset = int(re.search(r"at byte (\d+)", message).group(1))
    assert data[offset - 1:offset] == b"\n"
    assert data[offset:].startswith(b'{"level":"error","msg":"%s ' % fault.MARK.encode())


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("step", [1 << 20, 4096, 997])
def test_a_line_that_raises_is_counted_skipped_and_logged(
        step: int, loop: str, faulty: None, caplog: pytest.LogCaptureFixture) -> None:
    data = fault_file()
    with on(loop):
        pipe = Pipeline(config.Config(config.validate({}, "<test>")))
    with caplog.at_level(logging.ERROR, logger="exporter.source"):
        feed(pipe, "app.log", data, step)
    assert_counted_exactly(samples(render(pipe.registry, False).decode()))
    logs = boundary_logs(caplog)
    assert len(logs) == 1
    assert_names_a_raising_line(logs[0], "app.log", data)


def test_the_boundary_logs_at_most_once_a_minute(
        faulty: None, caplog: pytest.LogCaptureFixture) -> None:
    """Two files of such lines in one pipeline: every raising line counted, one log line."""
    data = fault_file()
    pipe = Pipeline(config.Config(config.validate({}, "<test>")))
    with caplog.at_level(logging.ERROR, logger="exporter.source"):
        feed(pipe, "a.log", data, 1 << 20)
        feed(pipe, "b.log", data, 1 << 20)
    assert_counted_exactly(samples(render(pipe.registry, False).decode()), 2)
    assert len(boundary_logs(caplog)) == 1


def test_without_the_fault_nothing_raises() -> None:
    """The same file with the line path as shipped: the marked lines are ordinary errors."""
    ss = run(fault_file(), 1 << 20)
    assert lines_total(ss) == {"info": N, "error": GOOD_ERRORS + RAISING}
    assert failures(ss) == {}


def test_oneshot_exits_0_and_logs_the_raising_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    data = fault_file()
    log.write_bytes(data)
    r = subprocess.run([EXE, "oneshot", str(log)], capture_output=True, text=True,
                       timeout=120, check=False, env=with_fault(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert_counted_exactly(samples(r.stdout))
    logged = [ln for ln in r.stderr.splitlines() if ": a line at byte " in ln]
    assert len(logged) == 1
    assert all(": a chunk at byte " in ln for ln in r.stderr.splitlines() if ln not in logged)
    assert fault.MARK not in r.stderr and fault.SECRET not in r.stderr
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
                                stdout=fh, stderr=fh, start_new_session=True,
                                env=with_fault(tmp_path))
    try:
        url = wait_for(lambda: listening(proc, err), "listening", err)
        data = fault_file()
        (logs / "app.log").write_bytes(data)

        def scraped() -> dict | None:
            ss = scrape(url)
            return ss if lines_total(ss).get("info") == N else None

        assert_counted_exactly(wait_for(scraped, "the file counted", err))
        with open(logs / "app.log", "ab") as fh:
            fh.write(b'{"level":"warn","msg":"still here"}\n')
        wait_for(lambda: lines_total(scrape(url)).get("warning") == 1, "a line appended after",
                 err)
        assert proc.poll() is None
        text = err.read_text()
        assert "Traceback" not in text
        logged = [ln for ln in text.splitlines() if ": a line at byte " in ln]
        assert len(logged) == 1
        path = str(logs / "app.log")
        assert_names_a_raising_line(logged[0][logged[0].index(path):], path, data)
        assert fault.MARK not in text and fault.SECRET not in text
        assert re.search(r"line path: (C loop|pure Python) \(", text)
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
