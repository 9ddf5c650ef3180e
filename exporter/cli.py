"""tailpage-exporter: run (live sidecar), oneshot, explain, check-config.

Exit codes: 0 ok, 1 runtime failure (e.g. an unreadable log file), 2 bad config or usage.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from exporter import config as config_mod

# Imports are made where they are needed: `run` installs its signal handlers first (main), and
# until then a SIGTERM would end the process with Python's default (status 143).

CHUNK = 1 << 20  # oneshot reads 1 MiB at a time: few syscalls, bounded memory


def _parser() -> argparse.ArgumentParser:
    import argparse

    from exporter import config as config_mod

    # choices and defaults shown in --help come from the schema, the one place they are declared
    keys = config_mod.schema()["properties"]
    formats = config_mod.schema()["$defs"]["format"]["enum"]
    p = argparse.ArgumentParser(prog="tailpage-exporter",
                                description="Structured application logs to Prometheus metrics.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="follow log files and serve /metrics (the sidecar)")
    run.add_argument("--config", metavar="FILE", help="YAML config (default: embedded defaults)")
    run.add_argument("--listen", metavar="HOST:PORT",
                     help=f"overrides `listen` (default {keys['listen']['default']})")
    run.add_argument("--path", metavar="GLOB", action="append",
                     help="file glob to follow, repeatable; replaces `inputs` "
                          f"(default {keys['inputs']['default'][0]['path']})")
    run.add_argument("--checkpoint", metavar="FILE", help="overrides `checkpoint.path` (default "
                     f"{keys['checkpoint']['properties']['path']['default']})")

    one = sub.add_parser("oneshot", help="read files once, print the metrics, exit")
    one.add_argument("--config", metavar="FILE")
    one.add_argument("--format", choices=formats, help="overrides `format`")
    one.add_argument("--openmetrics", action="store_true",
                     help="print OpenMetrics (with exemplars) instead of Prometheus text")
    one.add_argument("files", nargs="+", metavar="FILE")

    exp = sub.add_parser("explain", help="show what the exporter makes of one line (or stdin)")
    exp.add_argument("--config", metavar="FILE")
    exp.add_argument("--format", choices=formats, help="overrides `format`")
    exp.add_argument("--json", action="store_true", help="one JSON object per line")
    exp.add_argument("line", nargs="?", help="the log line; each line of stdin when omitted")

    chk = sub.add_parser("check-config", help="validate a config file against the schema")
    chk.add_argument("file", metavar="FILE")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signals = None
    if argv[:1] == ["run"]:  # the sidecar: SIGTERM/SIGINT/SIGHUP handled from here on
        from exporter.signals import Signals

        signals = Signals()
    args = _parser().parse_args(argv)  # usage errors exit 2 (argparse)
    from exporter import config as config_mod

    if args.command == "run":
        from exporter import run  # the live part: the server, the tailer, asyncio

        return run.main(args, signals)
    try:
        if args.command == "check-config":
            config_mod.load(args.file)
            print(f"{args.file}: ok")
            return 0
        cfg = config_mod.load(args.config, format=getattr(args, "format", None))
    except config_mod.ConfigError as e:
        print(f"tailpage-exporter: {e}", file=sys.stderr)
        return 2
    if args.command == "oneshot":
        return oneshot(cfg, args.files, args.openmetrics)
    return explain(cfg, args.line, args.json, args.format)


def oneshot(cfg: config_mod.Config, files: list[str], openmetrics: bool = False) -> int:
    import os

    from exporter.expose import render
    from exporter.pipeline import Pipeline

    pipe = Pipeline(cfg)
    status = 0
    sizes = {}
    for f in files:
        try:
            sizes[f] = os.path.getsize(f)
        except OSError:
            sizes[f] = 0
    total = sum(sizes.values()) or 1
    bar = _Progress(total) if sys.stderr.isatty() else None
    for path in files:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - read in a loop below
        except OSError as e:
            print(f"tailpage-exporter: {path}: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        with fh:
            src = pipe.open(path)
            while chunk := fh.read(CHUNK):
                src.feed(chunk)
                if bar:
                    bar.advance(len(chunk))
            src.flush()
    if bar:
        bar.done()
    sys.stdout.buffer.write(render(pipe.registry, openmetrics))
    sys.stdout.flush()
    return status


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done_bytes, self.shown = total, 0, -1

    def advance(self, n: int) -> None:
        self.done_bytes += n
        pct = min(100, self.done_bytes * 100 // self.total)
        if pct != self.shown:
            self.shown = pct
            filled = pct * 30 // 100
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {pct:3d}%")
            sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


def explain(cfg: config_mod.Config, line: str | None, as_json: bool,
            fmt: str | None = None) -> int:
    import json

    from exporter.pipeline import Pipeline

    pipe = Pipeline(cfg)
    lines = [line] if line is not None else (ln.rstrip("\n") for ln in sys.stdin)
    for text in lines:
        out = pipe.explain(text.encode("utf-8", "surrogateescape"), fmt if fmt != "auto" else None)
        if as_json:
            print(json.dumps(out, default=str, ensure_ascii=False))
        else:
            print(_human(out))
    return 0


def _human(out: dict[str, Any]) -> str:
    import json

    rows = []
    for key, value in out.items():
        if isinstance(value, dict):
            v = json.dumps(value, default=str, ensure_ascii=False)
        else:
            v = "" if value is None else str(value)
        rows.append(f"{key + ':':<20} {v}")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
