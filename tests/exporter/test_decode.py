"""Formats: JSON lines, logfmt, regex with named groups, `auto` per file, dotted field paths.
Real sample files (tests/exporter/samples) go through the same Source the exporter uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import failures, levels, metrics
from prometheus_client.parser import text_string_to_metric_families

from exporter import config, decode
from exporter.pipeline import Pipeline

SAMPLES = Path(__file__).parent / "samples"
EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
# stdlib logging's "%(asctime)s %(levelname)s [%(name)s] %(message)s", the error type and text
# split off the message as samples/make_samples.py writes them
STDLIB_RX = (r"^(?P<time>\S+ \S+) (?P<level>[A-Z]+) \[(?P<component>[^\]]+)\] "
             r"(?P<message>.*?)(?:: (?P<error_type>[A-Za-z]+Error): (?P<error>.*))?$")


def make(**cfg: Any) -> Pipeline:
    return Pipeline(config.Config(config.validate(cfg, "<test>")))


def feed(pipe: Pipeline, path: str, data: bytes, step: int | None = None) -> str | None:
    """Feeds like oneshot (whole reads of `step` bytes) and returns the detected format."""
    src = pipe.open(path)
    step = step or max(1, len(data))
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()
    return src.fmt




def error_types(pipe: Pipeline) -> dict[str, float]:
    got: dict[str, float] = {}
    for k, v in metrics(pipe).get("tailpage_errors_total", {}).items():
        et = dict(k)["error_type"]
        got[et] = got.get(et, 0) + v
    return got


# ---- JSON lines -----------------------------------------------------------------------------

def test_json_lines_same_counts_whatever_the_read_size() -> None:
    """The hot path (whole chunks decoded at once) and the per-line path agree."""
    data = (SAMPLES / "pino.log").read_bytes() * 50
    ref = make()
    assert feed(ref, "a.log", data) == "json"
    want = metrics(ref)
    assert levels(ref) == {"trace": 50, "debug": 50, "info": 50, "warning": 50, "error": 100,
                           "fatal": 50}
    for step in (1, 7, 300, 4096):
        pipe = make()
        feed(pipe, "a.log", data, step)
        assert metrics(pipe) == want, step


def test_json_crlf_and_blank_lines() -> None:
    data = (b'{"level":"error","msg":"x","error_type":"E1"}\r\n\r\n   \n'
            b'{"level":"info","msg":"y"}\r\n\n')
    pipe = make()
    feed(pipe, "a.log", data)
    assert levels(pipe) == {"error": 1, "info": 1}
    assert error_types(pipe) == {"E1": 1}
    assert failures(pipe) == {}


def test_json_non_ascii_text() -> None:
    """UTF-8 text (Go, pino and winston write it raw) takes the same path as ASCII."""
    recs = [{"level": "error", "msg": f"Zahlung für Bestellung {i} fehlgeschlagen ✗",
             "component": "zahlungen", "error_type": "ZahlungAbgelehnt"} for i in range(100)]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
    for step in (None, 5, 333):
        pipe = make()
        feed(pipe, "a.log", data, step)
        assert levels(pipe) == {"error": 100}
        assert error_types(pipe) == {"ZahlungAbgelehnt": 100}
        assert failures(pipe) == {}


def test_json_last_line_without_newline_counts_at_flush() -> None:
    pipe = make()
    src = pipe.open("a.log")
    src.feed(b'{"level":"info","msg":"a"}\n{"level":"error","msg":"b"}')
    assert levels(pipe) == {"info": 1}
    src.flush()
    assert levels(pipe) == {"info": 1, "error": 1}


# ---- logfmt ---------------------------------------------------------------------------------

def test_logfmt_parser() -> None:
    rec = decode.logfmt(b'time=2026-11-23T12:00:00Z level=error msg="said \\"no\\" twice" '
                        b'path=/x?a=b&c=d empty= flag duration_ms=12.5 '
                        b'err="a\\\\b"')
    assert rec == {"time": "2026-11-23T12:00:00Z", "level": "error", "msg": 'said "no" twice',
                   "path": "/x?a=b&c=d", "empty": "", "flag": True, "duration_ms": "12.5",
                   "err": "a\\b"}


def test_logfmt_go_escapes() -> None:
    """logrus and slog quote with Go's strconv.Quote; an escaped backslash stays one."""
    rec = decode.logfmt(rb'msg="a\\nb \"q\" \u00e9\U0001F600\tx\x41" '
                        rb'bad="\ud800" open="unterminated k=v')
    assert rec == {"msg": 'a\\nb "q" \u00e9\U0001F600\txA', "bad": "\ufffd",
                   "open": '"unterminated', "k": "v"}


@pytest.mark.parametrize(("line", "reason"), [(b"just some words", "invalid_logfmt"),
                                              (b"level=\xff\xfe msg=x", "invalid_utf8")])
def test_logfmt_failures(line: bytes, reason: str) -> None:
    with pytest.raises(decode.DecodeFailure) as e:
        decode.logfmt(line)
    assert e.value.reason == reason


@pytest.mark.parametrize("name", ["logrus-logfmt.log", "slog-logfmt.log"])
def test_logfmt_real_files(name: str) -> None:
    """logrus's TextFormatter (real output) and slog's TextHandler, detected by `auto`."""
    pipe = make()
    assert feed(pipe, name, (SAMPLES / name).read_bytes()) == "logfmt"
    # slog: DEBUG-4 is trace, ERROR+4 fatal
    assert levels(pipe) == {"trace": 1, "debug": 1, "info": 1, "warning": 1, "error": 2,
                            "fatal": 1}
    assert error_types(pipe) == {"unknown": 2, "PaymentDeclinedError": 1}
    comps = {dict(k)["component"] for k in metrics(pipe)["tailpage_errors_total"]}
    assert comps == ({"ledger"} if name.startswith("slog") else {"billing"})
    assert failures(pipe) == {}
    hist = metrics(pipe)["tailpage_request_duration_seconds_sum"]
    assert list(hist.values()) == [pytest.approx(0.0125)]


def test_logfmt_bad_line_is_counted_and_skipped() -> None:
    data = b'level=info msg="a b" x=1\nno pairs here at all\nlevel=error msg=c component=q\n'
    pipe = make()
    assert feed(pipe, "x.log", data) == "logfmt"
    assert levels(pipe) == {"info": 1, "error": 1}
    assert failures(pipe) == {"invalid_logfmt": 1}


# ---- regex ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["regex", "auto"])
def test_regex_named_groups_on_real_stdlib_logging(fmt: str) -> None:
    data = (SAMPLES / "stdlib.log").read_bytes() + b"a line the regex does not match\n"
    pipe = make(format=fmt, regex=STDLIB_RX)
    assert feed(pipe, "worker.log", data) == "regex"
    assert levels(pipe) == {"debug": 1, "info": 1, "warning": 1, "error": 2, "fatal": 1}
    assert error_types(pipe) == {"ConnectionRefusedError": 1, "PaymentDeclinedError": 1,
                                 "unknown": 1}
    assert {dict(k)["component"] for k in metrics(pipe)["tailpage_errors_total"]} == {"worker"}
    assert failures(pipe) == {"regex_mismatch": 1}


def test_regex_decoder_drops_unmatched_optional_groups() -> None:
    dec = decode.regex_decoder(STDLIB_RX)
    rec = dec(b"2026-11-23 12:00:00,001 INFO [api] request completed")
    assert rec == {"time": "2026-11-23 12:00:00,001", "level": "INFO", "component": "api",
                   "message": "request completed"}
    with pytest.raises(decode.DecodeFailure) as e:
        dec(b"\xff")
    assert e.value.reason == "invalid_utf8"


def test_auto_with_regex_still_reads_logfmt_and_json() -> None:
    """A regex in the config is for the files it matches; logfmt and JSON files keep theirs."""
    pipe = make(regex=STDLIB_RX)
    assert feed(pipe, "a.log", (SAMPLES / "logrus-logfmt.log").read_bytes()) == "logfmt"
    assert feed(pipe, "b.log", (SAMPLES / "zerolog.log").read_bytes()) == "json"
    assert feed(pipe, "c.log", (SAMPLES / "stdlib.log").read_bytes()) == "regex"
    assert failures(pipe) == {}
    assert levels(pipe)["error"] == 2 + 2 + 2


# ---- auto, per file -------------------------------------------------------------------------

def _cri(line: bytes) -> bytes:
    return b"2026-11-23T12:40:21.000000001Z stdout F " + line + b"\n"


def _docker(line: bytes) -> bytes:
    return json.dumps({"log": line.decode() + "\n", "stream": "stderr",
                       "time": "2026-11-23T12:40:21.000000001Z"}).encode() + b"\n"


def test_auto_picks_the_format_of_each_file() -> None:
    pino = (SAMPLES / "pino.log").read_bytes()
    files = {
        "json.log": (pino, "json"),
        "logfmt.log": ((SAMPLES / "logrus-logfmt.log").read_bytes(), "logfmt"),
        "plain.log": (b"Starting server on port 8080\nready\n", "text"),
        "cri.log": (b"".join(_cri(ln) for ln in pino.splitlines()), "cri"),
        "docker.log": (b"".join(_docker(ln) for ln in pino.splitlines()), "docker"),
    }
    pipe = make()
    for name, (data, fmt) in files.items():
        assert feed(pipe, name, data) == fmt, name
    # pino 7 records thrice (json, cri, docker) + logrus 7 + 2 plain lines of unknown level
    assert sum(levels(pipe).values()) == 7 * 3 + 7 + 2
    assert levels(pipe)["unknown"] == 2
    assert levels(pipe)["error"] == 2 * 3 + 2
    assert failures(pipe) == {}


def test_inputs_format_per_path_and_override() -> None:
    """`inputs[].format` pins a glob's format; a docker file pinned as json is read as JSON
    records (the envelope's own fields), not unwrapped."""
    pino = (SAMPLES / "pino.log").read_bytes()
    data = b"".join(_docker(ln) for ln in pino.splitlines())
    pipe = make(inputs=[{"path": "/var/log/raw/*.log", "format": "json"},
                        {"path": "/var/log/app/*.log"}])
    assert feed(pipe, "/var/log/raw/x.log", data) == "json"
    assert levels(pipe) == {"unknown": 7}
    assert feed(pipe, "/var/log/app/x.log", data) == "docker"
    assert levels(pipe)["error"] == 2


# ---- dotted paths ---------------------------------------------------------------------------

def test_dotted_paths_nested_literal_and_index() -> None:
    rec = {"log.level": "WARN", "log": {"level": "error", "logger": "x"},
           "error": {"type": "Nested", "cause": [{"type": "First"}, {"type": "Second"}]},
           "error.type": "Literal"}
    assert decode.dict_getter("log.level")(rec) == "WARN"  # literal key first (ECS writes it)
    assert decode.dict_getter("log.logger")(rec) == "x"
    assert decode.dict_getter("error.type")(rec) == "Literal"
    assert decode.dict_getter("error.cause.1.type")(rec) == "Second"
    assert decode.dict_getter("error.cause.-1.type")(rec) == "Second"
    assert decode.dict_getter("error.cause.5.type")(rec) is None
    assert decode.dict_getter("error.type.deeper")(rec) is None
    assert decode.dict_getter("missing")(rec) is None
    # path parts that str.isdigit() or int() half-accept are keys, not indices: never a raise
    for part in ("--1", "²", "٣", "1_0", "9" * 5000, "-"):
        assert decode.dict_getter(f"error.cause.{part}")(rec) is None
    shape = decode.JsonShape(["log.level", "log.logger", "error.cause.0.type", "missing"])
    obj = shape.decoder.decode(json.dumps(rec).encode())
    assert shape.getter("log.level")(obj) == "WARN"
    assert shape.getter("log.logger")(obj) == "x"
    assert shape.getter("error.cause.0.type")(obj) == "First"
    assert shape.getter("missing")(obj) is None


def test_configured_field_paths_through_the_pipeline() -> None:
    """`fields` overrides the preset: nested and literal dotted keys in one file."""
    lines = [
        {"severity_text": "INFO", "k8s": {"container": "web"}, "body": "ok"},
        {"severity_text": "ERROR", "k8s": {"container": "web"}, "body": "db down",
         "exception": {"kind": "PoolTimeout"}},
        {"severity_text": "ERROR", "k8s.container": "worker", "body": "queue full",
         "exception.kind": "QueueFull"},
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    pipe = make(fields={"level": ["severity_text"], "component": ["k8s.container"],
                        "message": ["body"], "error_type": ["exception.kind"]})
    feed(pipe, "otel.log", data)
    assert levels(pipe) == {"info": 1, "error": 2}
    got = {(dict(k)["component"], dict(k)["error_type"])
           for k in metrics(pipe)["tailpage_errors_total"]}
    assert got == {("web", "PoolTimeout"), ("worker", "QueueFull")}


# ---- the command line -----------------------------------------------------------------------

def test_oneshot_cli_over_files_of_different_formats(tmp_path: Path) -> None:
    cri = tmp_path / "cri.log"
    cri.write_bytes(b"".join(_cri(ln) for ln in (SAMPLES / "bunyan.log").read_bytes()
                             .splitlines()))
    files = [SAMPLES / "pino.log", SAMPLES / "logrus-logfmt.log", SAMPLES / "serilog.log", cri]
    out = subprocess.run([EXE, "oneshot", *map(str, files)], capture_output=True, timeout=120,
                         check=True).stdout.decode()
    got = {s.labels["level"]: s.value for f in text_string_to_metric_families(out)
           if f.name == "tailpage_log_lines" for s in f.samples}
    assert got == {"trace": 4, "debug": 4, "info": 4, "warning": 4, "error": 8, "fatal": 4,
                   "unknown": 0}


def test_explain_cli_names_format_and_fields() -> None:
    line = 'time="2026-11-23T12:00:00Z" level=warning msg="disk 91% full" component=storage'
    out = subprocess.run([EXE, "explain", "--json", line], capture_output=True, timeout=60,
                         check=True).stdout
    got = json.loads(out)
    assert got["format"] == "logfmt"
    assert got["level"] == "warning"
    assert got["component"] == "storage"
    assert got["fields"]["msg"] == "disk 91% full"
