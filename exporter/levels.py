"""Level stage: whatever a logger wrote as its level, normalised to one of LEVELS.

Names are matched case-insensitively with common abbreviations. Numbers >= 10 follow pino/bunyan
(10-60), 0-7 are syslog severities (GELF, journald). Go slog's offsets ("ERROR+4", "DEBUG-4")
count from slog's own scale. Anything else is `unknown`, never an error. Every function here runs
once per distinct raw value (the pipeline caches the result), never per line.
"""

from __future__ import annotations

import re

LEVELS = ("trace", "debug", "info", "warning", "error", "fatal", "unknown")
ERROR_LEVELS = frozenset(("error", "fatal"))

_NAMES = {
    "trace": "trace", "trc": "trace", "verbose": "trace", "vrb": "trace", "finest": "trace",
    "finer": "trace", "all": "trace", "t": "trace",
    "debug": "debug", "dbg": "debug", "dbug": "debug", "fine": "debug", "config": "debug",
    "d": "debug",
    "info": "info", "inf": "info", "information": "info", "informational": "info",
    "notice": "info", "ntc": "info", "i": "info", "log": "info",
    "default": "unknown",  # Google Cloud Logging: "no assigned severity"
    "warn": "warning", "warning": "warning", "wrn": "warning", "wrng": "warning", "w": "warning",
    "error": "error", "err": "error", "eror": "error", "erro": "error", "e": "error",
    "severe": "error", "exception": "error", "failure": "error", "fail": "error",
    "fatal": "fatal", "ftl": "fatal", "critical": "fatal", "crit": "fatal", "crt": "fatal",
    "alert": "fatal", "emerg": "fatal", "emergency": "fatal", "panic": "fatal", "dpanic": "fatal",
    "f": "fatal", "c": "fatal",
    "silly": "trace", "http": "info",  # winston's npm levels
}

_SYSLOG = ("fatal", "fatal", "fatal", "error", "warning", "info", "info", "debug")  # severities 0-7
# tried on what is left after stripping brackets, e.g. "warning!" or "error:db"
_PREFIXES = (("warn", "warning"), ("err", "error"), ("fatal", "fatal"), ("crit", "fatal"),
             ("emerg", "fatal"), ("info", "info"), ("debug", "debug"), ("trace", "trace"))


def from_number(n: float) -> str:
    """Numeric level. Numbers >= 10 follow pino/bunyan (10 trace, 20 debug, 30 info, 40 warn,
    50 error, 60 fatal): those loggers emit numbers by default, while Python's logging (whose 10-50
    scale disagrees by one step) emits names. Numbers 0-7 are syslog severities."""
    if n >= 60:
        return "fatal"
    if n >= 50:
        return "error"
    if n >= 40:
        return "warning"
    if n >= 30:
        return "info"
    if n >= 20:
        return "debug"
    if n >= 10:
        return "trace"
    if 0 <= n < 8:
        return _SYSLOG[int(n)]
    return "unknown"


# slog: DEBUG=-4 INFO=0 WARN=4 ERROR=8, custom levels print as the nearest name below plus an
# offset; 12 and up is what Go programs define as fatal, -8 and below as trace
_SLOG = re.compile(r"(debug|info|warn|error)([+-][0-9]{1,3})")
_SLOG_BASE = {"debug": -4, "info": 0, "warn": 4, "error": 8}


def _slog(name: str, offset: str) -> str:
    v = _SLOG_BASE[name] + int(offset)
    if v >= 12:
        return "fatal"
    if v < -4:
        return "trace"
    return ("debug", "info", "warning", "error")[(v + 4) // 4]


def _int(digits: str) -> int:
    """ASCII digits as a number for from_number: every value of ten digits or more is fatal
    alike, and int() refuses thousands of digits."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 10 else 10**9


def normalize(raw: object) -> str:
    """Any raw level value to one of LEVELS."""
    if raw is None:
        return "unknown"
    if isinstance(raw, str):
        s = raw.strip().lower()
        got = _NAMES.get(s)
        if got is not None:
            return got
        if s.isascii() and s.isdigit():  # str.isdigit alone takes "²", which int() refuses
            return from_number(_int(s))
        m = _SLOG.fullmatch(s)
        if m is not None:
            return _slog(m.group(1), m.group(2))
        # "WARN " padded, "<error>", "level=error" style leftovers
        s = s.strip("[]<>() :")
        got = _NAMES.get(s)
        if got is not None:
            return got
        for prefix, level in _PREFIXES:
            if s.startswith(prefix):
                return level
        return "unknown"
    if isinstance(raw, bool):
        return "unknown"
    if isinstance(raw, int | float):
        return from_number(raw)
    return "unknown"
