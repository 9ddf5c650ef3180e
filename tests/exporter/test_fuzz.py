"""Bad input never stops the exporter: each kind is counted by reason in
tailpage_exporter_parse_failures_total and skipped, and the next good line still counts. Then
hypothesis feeds random bytes and mutated real lines, in random read sizes, through the same
Source the exporter uses."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.expose import render
from exporter.pipeline import Pipeline

SAMPLES = Path(__file__).parent / "samples"
EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
REASONS = {"too_long", "invalid_utf8", "invalid_json", "too_deep", "not_object",
           "invalid_envelope", "invalid_logfmt", "regex_mismatch"}
GOOD = b'{"level":"error","msg":"database connection failed","error_type":"DbError"}'
MIB = 1 << 20
# in CI the examples are the same every run (no flaky first sightings); locally they vary
FUZZ = settings(max_examples=150, deadline=None, database=None,
                derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def make(**cfg: Any) -> Pipeline:
    return Pipeline(config.Config(config.validate(cfg, "<test>")))


def feed(pipe: Pipeline, data: bytes, cuts: list[int] | None = None, step: int | None = None,
         path: str = "app.log") -> Any:
    src = pipe.open(path)
    if cuts is not None:
        bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
        for a, b in pairwise(bounds):
            src.feed(data[a:b])
    else:
        step = step or max(1, len(data))
        for i in range(0, len(data), step):
            src.feed(data[i:i + step])
    src.flush()
    return src


def counts(pipe: Pipeline) -> tuple[dict[str, float], dict[str, float]]:
    """(lines by level, failures by reason), read back from the rendered exposition."""
    lines: dict[str, float] = {}
    fails: dict[str, float] = {}
    for fam in text_string_to_metric_families(render(pipe.registry, False).decode()):
        for s in fam.samples:
            if s.name == "tailpage_log_lines_total" and s.value:
                lines[s.labels["level"]] = s.value
            elif s.name == "tailpage_exporter_parse_failures_total":
                fails[s.labels["reason"]] = s.value
    return lines, fails


# ---- each kind of bad input -----------------------------------------------------------------

BAD = [
    ("invalid_utf8", b'{"level":"error","msg":"caf\xe9 \xff"}'),
    ("invalid_utf8", b"\xff\xfe\x00\x81binary\x00garbage\x9c"),
    ("invalid_json", b'{"level":"error","msg":"truncated mid-str'),
    ("invalid_json", b'{"level":"error",'),
    ("invalid_json", b"\x00\x01\x02\x03\x04 binary but valid utf-8 \x7f"),
    ("invalid_json", b"Exception in thread main java.lang.NullPointerException"),
    ("invalid_json", b'{"level":NaN}'),
    ("too_deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ("too_deep", b"[" * 100_000 + b"]" * 100_000),
    ("not_object", b"[1,2,3]"),
    ("not_object", b'"just a string"'),
    ("not_object", b"null"),
    ("too_long", b'{"level":"error","msg":"' + b"x" * (MIB + 10) + b'"}'),
]


@pytest.mark.parametrize("step", [None, 4096, 65536], ids=["whole", "4k-reads", "64k-reads"])
def test_each_bad_line_counted_by_reason_and_the_next_good_line_counts(step: int | None) -> None:
    data = GOOD + b"\n" + b"".join(bad + b"\n" + GOOD + b"\n" for _, bad in BAD)
    pipe = make(format="json")
    feed(pipe, data, step=step)
    lines, fails = counts(pipe)
    assert lines == {"error": len(BAD) + 1}
    want: dict[str, float] = {}
    for reason, _ in BAD:
        want[reason] = want.get(reason, 0) + 1
    assert fails == want
    errs = pipe.agg.errors.values
    assert sum(errs.values()) == len(BAD) + 1
    assert {k[4] for k in errs} == {"DbError"}


@pytest.mark.parametrize("step", [None, 1, 60, 61])
def test_invalid_utf8_in_a_field_the_config_does_not_read(step: int | None) -> None:
    """The hot path reads only the needed fields, yet a line with invalid UTF-8 anywhere is a
    failure whatever else its read holds (the hot path and the per-line path agree)."""
    bad = b'{"level":"info","user_agent":"Mozilla \xff\xfe","msg":"x"}'
    data = GOOD + b"\n" + bad + b"\n" + GOOD + b"\n"
    pipe = make(format="json")
    feed(pipe, data, step=step)
    assert counts(pipe) == ({"error": 2}, {"invalid_utf8": 1})


def test_nested_json_under_the_limit_is_a_record() -> None:
    deep = b'{"level":"warn","ctx":' + b'{"a":' * 200 + b"1" + b"}" * 200 + b"}"
    pipe = make()
    feed(pipe, deep + b"\n")
    assert counts(pipe) == ({"warning": 1}, {})


@pytest.mark.parametrize("cap", [64, 1000, 4096])
def test_the_cap_is_configurable_and_exact(cap: int) -> None:
    """A line of exactly max_line_bytes is read; one byte more is counted too_long."""
    def line(n: int) -> bytes:
        head = b'{"level":"info","msg":"'
        return head + b"x" * (n - len(head) - 2) + b'"}'
    data = line(cap) + b"\n" + line(cap + 1) + b"\n" + line(cap) + b"\n"
    for step in (None, 7, cap // 2):
        pipe = make(max_line_bytes=cap)
        feed(pipe, data, step=step)
        assert counts(pipe) == ({"info": 2}, {"too_long": 1}), step


def test_over_long_line_arriving_in_pieces_holds_bounded_memory() -> None:
    """A 12 MiB line with no newline, read in 64 KiB pieces as the tailer does: counted once,
    never buffered whole, and the line after it counts."""
    pipe = make()
    src = pipe.open("app.log")
    src.feed(GOOD + b"\n")
    piece = b"y" * 65536
    peak = 0
    for _ in range(12 * 16):
        src.feed(piece)
        peak = max(peak, len(src.buf))
    src.feed(b"tail of the long line\n" + GOOD + b"\n")
    src.flush()
    assert peak <= MIB + 65536
    assert counts(pipe) == ({"error": 2}, {"too_long": 1})


def test_oneshot_cli_survives_every_kind_of_bad_input(tmp_path: Path) -> None:
    f = tmp_path / "bad.log"
    f.write_bytes(b"".join(bad + b"\n" + GOOD + b"\n" for _, bad in BAD)
                  + os.urandom(200_000) + b"\n" + GOOD)
    proc = subprocess.run([EXE, "oneshot", str(f)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fams = {m.name: m for m in text_string_to_metric_families(proc.stdout.decode())}
    errors = sum(s.value for s in fams["tailpage_log_lines"].samples
                 if s.labels["level"] == "error")
    assert errors == len(BAD) + 1
    reasons = {s.labels["reason"] for s in fams["tailpage_exporter_parse_failures"].samples}
    assert {r for r, _ in BAD} <= reasons <= REASONS


def test_explain_reports_the_failure_reason() -> None:
    for reason, bad in BAD[:7]:
        out = make(format="json").explain(bad)
        assert out["parse_failure"] == reason, bad


# ---- hypothesis -----------------------------------------------------------------------------

def _segments(data: bytes) -> tuple[int, int]:
    """(lines the exporter sees, of which not blank)."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    return len(parts), sum(1 for p in parts if p.strip())


def _check_bounds(pipe: Pipeline, src: Any, data: bytes, exact_lower: bool = True) -> None:
    lines, fails = counts(pipe)
    assert set(fails) <= REASONS
    total = sum(lines.values()) + sum(fails.values())
    segs, nonblank = _segments(data)
    assert total <= segs
    if exact_lower:
        assert total >= nonblank
    assert src.pending == 0


TOKENS = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\n", b"\r\n", b" ", b"\\", b"\x00",
          b"\xff", b"\xc3", b'"level"', b'"error"', b'"msg"', b"30", b"1e999", b"null",
          b"2026-11-23T12:40:21Z stdout P ", b"2026-11-23T12:40:21Z stderr F ",
          b'{"log":"', b'\\n","stream":"stdout"}', b"level=error ", b'msg="x y" ', GOOD]
soup = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(TOKENS)), max_size=60) \
    .map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


@FUZZ
@given(data=soup, cut=cuts, fmt=st.sampled_from(["json", "auto", "logfmt"]))
def test_fuzz_random_bytes(data: bytes, cut: list[int], fmt: str) -> None:
    pipe = make(format=fmt)
    src = feed(pipe, data, cut)
    # in an envelope, P chunks join: fewer records than lines
    _check_bounds(pipe, src, data, exact_lower=src.fmt not in ("cri", "docker"))


@FUZZ
@given(data=soup, cut=cuts, fmt=st.sampled_from(["cri", "docker"]),
       cap=st.sampled_from([64, 200, MIB]))
def test_fuzz_envelopes(data: bytes, cut: list[int], fmt: str, cap: int) -> None:
    pipe = make(format=fmt, max_line_bytes=cap)
    src = feed(pipe, data, cut)
    _check_bounds(pipe, src, data, exact_lower=False)


@FUZZ
@given(data=soup, cut=cuts, cap=st.sampled_from([64, 100]))
def test_fuzz_small_cap(data: bytes, cut: list[int], cap: int) -> None:
    pipe = make(format="json", max_line_bytes=cap)
    src = pipe.open("app.log")
    bounds = [0, *sorted({c % (len(data) + 1) for c in cut}), len(data)]
    for a, b in pairwise(bounds):
        src.feed(data[a:b])
        assert len(src.buf) <= cap  # never more than one capped line held
    src.flush()
    _check_bounds(pipe, src, data)


REAL = [ln for name in sorted(os.listdir(SAMPLES)) if name.endswith(".log")
        for ln in (SAMPLES / name).read_bytes().splitlines() if ln.startswith(b"{")]


def _valid_object(line: bytes) -> bool:
    """An independent oracle (the standard library) for "one JSON object", held to what a
    strict JSON decoder accepts: UTF-8, no NaN/Infinity, finite numbers, no lone surrogates."""
    def finite(s: str) -> float:
        v = float(s)
        if math.isinf(v):
            raise ValueError(s)
        return v

    def no_constants(s: str) -> None:
        raise ValueError(s)

    try:
        obj = json.loads(line.decode("utf-8"), parse_float=finite, parse_constant=no_constants)
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError):
        return False
    return isinstance(obj, dict)


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(line) - 1)))
        if op == "cut":
            del line[pos:]
        elif op == "flip" and line:
            line[pos] = draw(st.integers(0, 255).filter(lambda b: b != 0x0A))
        elif op == "insert":
            line[pos:pos] = draw(st.binary(min_size=1, max_size=4)).replace(b"\n", b"\t")
        elif op == "delete" and line:
            del line[pos]
    return bytes(line)


@FUZZ
@given(lines=st.lists(st.one_of(mutated_line(), st.sampled_from([b"", b"  ", b"\r"])),
                      min_size=1, max_size=40),
       cut=cuts)
def test_fuzz_mutated_real_lines_exact(lines: list[bytes], cut: list[int]) -> None:
    """Real logger lines, some mutated: every line that is still one JSON object is a record,
    every other non-blank line one parse failure; whatever the read sizes."""
    data = b"\n".join(lines) + b"\n" + GOOD + b"\n"
    pipe = make(format="json")
    src = feed(pipe, data, cut)
    assert src.pending == 0
    valid = sum(1 for ln in lines if ln.strip() and _valid_object(ln.rstrip(b"\r"))) + 1
    invalid = sum(1 for ln in lines if ln.strip()) + 1 - valid
    got_lines, got_fails = counts(pipe)
    assert sum(got_lines.values()) == valid
    assert sum(got_fails.values()) == invalid
    assert set(got_fails) <= REASONS
