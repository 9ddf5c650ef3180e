"""SIGTERM, SIGINT and SIGHUP for `tailpage-exporter run`, handled from the process's first
moments: `cli.main` installs them before it parses the command line or imports anything heavy
(prometheus_client, asyncio, the pipeline: a few hundred ms on a loaded node), so a SIGTERM during
start-up ends in a clean exit 0, not in Python's default (status 143 or a KeyboardInterrupt
traceback). Hence this module imports only `signal` and `contextlib`.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    import socket

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Signals:
    """SIGTERM, SIGINT and SIGHUP as callbacks on the event loop, from `main`'s first line on.

    Before the loop runs (and after it ended) a stop signal is only remembered; `attach` hands the
    loop the ones received so far. The C-level handler also writes each signal to a socket the loop
    watches (`signal.set_wakeup_fd`), so the loop wakes even when another thread took the signal.
    """

    def __init__(self) -> None:
        self.early: list[str] = []  # stop signals received while no loop listens
        self.loop: asyncio.AbstractEventLoop | None = None
        self.callbacks: dict[int, Callable[[], None]] = {}
        self._pair: tuple[socket.socket, socket.socket] | None = None
        for sig in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        loop, callback = self.loop, self.callbacks.get(signum)
        if loop is not None and callback is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to do
                loop.call_soon_threadsafe(callback)
                return
        if signum in STOP_SIGNALS:
            self.early.append(signal.Signals(signum).name)

    def attach(self, loop: asyncio.AbstractEventLoop, on_stop: Callable[[str], None],
               on_hup: Callable[[], None]) -> None:
        import socket

        rsock, wsock = self._pair = socket.socketpair()
        for s in self._pair:
            s.setblocking(False)
        signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)

        def drain() -> None:  # woken: the Python-level handler runs right after this
            with contextlib.suppress(OSError):
                rsock.recv(4096)

        loop.add_reader(rsock.fileno(), drain)
        self.callbacks = {signal.SIGTERM: lambda: on_stop("SIGTERM"),
                          signal.SIGINT: lambda: on_stop("SIGINT"), signal.SIGHUP: on_hup}
        self.loop = loop
        for name in self.early:
            loop.call_soon(on_stop, name)

    def detach(self) -> None:
        """Back to remembering only (the handlers stay ours until the process exits)."""
        if self.loop is not None and self._pair is not None:
            signal.set_wakeup_fd(-1)
            self.loop.remove_reader(self._pair[0].fileno())
            for s in self._pair:
                s.close()
        self.loop, self._pair, self.callbacks = None, None, {}
