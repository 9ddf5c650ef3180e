"""SIGTERM and SIGINT for `tailpage-receiver run`: caught for the whole life of the process, not
only while the event loop runs, and any number of them (Ctrl-C in `make run` sends SIGINT and then
the script's SIGTERM) means the same one graceful stop: no KeyboardInterrupt traceback, no death
by a second signal (status 143). This module is light on purpose: cli.py installs it before
importing apprise and aiohttp (~0.7 s), so even a signal during startup ends the process with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType

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
        name = signal.Signals(signum).name
        self.signals.append(name)
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting anyway
                self.loop.call_soon_threadsafe(self._on_loop, name)

    def _on_loop(self, name: str) -> None:
        if self.event is None:
            return
        if self.event.is_set():
            log.info("%s: already stopping", name)
        else:
            log.info("%s: stopping", name)
        self.event.set()

    async def wait(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        if self.signals:  # one arrived before the loop ran
            log.info("%s during startup: stopping", self.signals[0])
            self.event.set()
        await self.event.wait()
