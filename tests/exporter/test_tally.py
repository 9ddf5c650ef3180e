"""exporter._tally, the JSON fast path's per-line loop in C, against the per-line path, which is
plain Python: whatever the records hold (odd levels, components that are not names, durations
that are strings, negative, huge or booleans, another duration field, more level/component
pairs in one chunk than the loop tallies itself), the metrics are the same."""

from __future__ import annotations

import re
from typing import Any

import pytest
from exporter_helpers import jl, per_line, run, without_failures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter import _tally

LEVELS = ["info", "INFO", "warn", "error", "fatal", "err", "crit", "debug", None, "", "wärn",
          30, 50, 1, 0, True, 2.5, {"x": 1}, ["error"]]
# "abcde" and "axcye" look alike to the loop's memo (same length, first, middle, last
# characters): only their contents tell them apart
COMPONENTS = ["api", "abcde", "axcye", "Zürich", None, "", 7, {"a": 1}, "x" * 300, "user 42"]
DURATIONS = st.one_of(
    st.floats(min_value=-10, max_value=1e7, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-5, max_value=10**25),
    st.sampled_from(["1.5s", "250", "abc", None, True, False, [1], {"s": 1}]))
MISSING = object()


@st.composite
def record(draw: st.DrawFn) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for key, values in (("level", st.sampled_from(LEVELS)),
                        ("component", st.sampled_from(COMPONENTS)),
                        ("duration_ms", DURATIONS)):
        v = draw(st.one_of(values, st.just(MISSING)))
        if v is not MISSING:
            rec[key] = v
    if draw(st.booleans()):
        rec["latency_ms"] = draw(DURATIONS)  # the next configured duration field
    rec["message"] = draw(st.sampled_from(["done", "payment processing failed for order 7",
                                           "upstream timeout after 31ms"]))
    if draw(st.booleans()):
        rec["error_type"] = draw(st.sampled_from(["TimeoutError", "KeyError", 500]))
    if draw(st.booleans()):
        rec["trace_id"] = draw(st.sampled_from(["abc123", 99, ""]))
    return rec


HEAD = {"level": "info", "component": "api", "duration_ms": 1.0, "message": "start"}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(record(), min_size=1, max_size=120), step=st.sampled_from([1 << 20, 97]))
def test_any_records_count_as_the_per_line_path_counts(recs: list[dict[str, Any]],
                                                       step: int) -> None:
    lines = jl([HEAD, *recs])  # a first line as the file's logger writes it sets the shape
    fast = run(b"\n".join(lines) + b"\n", step)
    slow = run(per_line(lines, 1, b"{broken"), step)
    assert fast == without_failures(slow)


@pytest.mark.parametrize("components", [40, 700])
def test_more_pairs_in_a_chunk_than_the_loop_tallies(components: int) -> None:
    """The C loop tallies at most 256 (level, component) pairs per chunk; the records of any
    further pair are counted by the Python side."""
    recs = [{"level": ("info", "warn", "error")[i % 3], "component": f"svc{i % components}",
             "duration_ms": i % 900, "message": "m", "error_type": "E"} for i in range(6000)]
    lines = jl(recs)
    fast = run(b"\n".join(lines) + b"\n", 1 << 20, limits={"max_series_per_metric": 5000})
    assert fast == without_failures(run(per_line(lines, 50, b"{broken"), 1 << 20,
                                        limits={"max_series_per_metric": 5000}))
    counted = sum(v for (n, _), v in fast.items() if n == "tailpage_log_lines_total")
    durations = sum(v for (n, _), v in fast.items()
                    if n == "tailpage_request_duration_seconds_count")
    errors = sum(v for (n, _), v in fast.items() if n == "tailpage_errors_total")
    assert (counted, durations, errors) == (6000, 6000, 2000)


@pytest.mark.parametrize("buf", [b"", b"a\n", b"a\r\nbb\n\nccc\n", b"x\ny", b"\n\n\n",
                                 b" \t\r\n{}\n \n\x0b\n{} {}\n\r\n"])
def test_lines_counts_the_lines_that_are_not_blank_and_picks_them_by_index(buf: bytes) -> None:
    """Blank lines (only spaces, tabs, CRs: what msgspec skips) are neither counted nor
    indexed, so line i is the line of record i when each other line holds one record."""
    for start in range(len(buf) + 1):
        part = buf[start:]
        want = [ln for ln in part.split(b"\n")[:-1] if ln.strip(b" \t\r")]
        indices = list(range(0, len(want), 2))
        count, picked = _tally.lines(buf, start, len(buf), indices)
        assert count == len(want)
        assert picked == [want[i] for i in indices]


# What cut_cri does, as the regex it replaced: the prefix of a CRI line holding a whole (F)
# message that is a JSON object, matched after a newline.
CRI_WHOLE = re.compile(rb"\n\d{4}-\d\d-\d\dT\S+ (?:stdout|stderr) F(?::\S*)? (?=\{)")
CRI_PARTS = st.lists(st.sampled_from([
    b"2026-11-22T00:00:01.123456789Z", b"2026-11-22T", b"2026-1-22T00", b"20261122T00", b"x",
    b" ", b"  ", b"\t", b"\r", b"\x0b", b"\n", b"stdout", b"stderr", b"stdin", b"F", b"P",
    b":", b":tag", b"{", b'{"level":"info"}', b"}", b"\xff", b"0", b"-"]), max_size=14)


@settings(max_examples=400, deadline=None)
@given(lines=st.lists(st.one_of(CRI_PARTS.map(b"".join), st.sampled_from([
    b'2026-11-22T00:00:01Z stdout F {"a":1}', b"2026-11-22T00:00:01Z stderr F:x {}",
    b"2026-11-22T00:00:01Z stdout P {", b"2026-11-22T00:00:01Z stdout F  {}",
    b"2026-11-22T00:00:01Z stdout F:\t{}", b"2026-11-22T00:00:01Z\tstdout F {}"])),
    max_size=8), newline=st.booleans())
def test_cut_cri_cuts_what_the_regex_cuts(lines: list[bytes], newline: bool) -> None:
    chunk = b"\n".join(lines) + (b"\n" if newline else b"")
    assert _tally.cut_cri(chunk) == CRI_WHOLE.subn(b"\n", b"\n" + chunk)
    assert _tally.cut_cri(memoryview(b"xx" + chunk)[2:]) == _tally.cut_cri(chunk)
