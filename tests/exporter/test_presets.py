"""Every preset on real logger output (tests/exporter/samples, see make_samples.*): the logger
is detected, and level, message, component, error type and duration come out right."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.expose import render
from exporter.levels import ERROR_LEVELS
from exporter.pipeline import Pipeline
from exporter.presets import PRESETS, detect

SAMPLES = Path(__file__).parent / "samples"
EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
PHRASES = ("database connection failed", "payment processing failed", "out of memory",
           "disk full", "replica lag", "invariant broken", "nil map write")

STORY = {"trace": 1, "debug": 1, "info": 1, "warning": 1, "error": 2, "fatal": 1}
PY = {"debug": 1, "info": 1, "warning": 1, "error": 2, "fatal": 1}
GO = {**STORY, "fatal": 2}  # fatal and panic
PY_TYPES = {"ConnectionRefusedError": 1, "PaymentDeclinedError": 1, "unknown": 1}
GO_TYPES = {"unknown": 3, "PaymentDeclinedError": 1}  # Go errors carry no type name


# file -> (preset detected, levels, components of error lines, error types, has duration_ms)
EXPECT: dict[str, tuple[str, dict[str, int], set[str], dict[str, int], bool]] = {
    "pino.log": ("pino", STORY, {"checkout"},
                 {"Error": 1, "PaymentDeclinedError": 1, "unknown": 1}, True),
    "bunyan.log": ("bunyan", STORY, {"billing"},
                   {"Error": 1, "PaymentDeclinedError": 1, "unknown": 1}, True),
    # winston's npm levels: silly and verbose -> trace, http -> info
    "winston.log": ("generic", {"trace": 2, "debug": 1, "info": 2, "warning": 1, "error": 2},
                    {"orders"}, {"ECONNREFUSED": 1, "PaymentDeclinedError": 1}, True),
    "winston-syslog.log": ("generic", {"debug": 1, "info": 2, "warning": 1, "error": 1,
                                       "fatal": 3},
                           {"orders"}, {"ECONNREFUSED": 1, "unknown": 3}, True),
    # zap: dpanic, panic and fatal are all fatal
    "zap.log": ("zap", {"debug": 1, "info": 1, "warning": 1, "error": 2, "fatal": 3},
                {"checkout"}, {"unknown": 4, "PaymentDeclinedError": 1}, True),
    "logrus.log": ("logrus", GO, {"billing"}, GO_TYPES, True),
    "zerolog.log": ("zerolog", GO, {"search"}, GO_TYPES, True),
    "slog.log": ("slog", STORY, {"ledger"}, {"unknown": 2, "PaymentDeclinedError": 1}, True),
    "structlog.log": ("structlog", PY, {"inventory"}, PY_TYPES, True),
    "structlog-dict.log": ("structlog", PY, {"inventory"}, PY_TYPES, True),
    "python-json-logger.log": ("python-json-logger", PY, {"payments"}, PY_TYPES, True),
    "serilog.log": ("serilog", STORY,
                    {"Shop.Orders.Repository", "Shop.Payments.Gateway", "Shop.Orders.Importer"},
                    {"NpgsqlException": 1, "PaymentDeclinedException": 1,
                     "OutOfMemoryException": 1}, False),
    "serilog-rendered.log": ("serilog", {"debug": 1, "info": 1, "error": 1, "fatal": 1},
                             {"Shop.Orders.Repository", "Shop.Orders.Importer"},
                             {"NpgsqlException": 1, "OutOfMemoryException": 1}, False),
    "ecs.log": ("ecs", STORY, {"orders"},
                {"org.postgresql.util.PSQLException": 1,
                 "com.shop.payments.PaymentDeclinedException": 1,
                 "java.lang.OutOfMemoryError": 1}, True),
    "log4j2-template.log": ("ecs", {"info": 1, "error": 1}, {"com.shop.orders.Repository"},
                            {"java.net.ConnectException": 1}, False),
    "log4j2-jsonlayout.log": ("generic", {"info": 1, "error": 1, "fatal": 1},
                              {"com.shop.orders.Repository", "com.shop.orders.Importer"},
                              {"java.net.ConnectException": 1, "unknown": 1}, False),
}


def make(**cfg: Any) -> Pipeline:
    return Pipeline(config.Config(config.validate(cfg, "<test>")))


def run_file(data: bytes, name: str = "app.log", **cfg: Any) -> tuple[Pipeline, str | None]:
    pipe = make(**cfg)
    src = pipe.open(name)
    src.feed(data)
    src.flush()
    return pipe, src.preset


def check(pipe: Pipeline, want: tuple[str, dict[str, int], set[str], dict[str, int], bool]
          ) -> None:
    _, want_levels, want_comps, want_types, has_duration = want
    fams = {f.name: f for f in
            text_string_to_metric_families(render(pipe.registry, False).decode())}
    got_levels = {s.labels["level"]: s.value for s in fams["tailpage_log_lines"].samples
                  if s.value}
    assert got_levels == want_levels
    errs = [s for s in fams["tailpage_errors"].samples if s.name == "tailpage_errors_total"]
    assert {s.labels["component"] for s in errs} == want_comps
    types: Counter[str] = Counter()
    for s in errs:
        types[s.labels["error_type"]] += int(s.value)
    assert dict(types) == want_types
    counts = [s.value for s in fams["tailpage_request_duration_seconds"].samples
              if s.name.endswith("_count")]
    sums = [s.value for s in fams["tailpage_request_duration_seconds"].samples
            if s.name.endswith("_sum")]
    if has_duration:
        assert counts == [1]
        assert sums == [pytest.approx(0.0125)]
    else:
        assert counts == []
    assert "tailpage_exporter_parse_failures" not in fams or \
        not fams["tailpage_exporter_parse_failures"].samples


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_sample_file(name: str) -> None:
    pipe, preset = run_file((SAMPLES / name).read_bytes())
    assert preset == EXPECT[name][0]
    check(pipe, EXPECT[name])


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_sample_file_with_preset_named_in_config(name: str) -> None:
    """Naming the preset in the config gives what detection gives."""
    pipe, preset = run_file((SAMPLES / name).read_bytes(), preset=EXPECT[name][0])
    assert preset == EXPECT[name][0]
    check(pipe, EXPECT[name])


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_explain_each_error_line(name: str) -> None:
    """Per line (the `explain` path): the message field the preset reads holds the story's
    text, and error lines get the same error type the counters got."""
    pipe = make()
    for line in (SAMPLES / name).read_bytes().splitlines():
        out = pipe.explain(line)
        assert out["preset"] == EXPECT[name][0]
        if out["level"] in ERROR_LEVELS:
            msg = out["normalized_message"].lower()
            assert any(p in msg for p in PHRASES), (name, msg)
            assert out["error_type"] in EXPECT[name][3]


def test_every_preset_has_a_sample() -> None:
    assert {p for p, *_ in EXPECT.values()} == set(PRESETS) - {"winston"} | {"generic"}


def test_winston_preset_named_in_config() -> None:
    """winston's JSON is the generic shape, so it is never auto-detected; naming it works."""
    pipe, preset = run_file((SAMPLES / "winston.log").read_bytes(), preset="winston")
    assert preset == "winston"
    check(pipe, EXPECT["winston.log"])


# ---- detection on shapes that are ambiguous or unusual -------------------------------------

@pytest.mark.parametrize(("rec", "want"), [
    ({"level": "info", "msg": "x"}, "generic"),
    ({"level": "info", "message": "x"}, "generic"),
    ({"level": 30, "msg": "x"}, "generic"),  # numeric, but neither pino's nor bunyan's shape
    ({"level": "info", "time": "t", "pid": 1, "hostname": "h", "msg": "x"}, "pino"),
    ({"level": 30, "time": 1, "pid": 1, "hostname": "h", "msg": "x", "v": 0, "name": "a"},
     "bunyan"),
    ({"level": "info", "ts": 1.5, "msg": "x"}, "zap"),
    ({"level": "info", "ts": "2026-11-23T12:00:00Z", "msg": "x", "caller": "a.go:1"}, "zap"),
    ({"level": "INFO", "time": "t", "msg": "x"}, "slog"),
    ({"level": "info", "time": "t", "msg": "x"}, "logrus"),
    ({"level": "info", "time": "t", "message": "x"}, "zerolog"),
    ({"event": "x", "level": "info"}, "structlog"),
    ({"event": "x", "log_level": "info"}, "structlog"),
    ({"levelname": "INFO", "message": "x"}, "python-json-logger"),
    ({"@t": "t", "@mt": "x"}, "serilog"),
    ({"@timestamp": "t", "log": {"level": "info"}, "message": "x"}, "ecs"),
    ({"@timestamp": "t", "log.level": "info", "message": "x"}, "ecs"),
    ({"ecs": {"version": "8.0"}, "message": "x"}, "ecs"),
    ({"msg": "no level at all"}, "generic"),
    ({"level": True, "msg": "x"}, "generic"),
])
def test_detect(rec: dict[str, Any], want: str) -> None:
    assert detect(rec) == want


def test_serilog_information_has_no_level_field() -> None:
    """Serilog's compact JSON omits @l for Information: counted as info, not unknown."""
    pipe, _ = run_file(b'{"@t":"2026-11-23T12:00:00Z","@mt":"hello {Name}","Name":"x"}\n'
                       b'{"@t":"2026-11-23T12:00:01Z","@mt":"hi","@l":"Warning"}\n')
    got = {k: v for k, v in pipe.agg.lines.items() if v}
    assert got == {"info": 1, "warning": 1}


def test_ecs_nested_log_level() -> None:
    """ECS written as nested objects (Filebeat, ecs-logging for Go/Python) as well as dotted
    keys."""
    data = json.dumps({"@timestamp": "t", "log": {"level": "error", "logger": "app.db"},
                       "message": "database connection failed",
                       "error": {"type": "OperationalError", "message": "timeout"},
                       "ecs.version": "1.6.0"}).encode() + b"\n"
    pipe, preset = run_file(data)
    assert preset == "ecs"
    assert [(k[0], k[3], k[4]) for k in pipe.agg.errors.values] == \
        [("error", "app.db", "OperationalError")]


# ---- the libraries themselves, run now ------------------------------------------------------

def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["structlog.log", "structlog-dict.log",
                                  "python-json-logger.log"])
def test_python_loggers_installed_now(tmp_path: Path, name: str) -> None:
    """structlog and python-json-logger (test dependencies) write the samples again, with
    whatever versions are installed: the committed files must not hide a format change."""
    gen = _generator()
    if name.startswith("structlog"):
        gen.structlog_samples(tmp_path)
    else:
        gen.python_json_logger(tmp_path)
    pipe, preset = run_file((tmp_path / name).read_bytes())
    assert preset == EXPECT[name][0]
    check(pipe, EXPECT[name])


def test_oneshot_cli_over_all_samples() -> None:
    """All samples in one `oneshot` run: the totals are the sums of the per-file ones."""
    files = [str(SAMPLES / n) for n in sorted(EXPECT)]
    out = subprocess.run([EXE, "oneshot", *files], capture_output=True, timeout=120,
                         check=True).stdout.decode()
    fams = {f.name: f for f in text_string_to_metric_families(out)}
    got = {s.labels["level"]: s.value for s in fams["tailpage_log_lines"].samples if s.value}
    want: Counter[str] = Counter()
    for _, levels, *_ in EXPECT.values():
        want.update(levels)
    assert got == dict(want)


@pytest.mark.parametrize(("line", "level", "message"), [
    # tracing-subscriber's JSON (Rust): the message nested under `fields`
    ({"timestamp": "2026-11-23T12:40:21.123Z", "level": "ERROR",
      "fields": {"message": "database connection failed"}, "target": "shop::db"},
     "error", "database connection failed"),
    # Google Cloud Logging's structured JSON
    ({"severity": "CRITICAL", "message": "out of memory", "time": "2026-11-23T12:40:21Z"},
     "fatal", "out of memory"),
    # console.log(JSON.stringify(...)) and friends
    ({"lvl": "err", "msg": "payment processing failed", "ts": "2026-11-23T12:40:21Z"},
     "error", "payment processing failed"),
    ({"loglevel": "warning", "log": "slow query took 5400ms"}, "warning", None),
])
def test_plain_console_json(line: dict[str, Any], level: str, message: str | None) -> None:
    out = make().explain(json.dumps(line).encode())
    assert out["preset"] == "generic"
    assert out["level"] == level
    if message is not None:
        assert out["normalized_message"] == message


def test_explain_cli_reads_stdin_line_by_line() -> None:
    data = (SAMPLES / "zap.log").read_bytes()
    out = subprocess.run([EXE, "explain", "--json"], input=data, capture_output=True,
                         timeout=60, check=True).stdout.decode().splitlines()
    got = [json.loads(x) for x in out]
    assert len(got) == len(data.splitlines()) == 8
    assert {g["preset"] for g in got} == {"zap"}
    assert [g["level"] for g in got] == ["debug", "info", "warning", "error", "error", "fatal",
                                         "fatal", "fatal"]
    assert got[4]["error_type"] == "PaymentDeclinedError"
    assert got[4]["component"] == "checkout"
