"""Level normalisation: every alias the issue names, one by one and through the whole line path
(a JSON file of one record per alias, counted in tailpage_log_lines_total)."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.expose import render
from exporter.levels import LEVELS, normalize
from exporter.pipeline import Pipeline

# raw level as a logger writes it -> normalised level
ALIASES: list[tuple[object, str]] = [
    # names, any case, with the usual abbreviations
    *[(v, "trace") for v in ("trace", "TRACE", "Trace", "trc", "TRC", "verbose", "Verbose",
                             "VRB", "finest", "finer", "silly")],
    *[(v, "debug") for v in ("debug", "DEBUG", "Debug", "dbg", "DBG", "fine", "FINE", "config")],
    *[(v, "info") for v in ("info", "INFO", "Info", "inf", "information", "Information",
                            "informational", "notice", "NOTICE", "http")],
    *[(v, "warning") for v in ("warn", "WARN", "Warn", "warning", "WARNING", "Warning", "wrn",
                               "WRN", "W")],
    *[(v, "error") for v in ("error", "ERROR", "Error", "err", "ERR", "eror", "ERRO", "severe",
                             "SEVERE", "E")],
    *[(v, "fatal") for v in ("fatal", "FATAL", "Fatal", "ftl", "crit", "CRIT", "critical",
                             "CRITICAL", "Critical", "alert", "ALERT", "emerg", "EMERG",
                             "emergency", "panic", "PANIC", "dpanic", "DPANIC")],
    # padding and decoration some formatters add
    (" warn ", "warning"), ("[ERROR]", "error"), ("<info>", "info"), ("WARN:", "warning"),
    ("errors", "error"), ("Warning!", "warning"),
    # pino / bunyan numbers, and the same as strings
    (10, "trace"), (20, "debug"), (30, "info"), (35, "info"), (40, "warning"), (50, "error"),
    (60, "fatal"), (70, "fatal"), (30.0, "info"), ("50", "error"), ("60", "fatal"),
    # syslog severities 0-7 (GELF `level`, journald PRIORITY)
    (0, "fatal"), (1, "fatal"), (2, "fatal"), (3, "error"), (4, "warning"), (5, "info"),
    (6, "info"), (7, "debug"), ("3", "error"), ("7", "debug"),
    # Go slog's offsets from its own scale (DEBUG=-4 INFO=0 WARN=4 ERROR=8)
    ("DEBUG-4", "trace"), ("DEBUG-8", "trace"), ("INFO-2", "debug"), ("INFO+2", "info"),
    ("INFO+4", "warning"), ("WARN+4", "error"), ("ERROR+2", "error"), ("ERROR+4", "fatal"),
    # nothing a level can be read from
    (None, "unknown"), ("", "unknown"), ("banana", "unknown"), ("default", "unknown"),
    ("notset", "unknown"), (8, "unknown"), (9, "unknown"), (-1, "unknown"), (True, "unknown"),
    (False, "unknown"), ({"name": "error"}, "unknown"), (["error"], "unknown"),
    # digits that are not ASCII (str.isdigit takes them, int() refuses "²"), and numbers too
    # long for int(): never an exception
    ("²", "unknown"), ("٣", "unknown"), ("ERROR+٣", "error"), ("1" * 5000, "fatal"),
    ("0" * 5000 + "3", "error"), (10**400, "fatal"),
]


@pytest.mark.parametrize(("raw", "want"), ALIASES, ids=[repr(r)[:20] for r, _ in ALIASES])
def test_alias(raw: object, want: str) -> None:
    assert normalize(raw) == want


def test_levels_are_the_issue_list() -> None:
    assert LEVELS == ("trace", "debug", "info", "warning", "error", "fatal", "unknown")
    assert {want for _, want in ALIASES} == set(LEVELS)


def _lines_total(pipe: Pipeline) -> dict[str, float]:
    text = render(pipe.registry, False).decode()
    return {s.labels["level"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "tailpage_log_lines" for s in f.samples}


@pytest.mark.parametrize("chunk", [None, 97], ids=["whole-file", "97-byte-reads"])
def test_every_alias_counted_through_the_pipeline(chunk: int | None) -> None:
    """One JSON record per alias in one file: the hot path (and, split into small reads, the
    per-chunk path) must count each under its normalised level."""
    recs = [{"level": raw, "msg": f"line {i}"} for i, (raw, _) in enumerate(ALIASES)
            if raw is not None]
    recs.append({"msg": "no level field at all"})
    data = "".join(json.dumps(r) + "\n" for r in recs).encode()
    pipe = Pipeline(config.Config(config.validate({"preset": "generic"}, "<test>")))
    src = pipe.open("app.log")
    step = chunk or len(data)
    for i in range(0, len(data), step):
        src.feed(data[i:i + step])
    src.flush()
    want = dict.fromkeys(LEVELS, 0.0)
    for raw, level in ALIASES:
        if raw is not None:
            want[level] += 1
    want["unknown"] += 1
    assert _lines_total(pipe) == want


def test_number_level_is_not_taken_for_a_boolean() -> None:
    """Numeric levels are cached by value, and True == 1 in Python: a `true` level after a
    syslog `1` must still be unknown, and the other way round."""
    data = b"".join(json.dumps({"level": v, "msg": "x"}).encode() + b"\n"
                    for v in (1, True, 1, False, 0, True, 2))
    pipe = Pipeline(config.Config(config.validate({"preset": "generic"}, "<test>")))
    src = pipe.open("app.log")
    src.feed(data)
    src.flush()
    got = _lines_total(pipe)
    assert got["fatal"] == 4  # 1, 1, 0, 2 (syslog alert, emerg, crit)
    assert got["unknown"] == 3
