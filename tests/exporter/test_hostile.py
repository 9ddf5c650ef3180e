"""No line can stop the exporter: every case of the hostile corpus (hostile_corpus.py) through
`tailpage-exporter oneshot` as a real process, good lines before and after it; then one live
`tailpage-exporter run` following one file to which the whole corpus is appended; then
hypothesis-made hostile JSON around good lines through the Pipeline.

A line that reaches the error boundary (`reason="internal"`) is a bug the boundary hid: these
tests fail on it, as on a crash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import failures, metrics, samples
from hostile_corpus import (
    GOOD,
    GOOD_COMPONENT,
    TIME,
    Case,
    config_for,
    corpus,
    file_bytes,
    good_block,
    good_line,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loop_paths import LOOPS, on
from test_run import Exporter, config_text

from exporter import config
from exporter.pipeline import Pipeline
from exporter.presets import PRESETS

EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
CASES = corpus()
REASONS = {"too_long", "invalid_utf8", "invalid_json", "too_deep", "not_object",
           "invalid_envelope", "invalid_logfmt", "regex_mismatch"}  # "internal" is a bug
ROUNDS = 2  # rounds of good lines before and after each case
GOOD_ERRORS = sum(g["level"] == "error" for g in GOOD)


def good_counts(ss: dict[tuple[str, tuple], float]) -> tuple[float, float]:
    """(good lines, good error lines) counted, read from the metrics."""
    lines = ss.get(("tailpage_request_duration_seconds_count",
                    (("component", GOOD_COMPONENT),)), 0.0)
    errors = sum(v for (name, lbl), v in ss.items()
                 if name == "tailpage_errors_total" and dict(lbl)["component"] == GOOD_COMPONENT)
    return lines, errors


def by_name(ss: dict[tuple[str, tuple], float], name: str, label: str) -> dict[str, float]:
    return {dict(lbl)[label]: v for (n, lbl), v in ss.items() if n == name and v}


def oneshot(case: Case, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    log = tmp / f"{case.name}.log"
    log.write_bytes(file_bytes(case, ROUNDS))
    args = [EXE, "oneshot", "--format", case.fmt]
    cfg = config_for(case)
    if cfg:
        conf = tmp / f"{case.name}.json"  # JSON is YAML
        conf.write_text(json.dumps(cfg))
        args += ["--config", str(conf)]
    try:
        return subprocess.run([*args, str(log)], capture_output=True, timeout=120)
    finally:
        log.unlink()


@pytest.fixture(scope="module")
def oneshots(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every selected case's oneshot process, two at a time (each is mostly interpreter start)."""
    chosen = {item.callspec.params["case"].name for item in request.session.items
              if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)}
    tmp = tmp_path_factory.mktemp("oneshot")
    todo = [c for c in CASES if c.name in chosen]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((c.name for c in todo), pool.map(lambda c: oneshot(c, tmp), todo),
                        strict=True))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_oneshot_survives_and_counts(case: Case, oneshots: dict[str, Any]) -> None:
    proc = oneshots[case.name]
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    ss = samples(proc.stdout.decode())
    fails = by_name(ss, "tailpage_exporter_parse_failures_total", "reason")
    assert set(fails) <= REASONS, f"reached the error boundary: {fails}\n{err[-3000:]}"
    before = 0 if case.first else ROUNDS
    want_good = (before + ROUNDS) * len(GOOD)
    assert good_counts(ss) == (want_good, (before + ROUNDS) * GOOD_ERRORS)
    if case.fails is not None:
        assert fails == case.fails
    if case.records is not None:
        total = sum(by_name(ss, "tailpage_log_lines_total", "level").values())
        assert total == want_good + case.records


def test_the_corpus_is_big_enough() -> None:
    formats = {c.fmt for c in CASES}
    assert len(CASES) >= 40 and formats == {"json", "logfmt", "regex", "cri", "docker"}


BOM = b"\xef\xbb\xbf"


def test_a_bom_does_not_make_a_json_file_plain_text(tmp_path: Path) -> None:
    log = tmp_path / "bom.log"
    log.write_bytes(BOM + b"\n".join(good_block("json")) + b"\n")
    proc = subprocess.run([EXE, "oneshot", str(log)], capture_output=True, timeout=60)
    assert proc.returncode == 0
    ss = samples(proc.stdout.decode())
    assert good_counts(ss) == (2 * len(GOOD), 2 * GOOD_ERRORS)
    assert "unknown" not in by_name(ss, "tailpage_log_lines_total", "level")


@pytest.mark.parametrize("fmt", ["auto", "json", "logfmt"])
@pytest.mark.parametrize("step", [1, 2, 4, 1 << 20])
def test_a_bom_at_the_start_of_a_file_is_skipped_and_only_there(fmt: str, step: int) -> None:
    """However the first bytes are split into reads, and whatever the format: the first line is
    read without its BOM; a BOM later in the file is content (an invalid line in JSON)."""
    lines = good_block("logfmt" if fmt == "logfmt" else "json")
    data = BOM + b"\n".join([*lines, BOM + lines[0]]) + b"\n"
    pipe = Pipeline(config.Config(config.validate({"format": fmt}, "<test>")))
    src = pipe.open("bom.log")
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    assert src.pending == 0
    src.flush()
    ss = metrics(pipe)
    counted = {dict(k)["level"]: v for k, v in ss["tailpage_log_lines_total"].items() if v}
    if fmt == "logfmt":  # the later BOM is read as part of the first key: level unknown
        assert counted == {"warning": 2, "error": 2, "unknown": 1}
        assert failures(pipe) == {}
    else:
        assert counted == {"warning": 2, "error": 2}
        assert failures(pipe) == {"invalid_json": 1}


@pytest.mark.parametrize("data", [b"\xef", b"\xef\xbb", BOM, BOM + b"\n"])
def test_a_file_of_a_bom_or_its_first_bytes(data: bytes) -> None:
    pipe = Pipeline(config.Config(config.validate({}, "<test>")))
    src = pipe.open("bom.log")
    src.feed(data)
    src.flush()
    assert src.pending == 0
    counted = sum(metrics(pipe).get("tailpage_log_lines_total", {}).values())
    assert counted + sum(failures(pipe).values()) == (1 if len(data) < 3 else 0)


def test_a_bom_where_a_resumed_file_is_read_from_is_content() -> None:
    """The live tailer opens a resumed file's Source at its checkpoint offset: not the file's
    start, so a BOM there is not skipped."""
    pipe = Pipeline(config.Config(config.validate({"format": "json"}, "<test>")))
    src = pipe.open("resumed.log", 4096)
    src.feed(BOM + good_block("json")[0] + b"\n")
    src.flush()
    assert failures(pipe) == {"invalid_json": 1}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_explain_says_what_it_makes_of_each_line(case: Case) -> None:
    """`explain` (a throwaway pipeline per line, with per-record details) on each line of each
    case under 64 KiB (the first 100), in the case's format: a record or a parse failure,
    never a raise and never the error boundary."""
    cfg = {**config_for(case), "format": case.fmt}
    pipe = Pipeline(config.Config(config.validate(cfg, "<test>")))
    for line in [ln for ln in case.data.split(b"\n") if len(ln) < 1 << 16][:100]:
        out = pipe.explain(line)
        assert "level" in out or out.get("parse_failure") in {*REASONS, "empty"}, out


# ---- the live sidecar fed the whole corpus --------------------------------------------------

def in_cri(case: Case) -> bytes:
    """A case as a CRI file holds it: CRI cases as they are, any other line as a whole (F)
    stdout message."""
    if case.fmt == "cri":
        return case.data
    return b"\n".join(b"%s stdout F %s" % (TIME.encode(), ln) for ln in case.data.split(b"\n"))


@pytest.mark.parametrize("fmt", ["json", "cri"])
def test_live_run_follows_one_file_through_the_whole_corpus(fmt: str, tmp_path: Path) -> None:
    """One `run` process follows one file, JSON lines or CRI; every case is appended (torn
    across two writes, as a slow writer tears lines) with good lines after it. The process
    stays up, /metrics keeps answering during the storm, and every good line is counted."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(config_text(tmp_path, logs, "300ms"))
    e = Exporter(tmp_path, cfg)
    try:
        app.write_bytes(b"")  # exists at start: followed from its end, which is 0
        e.start()
        good = b"\n".join(good_line(g, fmt) for g in GOOD)
        written = 0
        with open(app, "ab") as f:
            f.write(good + b"\n")
            written += 1
            for i, case in enumerate(CASES):
                data = in_cri(case) if fmt == "cri" else case.data
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                f.write(data[half:] + b"\n" + good + b"\n")
                f.flush()
                written += 1
                if i % 10 == 0:  # scraped mid-storm; also gives the tailer several reads
                    assert e.proc.poll() is None, e.err.read_text()[-3000:]
                    assert e.get("/metrics")[0] == 200
                    om = {"Accept": "application/openmetrics-text"}  # exemplars rendered too
                    assert e.get("/metrics", om)[0] == 200
        want = (written * len(GOOD), written * GOOD_ERRORS)

        def counted() -> bool:
            assert e.proc.poll() is None, e.err.read_text()[-3000:]  # exited: say why
            return good_counts(e.metrics()) == want
        e.until(counted, f"good lines counted: {want}", timeout=60)
        ss = e.metrics()
        fails = by_name(ss, "tailpage_exporter_parse_failures_total", "reason")
        assert set(fails) <= REASONS, \
            f"reached the error boundary: {fails}\n{e.err.read_text()[-3000:]}"
        assert e.proc.poll() is None
        assert "Traceback" not in e.err.read_text()
    finally:
        e.kill()


# ---- hypothesis: hostile JSON around good lines through the Pipeline ------------------------

# the fields the presets and the default config read, top-level and nested
FIELDS = sorted({*(p for pr in PRESETS.values() for role in (
    pr.level, pr.message, pr.error_type, pr.error_message, pr.stack, pr.component) for p in role),
    "component", "service", "logger", "name", "trace_id", "traceId", "request_id", "time", "ts",
    "duration_ms", "latency_ms", "duration", "duration_s", "duration_ns", "event.duration",
    "took", "elapsed", "responseTime", "v", "pid", "hostname", "@t", "ecs.version", "bytes",
    "status", "service.name"})
# user metrics and rules reading fields of any type (read only when `user` is drawn)
USER = {
    "metrics": [
        {"name": "hostile_total", "type": "counter", "value": "bytes",
         "labels": {"lvl": "level", "c": "component", "t": "err.type", "m": "msg"}},
        {"name": "hostile_seconds", "type": "histogram", "value": "duration_ms", "scale": 0.001,
         "labels": {"s": "service.name"}, "when": {"field": {"path": "status", "ge": 500}}}],
    "rules": [
        {"name": "status-500", "when": {"field": {"path": "status", "eq": "500"}},
         "severity": "high"},
        {"name": "slow", "when": {"duration_over": "1s", "error_type": "Time"},
         "category": "performance"}]}
SUBKEYS = ["type", "name", "code", "message", "stack", "stack_trace", "exc_type", "exc_value",
           "duration", "level", "0", "-1", "extendedStackTrace", "version"]
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(["error", "ERROR+4", "50", "²", "٣", "", " ",
                                               "1.5s", "1e400", "NaN", "-1", GOOD_COMPONENT[::-1]]),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(SUBKEYS), kids, max_size=4)),
    max_leaves=12)


def _nested(path: str, v: Any) -> dict[str, Any]:
    """{"a.b": v} (a literal dotted key, as ECS writes it) or {"a": {"b": v}}."""
    head, _, rest = path.partition(".")
    return {head: _nested(rest, v) if rest else v}


@st.composite
def hostile_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["record", "record", "record", "deep", "bytes", "glued"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    if kind == "deep":
        n = draw(st.sampled_from([10, 899, 1000, 5000]))
        o, c = draw(st.sampled_from([(b'{"level":', b"}"), (b"[", b"]"), (b'{"a":[', b"]}")]))
        return o * n + b"1" + c * n
    rec: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(FIELDS), max_size=8)):
        v = draw(values)
        rec.update(_nested(path, v) if "." in path and draw(st.booleans()) else {path: v})
    line = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return line + line if kind == "glued" else line


# HOSTILE_EXAMPLES=5000 for a long hunt; 100 keeps `make test` short
@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "100")), deadline=None,
          database=None,
          derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bad=st.lists(hostile_line(), min_size=1, max_size=25),
       cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8),
       preset=st.sampled_from(["auto", *PRESETS]), cap=st.sampled_from([300, 1 << 20]),
       crlf=st.booleans(), user=st.booleans(), loop=st.sampled_from(LOOPS))
def test_hypothesis_hostile_json_around_good_lines(bad: list[bytes], cuts: list[int],
                                                   preset: str, cap: int, crlf: bool,
                                                   user: bool, loop: str) -> None:
    good = [good_line(g, "json") for g in GOOD]
    nl = b"\r\n" if crlf else b"\n"
    lines = [*good]
    for b in bad:
        lines += [b, *good]
    data = nl.join(lines) + nl
    cfg = {"format": "json", "preset": preset, "max_line_bytes": cap, **(USER if user else {})}
    with on(loop):  # the C loop or its pure-Python twin, chosen when the Pipeline is made
        pipe = Pipeline(config.Config(config.validate(cfg, "<test>")))
    src = pipe.open("app.log")
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for a, b in pairwise(bounds):
        src.feed(data[a:b])
    src.flush()
    assert src.pending == 0
    n = len(bad) + 1
    ss = {(name, lbl): v for name, series in metrics(pipe).items() for lbl, v in series.items()}
    # auto detects `generic` from the first line, a good one; Serilog reads only `@l`
    errs = 0 if preset == "serilog" else n * GOOD_ERRORS
    assert good_counts(ss) == (n * len(GOOD), errs)
    assert set(failures(pipe)) <= REASONS


@st.composite
def hostile_logfmt(draw: st.DrawFn) -> bytes:
    """key=value pairs of the fields read, values bare, quoted with any escape, or empty."""
    pairs = []
    for key in draw(st.lists(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)),
                             max_size=8)):
        v = draw(st.one_of(
            st.text(max_size=12).map(lambda t: t.replace(" ", "").replace('"', "")),
            st.lists(st.sampled_from(["x", " ", "\\", '\\"', "\\u12", "\\ud800", "\\U0010ffff",
                                      "\\x", "²", "1e400", str(10**400)]),
                     max_size=6).map(lambda ps: '"' + "".join(ps) + '"'),
            st.sampled_from(["", '"', "=", str(-10**400), "NaN"])))
        pairs.append(f"{key}={v}" if draw(st.booleans()) else key)
    return " ".join(pairs).encode("utf-8", "surrogatepass")


@st.composite
def enveloped(draw: st.DrawFn, fmt: str) -> bytes:
    """A hostile message as a CRI or docker line would carry it, or the raw bytes. Partial
    chunks only on stderr: the good lines are whole stdout messages, which a partial of their
    own stream would rightly join."""
    msg = draw(st.one_of(hostile_line(), hostile_logfmt()))
    how = draw(st.sampled_from(["raw", "stdout F", "stderr F", "stderr P"]))
    if how == "raw":
        return msg
    stream, tag = how.split()
    if fmt == "cri":
        return b"%s %s %s %s" % (TIME.encode(), stream.encode(), tag.encode(), msg)
    log = msg.decode("utf-8", "surrogateescape") + ("\n" if tag == "F" else "")
    return json.dumps({"log": log, "stream": stream, "time": TIME}).encode()


@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "60")), deadline=None,
          database=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), fmt=st.sampled_from(["cri", "docker", "logfmt"]),
       cuts=st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=8),
       cap=st.sampled_from([300, 1 << 20]), loop=st.sampled_from(LOOPS))
def test_hypothesis_hostile_messages_in_envelopes_and_logfmt(data: st.DataObject, fmt: str,
                                                             cuts: list[int], cap: int,
                                                             loop: str) -> None:
    """The same for logfmt files and for CRI and docker files whose messages are hostile JSON
    or logfmt, whole or partial (P chunks, docker logs without a newline), or not enveloped."""
    gen = hostile_logfmt() if fmt == "logfmt" else enveloped(fmt)
    bad = data.draw(st.lists(gen, min_size=1, max_size=25))
    good = [good_line(g, fmt) for g in GOOD]
    lines = [*good]
    for b in bad:
        lines += [b, *good]
    raw = b"\n".join(lines) + b"\n"
    with on(loop):
        pipe = Pipeline(config.Config(config.validate(
            {"format": fmt, "max_line_bytes": cap}, "<test>")))
    src = pipe.open("app.log")
    bounds = [0, *sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]
    for a, b in pairwise(bounds):
        src.feed(raw[a:b])
    src.flush()
    assert src.pending == 0
    n = len(bad) + 1
    ss = {(name, lbl): v for name, series in metrics(pipe).items() for lbl, v in series.items()}
    assert good_counts(ss) == (n * len(GOOD), n * GOOD_ERRORS)
    assert set(failures(pipe)) <= REASONS


def test_live_run_with_hostile_file_names_and_types(tmp_path: Path) -> None:
    """What the glob matches is hostile too: a name that is not UTF-8 (the path label), a name
    with a newline and a quote, a FIFO (a read would block), a directory, a symlink loop and a
    symlink to /dev/zero (endless). The regular files are followed and counted, the rest
    skipped, and /metrics answers in both formats."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(f'inputs:\n  - path: "{logs}/*.log"\n    start_at: beginning\n'
                   f'checkpoint:\n  path: "{tmp_path}/state/ck.json"\n  interval: 300ms\n'
                   "tail:\n  poll_interval: 100ms\n  rescan_interval: 500ms\n")
    good = b"\n".join(good_line(g, "json") for g in GOOD) + b"\n"
    raw = os.fsencode(logs)
    # two names alike but for their bytes that are not UTF-8: two series, not one
    regular = [b"\xff\xfe not utf-8.log", b"\xfe\xff not utf-8.log", b'new\nline"quote.log',
               b"ok.log"]
    for name in regular:
        Path(os.fsdecode(os.path.join(raw, name))).write_bytes(good)
    os.mkfifo(logs / "fifo.log")
    (logs / "dir.log").mkdir()
    os.symlink(logs / "loop.log", logs / "loop.log")
    os.symlink("/dev/zero", logs / "zero.log")
    e = Exporter(tmp_path, cfg)
    try:
        e.start()
        with open(logs / "ok.log", "ab") as f:  # appended after the start: still followed
            f.write(good)
        want = ((len(regular) + 1) * len(GOOD), (len(regular) + 1) * GOOD_ERRORS)

        def counted() -> bool:
            assert e.proc.poll() is None, e.err.read_text()[-3000:]
            status, text = e.get("/metrics")
            assert status == 200, f"/metrics answered {status}\n{e.err.read_text()[-3000:]}"
            return good_counts(samples(text)) == want
        e.until(counted, f"good lines counted: {want}")
        assert e.get("/metrics", {"Accept": "application/openmetrics-text"})[0] == 200
        read = by_name(samples(e.get("/metrics")[1]), "tailpage_exporter_lines_read_total",
                       "path")
        assert read == {f"{logs}/\\xff\\xfe not utf-8.log": len(GOOD),
                        f"{logs}/\\xfe\\xff not utf-8.log": len(GOOD),
                        f'{logs}/new\nline"quote.log': len(GOOD), f"{logs}/ok.log": 2 * len(GOOD)}
    finally:
        e.kill()
