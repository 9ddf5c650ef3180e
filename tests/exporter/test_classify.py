"""Classification: error type from fields and stack traces, the shipped severity/category rules,
ordered user rules with regex and numeric conditions, and duration fields with their units.

Everything runs the real pipeline (`Pipeline.explain`, the code path of `tailpage-exporter
explain`) over real log lines; nothing is stubbed.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

import pytest

from exporter import config
from exporter.classify import to_seconds, type_from_stack
from exporter.pipeline import Pipeline


def pipeline(cfg: dict[str, Any] | None = None) -> Pipeline:
    return Pipeline(config.Config(config.validate(cfg or {}, "<test>"), "<test>"))


DEFAULT = pipeline()


def explain(rec: dict[str, Any] | str, pipe: Pipeline = DEFAULT) -> dict[str, Any]:
    line = rec if isinstance(rec, str) else json.dumps(rec)
    return pipe.explain(line.encode())


def err(message: str, **fields: Any) -> dict[str, Any]:
    return explain({"level": fields.pop("level", "error"), "message": message,
                    "component": "api", **fields})


# ---- error type ---------------------------------------------------------------------------

def _python_traceback() -> str:
    try:
        {}["session"]  # raising for a real traceback
    except KeyError:
        return traceback.format_exc()
    raise AssertionError("unreachable")


def test_type_from_python_traceback_uses_last_line() -> None:
    tb = _python_traceback()
    assert tb.startswith("Traceback")
    assert type_from_stack(tb) == "KeyError"


@pytest.mark.parametrize(("stack", "expected"), [
    ("java.lang.IllegalStateException: pool closed\n\tat com.x.Pool.get(Pool.java:10)",
     "IllegalStateException"),
    ("TypeError: Cannot read properties of undefined (reading 'id')\n"
     "    at handler (/app/a.js:3:9)", "TypeError"),
    ("System.InvalidOperationException: Sequence contains no elements\n   at System.Linq",
     "InvalidOperationException"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n"
     "psycopg.errors.UniqueViolation: duplicate key value", "UniqueViolation"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 3\n"
     "ConnectionRefusedError: [Errno 111] Connection refused", "ConnectionRefusedError"),
    ("   at foo (a.js:1:1)", None),
    ("", None),
])
def test_type_from_stack(stack: str, expected: str | None) -> None:
    assert type_from_stack(stack) == expected


@pytest.mark.parametrize(("fields", "expected"), [
    ({"error": {"type": "DatabaseError", "message": "x"}}, "DatabaseError"),
    ({"err": {"type": "TypeError", "message": "x"}}, "TypeError"),
    ({"error_type": "TimeoutError"}, "TimeoutError"),
    ({"error.type": "java.io.IOException"}, "java.io.IOException"),
    ({"code": "ECONNREFUSED"}, "ECONNREFUSED"),
    ({"stack": "ValueError: bad\n  at x"}, "ValueError"),
    ({}, "unknown"),
])
def test_error_type_from_record_fields(fields: dict[str, Any], expected: str) -> None:
    assert err("something broke", **fields)["error_type"] == expected


def test_error_type_from_structlog_exception_field() -> None:
    # structlog's format_exc_info puts the formatted traceback in `exception`
    out = explain({"event": "request failed", "level": "error",
                   "exception": _python_traceback()})
    assert out["preset"] == "structlog"
    assert out["error_type"] == "KeyError"


def test_error_type_field_beats_stack() -> None:
    out = err("x", error_type="Mine", stack="ValueError: y\n  at z")
    assert out["error_type"] == "Mine"


def test_error_type_label_is_scrubbed() -> None:
    out = err("x", error_type="Failure for bob@example.com from 10.1.2.3")
    assert "bob" not in out["error_type"] and "10.1.2.3" not in out["error_type"]
    assert "<email>" in out["error_type"] and "<ip>" in out["error_type"]


# ---- shipped default rules ----------------------------------------------------------------

@pytest.mark.parametrize(("message", "severity", "category"), [
    ("database connection failed: host db-3.internal port 5432", "critical", "database"),
    ("could not connect to database", "critical", "database"),
    ("payment processing failed for order 123: card declined", "critical", "payment"),
    ("worker ran out of memory", "critical", "application"),
    ("FATAL ERROR: JavaScript heap out of memory", "critical", "application"),
    ("unauthorized access attempt from 192.168.1.10", "high", "security"),
    ("invalid CSRF token", "high", "security"),
    ("invalid webhook signature", "high", "security"),
    ("SQL injection attempt blocked in /search", "high", "security"),
    ("rate limit exceeded for client 42", "high", "security"),
    ("upstream timeout after 3000ms calling /v1/classify", "medium", "performance"),
    ("context deadline exceeded", "medium", "performance"),
    ("connect ECONNREFUSED 10.0.0.3:6379", "low", "network"),
    ("invalid field 'email' for user 4", "low", "validation"),
    ("something else went wrong", "low", "application"),
])
def test_default_rules(message: str, severity: str, category: str) -> None:
    out = err(message)
    assert (out["severity"], out["category"]) == (severity, category), out


def test_default_rules_name_the_rule_that_decided() -> None:
    assert err("payment processing failed")["severity_rule"] == "payment-failed"
    out = err("plain failure")
    assert out["severity_rule"] == "fallback" and out["category_rule"] == "fallback"


def test_fatal_falls_back_to_critical_and_error_to_low() -> None:
    assert err("plain failure", level="fatal")["severity"] == "critical"
    assert err("plain failure", level="error")["severity"] == "low"
    assert err("plain failure", level="CRITICAL")["severity"] == "critical"


def test_slow_call_rule_uses_duration() -> None:
    slow = err("backend call failed", duration_ms=6000)
    assert (slow["severity"], slow["category"], slow["severity_rule"]) == \
        ("medium", "performance", "slow-call")
    fast = err("backend call failed", duration_ms=4000)
    assert fast["severity"] == "low"


def test_error_type_rules() -> None:
    out = err("boom", error_type="MemoryError")
    assert (out["severity"], out["category"]) == ("critical", "application")
    out = err("boom", error_type="IntegrityError")
    assert (out["severity"], out["category"]) == ("low", "database")


def test_info_lines_are_not_classified() -> None:
    out = explain({"level": "info", "message": "payment processing failed"})
    assert out["level"] == "info" and "severity" not in out


# ---- configured rules ---------------------------------------------------------------------

RULES = {"rules": [
    {"name": "checkout-down", "when": {"component": "^checkout$", "message": "failed"},
     "severity": "critical", "category": "payment"},
    {"name": "big-refund", "when": {"field": {"path": "refund.amount", "gt": 1000}},
     "severity": "high", "category": "payment"},
    {"name": "slow", "when": {"duration_over": "2s", "level": ["error"]}, "severity": "medium"},
    {"name": "net", "when": {"error_type": "^Conn"}, "category": "network"},
    {"name": "any-failed", "when": {"message": "failed"}, "severity": "low"},
], "fallback": {"error": "medium", "fatal": "high", "category": "app"}}


def test_configured_rules_first_match_wins() -> None:
    pipe = pipeline(RULES)
    out = explain({"level": "error", "message": "order failed", "component": "checkout"}, pipe)
    assert (out["severity"], out["category"], out["severity_rule"]) == \
        ("critical", "payment", "checkout-down")
    out = explain({"level": "error", "message": "order failed", "component": "cart"}, pipe)
    assert (out["severity"], out["severity_rule"]) == ("low", "any-failed")


def test_configured_numeric_field_condition() -> None:
    pipe = pipeline(RULES)
    big = explain({"level": "error", "message": "refund", "refund": {"amount": 5000}}, pipe)
    assert (big["severity"], big["severity_rule"]) == ("high", "big-refund")
    small = explain({"level": "error", "message": "refund", "refund": {"amount": "10"}}, pipe)
    assert (small["severity"], small["category"]) == ("medium", "app")


def test_configured_duration_and_level_condition() -> None:
    pipe = pipeline(RULES)
    out = explain({"level": "error", "message": "x", "latency_ms": 2500}, pipe)
    assert out["severity_rule"] == "slow"
    out = explain({"level": "fatal", "message": "x", "latency_ms": 2500}, pipe)
    assert (out["severity"], out["severity_rule"]) == ("high", "fallback")


def test_category_only_rule_combines_with_later_severity() -> None:
    pipe = pipeline(RULES)
    out = explain({"level": "error", "message": "dial failed", "error_type": "ConnRefused"},
                  pipe)
    # severity from the first rule that sets one, category from the first that sets one
    assert (out["severity"], out["severity_rule"]) == ("low", "any-failed")
    assert (out["category"], out["category_rule"]) == ("network", "net")


def test_rule_regexes_are_case_insensitive() -> None:
    assert err("DATABASE CONNECTION FAILED")["category"] == "database"


# ---- durations ----------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "seconds"), [
    ({"duration_ms": 250}, 0.25),
    ({"latency_ms": "40"}, 0.04),
    ({"duration": 1.5}, 1.5),
    ({"duration": "1.5s"}, 1.5),
    ({"duration": "1m2s"}, 62.0),
    ({"elapsed": 30}, 0.03),
    ({"took": 7}, 0.007),
    ({"response_time": 120}, 0.12),
    ({"duration_us": 1500}, 0.0015),
    ({"event": {"duration": 2_000_000}}, 0.002),
    ({"duration_ms": 10, "duration": 99}, 0.01),
    ({"duration_ms": -5}, None),
    ({"duration_ms": "soon"}, None),
    ({"duration_ms": True}, None),
    ({}, None),
])
def test_duration_fields_and_units(fields: dict[str, Any], seconds: float | None) -> None:
    out = explain({"level": "info", "message": "done", **fields})
    if seconds is None:
        assert out["duration_seconds"] is None
    else:
        assert out["duration_seconds"] == pytest.approx(seconds)


def test_to_seconds() -> None:
    assert to_seconds(250, "ms") == pytest.approx(0.25)
    assert to_seconds("250ms", "s") == pytest.approx(0.25)
    assert to_seconds("2h", "ms") == 7200.0
    assert to_seconds(float("nan"), "s") is None
    assert to_seconds([1], "s") is None
