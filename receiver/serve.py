"""`run`: serve the app until SIGTERM or SIGINT (signals.py), then shut down within
`shutdown_grace`: aiohttp stops accepting connections and lets in-flight webhooks finish while the
delivery workers finish the notifications in hand (app.py), all within the one grace."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .app import build_app
from .config import Config
from .signals import Stopper

log = logging.getLogger("tailpage.receiver")


async def serve(cfg: Config, stopper: Stopper) -> None:
    runner = web.AppRunner(build_app(cfg), access_log=None, shutdown_timeout=cfg.shutdown_grace_s)
    waiting = asyncio.create_task(stopper.wait())
    await runner.setup()  # opens the store, starts the workers
    try:
        if not waiting.done():
            await web.TCPSite(runner, cfg.listen_host, cfg.listen_port).start()
            log.info("listening on %s:%d", cfg.listen_host, cfg.listen_port)
        await waiting
        log.info("in-flight webhooks and notifications get up to %gs", cfg.shutdown_grace_s)
    finally:
        waiting.cancel()
        await runner.cleanup()
    log.info("stopped")
