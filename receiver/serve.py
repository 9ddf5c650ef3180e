"""`run`: serve the app until SIGTERM or SIGINT, then shut down within `shutdown_grace`.

Signals are caught for the whole life of the process, not only while the event loop runs, and
any number of them (Ctrl-C in `make run` sends SIGINT and then the script's SIGTERM) means the
same one graceful stop: no KeyboardInterrupt traceback, no death by a second signal (status 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType

from aiohttp import web

from .app import build_app
from .config import Config

log = logging.getLogger("tailpage.receiver")


class Stopper:
    """Turns SIGTERM/SIGINT into an asyncio.Event on the running loop. The Python-level handler
    only schedules a callback: logging from a signal handler could interleave with a log line."""

    def __init__(self) -> None:
        self.signals: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signal.Signals(signum).name)
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting anyway
                self.loop.call_soon_threadsafe(self._on_loop)

    def _on_loop(self) -> None:
        if self.event is None:
            return
        if self.event.is_set():
            log.info("%s again: already stopping", self.signals[-1])
        else:
            log.info("%s: stopping", self.signals[-1])
        self.event.set()

    async def wait(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        if self.signals:  # one arrived before the loop ran
            self.event.set()
        await self.event.wait()


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
