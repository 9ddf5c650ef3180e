"""Writes the sample log files that tests/exporter/test_presets.py reads.

Real output of the real libraries, run once and committed so the tests need none of them:
  Python (structlog, python-json-logger, stdlib logging):  .venv/bin/python make_samples.py
  Node (pino, bunyan, winston):  see make_samples.js
  Go (zap, logrus, zerolog):     see make_samples.go
Go slog (needs Go 1.21), Serilog (.NET) and ECS/log4j2 (Java) are not installable from the
registries this project uses: slog.log, serilog.log, ecs.log and log4j2.log are written by hand
from those libraries' documented output and are kept as they are here.

Every file logs the same story (SCRIPT), at the levels its logger has.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

# (level, message, extra fields); the error lines carry an exception
SCRIPT = [
    ("debug", "cache miss for key user:42", {}),
    ("info", "request completed", {"duration_ms": 12.5}),
    ("warning", "slow query took 5400ms", {}),
    ("error", "database connection failed", {}),
    ("error", "payment processing failed for order 1234", {}),
    ("critical", "out of memory", {}),
]


class PaymentDeclinedError(Exception):
    pass


def _raise(i: int) -> None:
    if i == 3:
        raise ConnectionRefusedError(111, "Connection refused")
    raise PaymentDeclinedError("card declined for order 1234")


def _stdlib(name: str, fmt: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(fmt)
    log = logging.getLogger(name)
    log.handlers[:] = [h]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log, buf


def python_json_logger(out: Path) -> None:
    from pythonjsonlogger.json import JsonFormatter

    log, buf = _stdlib("payments", JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for i, (level, msg, extra) in enumerate(SCRIPT):
        if level == "error":
            try:
                _raise(i)
            except Exception:
                log.exception(msg, extra=extra)
        else:
            getattr(log, level)(msg, extra=extra)
    (out / "python-json-logger.log").write_text(buf.getvalue())


def stdlib_text(out: Path) -> None:
    """Plain-text stdlib logging, for the regex format."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")
    log, buf = _stdlib("worker", fmt)
    for i, (level, msg, extra) in enumerate(SCRIPT):
        text = f"{msg} duration_ms={extra['duration_ms']}" if extra else msg
        if level == "error":
            try:
                _raise(i)
            except Exception as e:
                log.error("%s: %s: %s", text, type(e).__name__, e)
        else:
            getattr(log, level)(text)
    (out / "stdlib.log").write_text(buf.getvalue())


def structlog_samples(out: Path) -> None:
    import structlog

    # the exception as a formatted string, and as structlog's dict (without frame locals)
    as_dict = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
    for name, exc_proc in (("structlog.log", structlog.processors.format_exc_info),
                           ("structlog-dict.log", as_dict)):
        buf = io.StringIO()
        structlog.configure(
            processors=[structlog.processors.add_log_level,
                        structlog.processors.TimeStamper(fmt="iso", utc=True),
                        exc_proc, structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=structlog.PrintLoggerFactory(buf), cache_logger_on_first_use=False)
        log = structlog.get_logger().bind(component="inventory")
        for i, (level, msg, extra) in enumerate(SCRIPT):
            if level == "error":
                try:
                    _raise(i)
                except Exception:
                    log.exception(msg, **extra)
            else:
                getattr(log, level)(msg, **extra)
        (out / name).write_text(buf.getvalue())
    structlog.reset_defaults()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    python_json_logger(out)
    structlog_samples(out)
    stdlib_text(out)


if __name__ == "__main__":
    main()
