"""`tailpage-exporter run`: the live sidecar.

Loads the config, builds the pipeline, serves /metrics and follows the log files until SIGTERM or
SIGINT (stop reading, write the checkpoint, close). SIGHUP reloads the config: followed files,
offsets and counters are kept; globs, intervals and classification rules are swapped in.
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

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter import config as config_mod
from exporter.checkpoint import CheckpointStore
from exporter.expose import render
from exporter.pipeline import Pipeline
from exporter.server import SelfCollector, State, make_app
from exporter.tail import Input, Settings, Tailer

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
                          checkpoint=args.checkpoint)
    # Relative globs (`--path 'logs/*.log'`) mean relative to where we were started; made absolute
    # once so the tailer's file paths, the pipeline's per-input `format` match and the `path`
    # labels all agree (and a later SIGHUP reload means the same files).
    for inp in cfg.data["inputs"]:
        inp["path"] = os.path.abspath(inp["path"])
    cfg.data["checkpoint"]["path"] = os.path.abspath(cfg.data["checkpoint"]["path"])
    host, port = config_mod.parse_listen(cfg["listen"])
    inputs = [Input(path=i["path"], start_at=i["start_at"]) for i in cfg["inputs"]]
    settings = Settings(poll_interval=cfg.seconds("tail", "poll_interval"),
                        partial_flush_timeout=cfg.seconds("tail", "partial_flush_timeout"),
                        rescan_interval=cfg.seconds("tail", "rescan_interval"),
                        checkpoint_interval=cfg.seconds("checkpoint", "interval"))
    return cfg, Live(host, port, inputs, settings, cfg["checkpoint"]["path"])


def main(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every batch at INFO
    try:
        cfg, live = load(args)
    except config_mod.ConfigError as e:
        print(f"tailpage-exporter: {e}", file=sys.stderr)
        return 2
    return asyncio.run(serve(args, cfg, live))


async def serve(args: argparse.Namespace, cfg: config_mod.Config, live: Live) -> int:
    pipeline = Pipeline(cfg)
    tailer = Tailer(live.inputs, live.settings, pipeline, CheckpointStore(live.checkpoint_path))
    registry = CollectorRegistry(auto_describe=False)
    state = State(tailer=tailer, registry=registry)
    registry.register(pipeline.collector)
    registry.register(SelfCollector(state))
    runner = web.AppRunner(make_app(state, render), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, live.host, live.port)
    try:
        await site.start()
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", live.host or "*", live.port, e)
        await runner.cleanup()
        return 1
    for host, port, *_ in runner.addresses:  # the real port when 0 was asked
        log.info("listening on http://%s:%d/metrics", host, port)

    tailer.start()  # load the checkpoint, first scan
    state.config_loaded = True
    log.info("following %d file(s) for %s", len(tailer.files), [i.path for i in live.inputs])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop(signame: str) -> None:
        log.info("%s: stopping (checkpoint, then exit)", signame)
        stop.set()
        tailer.stop()

    def on_hup() -> None:
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

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_hup)

    code = 0
    task = asyncio.create_task(tailer.run())
    waiter = asyncio.create_task(stop.wait())
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
    await runner.cleanup()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    return code
