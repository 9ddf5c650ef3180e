"""`tailpage-exporter run`: the live sidecar.

Loads the config, builds the pipeline, serves /metrics and follows the log files until SIGTERM or
SIGINT (stop reading, write the checkpoint, close, exit 0). SIGHUP reloads the config: followed
files, offsets and counters are kept; globs, intervals and classification rules are swapped in.

Signals are handled from the first line of `cli.main` (exporter/signals.py) to the exit, never
handed back to Python's defaults, so any number of SIGINT/SIGTERM in a row (Ctrl-C, then the
process manager's SIGTERM), from the first moments on, still end in one clean stop: exit status
0, the final checkpoint written, no traceback. The pipeline,
server and tailer are imported after that (they are most of the start-up time).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter import config as config_mod
from exporter.signals import STOP_SIGNALS, Signals

if TYPE_CHECKING:
    from exporter.tail import Input, Settings

log = logging.getLogger("exporter.run")


@dataclass(frozen=True)
class Live:
    """The live-mode part of the config, after command-line overrides."""

    host: str | None
    port: int
    inputs: list[Input]
    settings: Settings
    checkpoint_path: str


def load(args: argparse.Namespace) -> tuple[config_mod.Config, Live]:
    """Config file (or the embedded default) with the command line applied; ConfigError if bad."""
    cfg = config_mod.load(args.config, listen=args.listen, paths=args.path or None,
                          checkpoint=args.checkpoint, isolated=True)  # no jsonschema kept here
    # Relative globs (`--path 'logs/*.log'`) mean relative to where we were started; made absolute
    # once so the tailer's file paths, the pipeline's per-input `format` match and the `path`
    # labels all agree (and a later SIGHUP reload means the same files).
    for inp in cfg.data["inputs"]:
        inp["path"] = os.path.abspath(inp["path"])
    cfg.data["checkpoint"]["path"] = os.path.abspath(cfg.data["checkpoint"]["path"])
    from exporter.tail import Input, Settings

    host, port = config_mod.parse_listen(cfg["listen"])
    inputs = [Input(path=i["path"], start_at=i["start_at"]) for i in cfg["inputs"]]
    settings = Settings(poll_interval=cfg.seconds("tail", "poll_interval"),
                        partial_flush_timeout=cfg.seconds("tail", "partial_flush_timeout"),
                        rescan_interval=cfg.seconds("tail", "rescan_interval"),
                        checkpoint_interval=cfg.seconds("checkpoint", "interval"))
    return cfg, Live(host, port, inputs, settings, cfg["checkpoint"]["path"])


def give_back_memory() -> None:
    """Hand the heap freed since start (import and parsing temporaries, the config's JSON) back to
    the kernel: glibc's malloc keeps it otherwise, ~1.5 MB of an idle sidecar's resident memory.
    ctypes is loaded already (inotify_simple uses it)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def main(args: argparse.Namespace, signals: Signals | None = None) -> int:
    """`signals`: installed by cli.main before anything else (made here when not)."""
    signals = signals or Signals()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg, live = load(args)
    except config_mod.ConfigError as e:
        print(f"tailpage-exporter: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(args, cfg, live, signals))
    finally:
        # Stopped: later signals are ignored by the kernel, so none can kill the process (Python
        # puts back the default action of signals it handles while it exits) or print a traceback.
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)


async def serve(args: argparse.Namespace, cfg: config_mod.Config, live: Live,
                signals: Signals) -> int:
    from prometheus_client.registry import CollectorRegistry

    from exporter.checkpoint import CheckpointStore
    from exporter.expose import render
    from exporter.pipeline import Pipeline
    from exporter.server import MetricsServer, SelfCollector, State
    from exporter.tail import Tailer

    pipeline = Pipeline(cfg)
    tailer = Tailer(live.inputs, live.settings, pipeline, CheckpointStore(live.checkpoint_path))
    registry = CollectorRegistry(auto_describe=False)
    state = State(tailer=tailer, registry=registry)
    registry.register(pipeline.collector)
    registry.register(SelfCollector(state))
    try:
        server = MetricsServer(state, render, live.host, live.port)
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", live.host or "*", live.port, e)
        return 1
    host, port = server.address
    log.info("listening on http://%s:%d/metrics", f"[{host}]" if ":" in host else host, port)

    tailer.start()  # load the checkpoint, first scan
    state.config_loaded = True
    give_back_memory()
    log.info("following %d file(s) for %s", len(tailer.files), [i.path for i in live.inputs])

    stop = asyncio.Event()

    def on_stop(signame: str) -> None:
        if stop.is_set():
            log.info("%s: already stopping", signame)
            return
        log.info("%s: stopping (checkpoint, then exit)", signame)
        stop.set()
        tailer.stop()

    def on_hup() -> None:
        if stop.is_set():
            return
        try:
            new_cfg, new_live = load(args)
        except config_mod.ConfigError as e:  # keep running on the config we have
            log.error("SIGHUP: config not reloaded: %s", e)
            return
        if (new_live.host, new_live.port) != (live.host, live.port):
            log.warning("SIGHUP: listen address changes need a restart; still on the old one")
        pipeline.reload(new_cfg)  # swaps classification; keeps the aggregated series and Sources
        tailer.reconfigure(new_live.inputs, new_live.settings)
        tailer.store = CheckpointStore(new_live.checkpoint_path)
        log.info("SIGHUP: config reloaded; following %s", [i.path for i in new_live.inputs])
        give_back_memory()

    signals.attach(asyncio.get_running_loop(), on_stop, on_hup)
    code = 0
    task = asyncio.create_task(tailer.run())
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        tailer.stop()
        try:
            await task
        except Exception as e:  # a bug, not bad input: record why, checkpoint what we have, exit 1
            log.exception("tailing stopped")
            state.failed = type(e).__name__
            code = 1
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        followed = len(tailer.files)
        await tailer.close()
        log.info("stopped; final checkpoint covers %d file(s)", followed)
    finally:
        await asyncio.to_thread(server.close)
        signals.detach()
    return code
