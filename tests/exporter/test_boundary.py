"""No line crashes the line path: the lines that once raised out of `Source.feed` (and so out of
`oneshot` and the live `run`) are counted or skipped, and the good lines around them are counted
exactly, however the file is split into reads."""

from __future__ import annotations

import pytest
from exporter_helpers import run

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


@pytest.mark.parametrize("step", STEPS)
def test_a_duration_no_float_holds_is_no_duration(step: int) -> None:
    data = b"\n".join([
        b'{"level":"info","component":"api","duration_ms":5}',
        b'{"level":"info","component":"api","duration_ms":' + BIG + b"}",
        b'{"level":"error","component":"api","message":"boom","duration_ms":-' + BIG + b"}",
        b'{"level":"warn","component":"api","latency_ms":' + BIG + b"}",  # the next field
        b'{"level":"warn","component":"api","duration_ms":"1e400"}',
        b'{"level":"info","component":"api","duration_ms":7}',
    ]) + b"\n"
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


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("blank", [b"", b" \t", b"\r"])
def test_two_objects_glued_on_a_line_then_a_blank_line(step: int, blank: bytes) -> None:
    """msgspec reads the glued line as two records and skips the blank one: as many records as
    lines, but not one per line. The glued line is one invalid line, the others count."""
    lines = [*GLUED[:2], blank, GLUED[3]]
    ss = run(b"\n".join(lines) + b"\n", step)
    assert lines_total(ss) == {"info": 1, "error": 1}
    assert failures(ss) == {"invalid_json": 1}
    errors = {dict(lbl)["level"]: v for (n, lbl), v in ss.items() if n == "tailpage_errors_total"}
    assert errors == {"error": 1}


@pytest.mark.parametrize("step", [1 << 20, 64])
def test_glued_and_blank_lines_among_many(step: int) -> None:
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
    ss = run(b"\n".join(lines) + b"\n", step)
    assert lines_total(ss) == {"info": 500, "error": 10}
    assert failures(ss) == {"invalid_json": 10}
    errors = {dict(lbl)["component"]: v for (n, lbl), v in ss.items()
              if n == "tailpage_errors_total"}
    assert errors == {"pay": 10}
