"""exporter._tally, the JSON fast path's per-line loop in C, and its pure-Python twin
(exporter/tally.py) against the per-line path: whatever the records hold (odd levels, components
that are not names, durations that are strings, negative, huge or booleans, another duration
field, more level/component pairs in one chunk than the loop tallies itself), the metrics are
the same on either loop; and the two loops return the same, to the last bit of every sum."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import jl, per_line, run, samples, without_failures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loop_paths import LOOPS, on

from exporter import decode, levels, tally

_tally = tally._c_loop()
needs_c = pytest.mark.skipif(_tally is None, reason="exporter._tally is not built")

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


@pytest.mark.parametrize("loop", LOOPS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(record(), min_size=1, max_size=120), step=st.sampled_from([1 << 20, 97]))
def test_any_records_count_as_the_per_line_path_counts(loop: str, recs: list[dict[str, Any]],
                                                       step: int) -> None:
    lines = jl([HEAD, *recs])  # a first line as the file's logger writes it sets the shape
    with on(loop):
        fast = run(b"\n".join(lines) + b"\n", step)
    slow = run(per_line(lines, 1, b"{broken"), step)
    assert fast == without_failures(slow)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("components", [40, 700])
def test_more_pairs_in_a_chunk_than_the_loop_tallies(loop: str, components: int) -> None:
    """The loop tallies at most 256 (level, component) pairs per chunk; the records of any
    further pair are counted by the count stage one by one."""
    recs = [{"level": ("info", "warn", "error")[i % 3], "component": f"svc{i % components}",
             "duration_ms": i % 900, "message": "m", "error_type": "E"} for i in range(6000)]
    lines = jl(recs)
    with on(loop):
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
        for impl in (tally.lines, *([_tally.lines] if _tally else [])):
            count, picked = impl(buf, start, len(buf), indices)
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
    for impl in (tally.cut_cri, *([_tally.cut_cri] if _tally else [])):
        assert impl(chunk) == CRI_WHOLE.subn(b"\n", b"\n" + chunk)
        assert impl(memoryview(b"xx" + chunk)[2:]) == impl(chunk)


# ---- the two loops side by side: the same arguments, the same results ----------------------

SHAPE = decode.JsonShape(["level", "component", "duration_ms", "latency_ms"])
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def both(recs: list[dict[str, Any]], cached: int, by_fields: bool) -> None:
    """Both loops over the Structs of `recs`, with the first `cached` distinct (level,
    component) pairs in the cache, as the count stage builds its entries."""
    structs = SHAPE.decoder.decode_lines(b"".join(json.dumps(r).encode() + b"\n" for r in recs))
    pair = attrgetter(SHAPE.attr["level"], SHAPE.attr["component"])
    cache: dict[Any, tuple[str, str, tuple[str], bool]] = {}
    for r in structs:
        key = pair(r)
        if len(cache) < cached and all(v is None or type(v) is str for v in key):
            level = levels.normalize(key[0])
            comp = str(key[1])
            cache[key] = (level, comp, (comp,), level in levels.ERROR_LEVELS)
    key_spec = (SHAPE.field("level"), SHAPE.field("component")) if by_fields else pair
    args = (structs, key_spec, cache, SHAPE.field("duration_ms"), 1e-3,
            attrgetter(SHAPE.attr["duration_ms"], SHAPE.attr["latency_ms"]), (None, None),
            BUCKETS)
    assert tally.tally(*args) == _tally.tally(*args)


@needs_c
@settings(max_examples=150, deadline=None)
@given(recs=st.lists(record(), min_size=1, max_size=80), cached=st.integers(0, 30),
       by_fields=st.booleans())
def test_the_python_loop_returns_what_the_c_loop_returns(recs: list[dict[str, Any]],
                                                         cached: int, by_fields: bool) -> None:
    both(recs, cached, by_fields)


@needs_c
def test_the_loops_agree_beyond_their_group_limit() -> None:
    recs = [{"level": ("info", "warn", "error")[i % 3], "component": f"svc{i % 700}",
             "duration_ms": (i * 7919) % 5000 / 7} for i in range(3000)]
    both(recs, 10**6, True)


# ---- no C compiler: the package still installs, and runs the pure-Python loop ---------------

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_c_compiler_the_wheel_installs_and_runs_pure_python(tmp_path: Path) -> None:
    """`pip wheel` with a compiler that always fails (CC=/bin/false), offline, from a copy of
    the sources: the wheel builds without exporter._tally, installs, and its `oneshot` says it
    runs pure Python and prints what the installed exporter (C loop) prints."""
    have = version("setuptools")
    assert int(have.split(".")[0]) >= 77, (
        f"setuptools {have} in the venv cannot read pyproject.toml (`license` as a string needs "
        ">= 77, which the `test` extra requires): run `make setup`")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "exporter", src / "exporter",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp_path / "dist"), str(src)],
                           env={**os.environ, "CC": "/bin/false"}, capture_output=True,
                           text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("tailpage-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "exporter/tally.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target",
                                str(site), str(wheel)], capture_output=True, text=True,
                               timeout=300, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    log = tmp_path / "app.log"
    log.write_bytes(b"\n".join(jl([HEAD, *[
        {"level": ("info", "error", "warn")[i % 3], "component": f"c{i % 5}",
         "duration_ms": i * 3.5, "message": f"order {i} failed", "error_type": "KeyError"}
        for i in range(3000)]])) + b"\n")
    script = ("import logging, sys; logging.basicConfig(level=logging.INFO); import exporter; "
              f"assert exporter.__file__.startswith({str(site)!r}), exporter.__file__; "
              "from exporter.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if k != "TAILPAGE_PURE_PYTHON"}
    # -S: the test venv has this project installed in editable mode, whose import hook (run by
    # `site`) would find the worktree's built exporter._tally; the dependencies come from the
    # venv's site-packages, on the path after the installed wheel
    path = os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])
    pure = subprocess.run([sys.executable, "-S", "-c", script, "oneshot", str(log)],
                          env={**env, "PYTHONPATH": path}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert pure.returncode == 0, pure.stderr
    assert "line path: pure Python (exporter._tally is not built)" in pure.stderr
    exe = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
    assert exe
    here = subprocess.run([exe, "oneshot", str(log)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert here.returncode == 0, here.stderr
    assert samples(pure.stdout) == samples(here.stdout)
