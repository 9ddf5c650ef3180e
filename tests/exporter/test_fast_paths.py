"""The chunk-at-a-time fast paths give exactly what line-by-line reading gives: CRI lines cut
as a whole chunk, the narrow Struct (only the file's duration field, required), and error lines
found again after blank lines. Each is compared with the per-line path (forced by one bad line
per chunk, which only adds a parse failure) or with counts worked out from the records; each on
the C loop and on the pure-Python one."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from exporter_helpers import jl, per_line, run, without_failures
from loop_paths import LOOPS, on


@pytest.fixture(autouse=True, params=LOOPS)
def loop(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs on the C loop and on the pure-Python one."""
    with on(request.param):
        yield request.param


COMPONENTS = ["api", "pay", "db"]
TYPES = ["TimeoutError", "KeyError", "PaymentDeclined", "ValueError"]


def records(n: int, seed: int, durations: bool = True) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        rec: dict[str, Any] = {"level": rnd.choice(["info", "info", "warn", "error", "fatal"]),
                               "message": f"request {i} done", "component": rnd.choice(COMPONENTS)}
        if rec["level"] in ("error", "fatal"):
            rec["error_type"] = rnd.choice(TYPES)
            rec["message"] = f"payment processing failed for order {i}"
        if durations:
            rec["duration_ms"] = round(rnd.expovariate(1 / 300), 2)
        out.append(rec)
    return out


def cri(line: bytes, i: int) -> bytes:
    return b"2026-11-22T00:00:%02d.%09dZ %s F %s" % (i % 60, i, b"stderr" if i % 5 else b"stdout",
                                                     line)


@pytest.mark.parametrize("step", [1 << 20, 4096, 997])
def test_cri_whole_lines_count_as_the_line_by_line_path_does(step: int) -> None:
    lines = jl(records(3000, 1))
    wrapped = [cri(ln, i) for i, ln in enumerate(lines)]
    fast = run(b"\n".join(wrapped) + b"\n", step)
    slow = run(per_line(wrapped, 50, b"not a cri line"), step)
    assert slow[("tailpage_exporter_parse_failures_total", (("reason", "invalid_envelope"),))]
    assert fast == without_failures(slow)
    assert fast == run(b"\n".join(lines) + b"\n", step)  # as the same lines unwrapped


@pytest.mark.parametrize("odd", ["partial", "raw-json", "blank-message"])
def test_cri_chunks_with_other_lines_go_line_by_line(odd: str) -> None:
    lines = jl(records(400, 2))
    wrapped = [cri(ln, i) for i, ln in enumerate(lines)]
    want = run(b"\n".join(wrapped) + b"\n", 1 << 20)
    fails = 0
    if odd == "partial":  # a message split into a P and an F chunk
        p, f = wrapped[10][:-20], cri(lines[10][-20:], 10)
        wrapped[10] = p.replace(b" F ", b" P ", 1) + b"\n" + f
    elif odd == "raw-json":  # a JSON line without the CRI prefix
        wrapped.insert(200, lines[0])
        fails = 1
    else:  # an F line with an empty message, next to a raw JSON line
        wrapped[200:200] = [cri(b"", 9), lines[0]]
        fails = 1
    ss = run(b"\n".join(wrapped) + b"\n", 1 << 20)
    assert ss.get(("tailpage_exporter_parse_failures_total",
                   (("reason", "invalid_envelope"),)), 0) == fails
    assert without_failures(ss) == want


@pytest.mark.parametrize("step", [1 << 20, 4096])
def test_a_line_without_the_files_duration_field_reads_the_others(step: int) -> None:
    recs = records(2000, 3)
    recs[1500].pop("duration_ms")
    recs[1500]["latency_ms"] = 7000  # the configured order's next field: 7 s
    recs[1700]["duration_ms"] = None
    recs[1700]["took"] = 9000
    recs[1800]["duration_ms"] = "1.5s"
    lines = jl(recs)
    fast = run(b"\n".join(lines) + b"\n", step)
    slow = run(per_line(lines, 40, b"{broken"), step)
    assert fast == without_failures(slow)
    total = sum(v for (n, _), v in fast.items() if n == "tailpage_request_duration_seconds_count")
    assert total == 2000


def test_error_lines_are_found_again_after_blank_lines() -> None:
    recs = records(600, 4)
    out = []
    for i, ln in enumerate(jl(recs)):
        out.append(ln + (b"\r" if i % 11 == 0 else b""))
        if i % 7 == 0:
            out.append([b"", b"   ", b"\r", b"\t "][i % 4])
    ss = run(b"\n".join(out) + b"\n", 1 << 20)
    want = Counter((r["level"], r["component"], r["error_type"]) for r in recs
                   if r["level"] in ("error", "fatal"))
    got = Counter()
    for (name, lbl), v in ss.items():
        if name == "tailpage_errors_total":
            d = dict(lbl)
            got[(d["level"], d["component"], d["error_type"])] += int(v)
    assert got == want
    assert not any(n.startswith("tailpage_exporter_parse") for n, _ in ss)


def test_two_objects_on_one_line_are_one_invalid_line() -> None:
    """msgspec reads `{..} {..}` as two records; the per-line path calls the line invalid."""
    lines = jl(records(300, 5))
    lines[100] = lines[100] + b" " + lines[101]
    ss = run(b"\n".join(lines) + b"\n", 1 << 20)
    assert ss[("tailpage_exporter_parse_failures_total", (("reason", "invalid_json"),))] == 1
    assert sum(v for (n, _), v in ss.items() if n == "tailpage_log_lines_total") == 299
