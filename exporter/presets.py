"""Preset stage: where each logger puts level, message, error and stack.

A preset is data: field paths tried in order. `detect` looks at the first JSON record of a file
and names the logger only when its shape is unambiguous; otherwise `generic` (the union of the
common names, which also covers winston and plain console JSON) is used. Component, trace id and
duration fields come from the config and apply to every preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERR_TYPES = ("error_type", "error.type", "err.type", "errorType", "error.name", "err.name",
             "exception.type", "exc_type", "exception.0.exc_type", "thrown.name", "error.kind",
             "code", "error.code", "err.code")
ERR_MESSAGES = ("error.message", "err.message", "error", "err", "thrown.message",
                "exception.0.exc_value", "errorMessage")
STACKS = ("stack", "stacktrace", "stack_trace", "error.stack", "err.stack", "error.stack_trace",
          "exception", "exc_info", "@x", "thrown.extendedStackTrace")


@dataclass(frozen=True)
class Preset:
    name: str
    level: tuple[str, ...]
    message: tuple[str, ...]
    error_type: tuple[str, ...] = ERR_TYPES
    error_message: tuple[str, ...] = ERR_MESSAGES
    stack: tuple[str, ...] = STACKS
    component: tuple[str, ...] = ()  # preset-specific component fields, tried before the config's
    # the level when the field is absent (Serilog omits Information)
    default_level: str | None = None


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("generic", ("level", "lvl", "severity", "levelname", "loglevel", "log.level", "@l",
                       "level_name"),
           ("message", "msg", "event", "@m", "@mt", "log", "fields.message")),
    # pino before v7 merged an error's fields into the record: top-level `type` and `stack`
    Preset("pino", ("level",), ("msg", "message"), ("err.type", "err.name", "err.code", "type"),
           ("err.message",), ("err.stack", "stack")),
    Preset("bunyan", ("level",), ("msg",), ("err.name", "err.code"), ("err.message",),
           ("err.stack",)),
    Preset("winston", ("level",), ("message",), ERR_TYPES, ERR_MESSAGES, STACKS),
    Preset("zap", ("level",), ("msg",), ("error_type", "code"), ("error",),
           ("stacktrace", "errorVerbose"), ("logger",)),
    Preset("logrus", ("level",), ("msg",), ("error_type", "code"), ("error",), ("stack",)),
    Preset("zerolog", ("level",), ("message",), ("error_type", "code"), ("error",), ("stack",)),
    Preset("slog", ("level",), ("msg",), ("error_type", "err.type", "code"), ("err", "error"),
           ("stack", "source")),
    Preset("structlog", ("level", "log_level"), ("event",),
           ("exc_type", "exception.0.exc_type", "error_type"), ("exception.0.exc_value", "error"),
           ("exception", "exc_info", "stack"), ("logger",)),
    Preset("python-json-logger", ("levelname", "level"), ("message", "msg"),
           ("exc_type", "error_type"), ("error",), ("exc_info", "stack_info"), ("name",)),
    Preset("serilog", ("@l",), ("@m", "@mt"), ("ExceptionType", "error_type"), (),
           ("@x",), ("SourceContext",), default_level="info"),
    Preset("ecs", ("log.level", "level"), ("message",),
           ("error.type", "thrown.name", "error_type"), ("error.message", "thrown.message"),
           ("error.stack_trace", "thrown.extendedStackTrace"), ("service.name", "log.logger")),
)}


def detect(rec: dict[str, Any]) -> str:
    """Name the logger from one decoded JSON object; `generic` when the shape is ambiguous."""
    keys = rec.keys()
    level = rec.get("level")
    if "@t" in keys and ("@m" in keys or "@mt" in keys):
        return "serilog"
    if "log.level" in keys or ("@timestamp" in keys and isinstance(rec.get("log"), dict)
                               and "level" in rec["log"]) or "ecs.version" in keys \
            or isinstance(rec.get("ecs"), dict):
        return "ecs"
    if isinstance(level, int) and not isinstance(level, bool):
        if rec.get("v") == 0 and "hostname" in keys and "msg" in keys:
            return "bunyan"
        if "time" in keys and ("msg" in keys or "pid" in keys):
            return "pino"
        return "generic"
    if "levelname" in keys:
        return "python-json-logger"
    if "event" in keys and ("level" in keys or "log_level" in keys) and "msg" not in keys \
            and "message" not in keys:
        return "structlog"
    if isinstance(level, str):
        if "pid" in keys and "hostname" in keys and "msg" in keys:
            return "pino"  # pino with `formatters.level` writing the label: not logrus
        if "ts" in keys and "msg" in keys and ("caller" in keys or "logger" in keys
                                               or isinstance(rec.get("ts"), float)):
            return "zap"
        if "time" in keys and "msg" in keys:
            # slog's JSONHandler writes upper-case level names, logrus lower-case
            return "slog" if level.isupper() else "logrus"
        if "time" in keys and "message" in keys and "timestamp" not in keys:
            return "zerolog"
    return "generic"
