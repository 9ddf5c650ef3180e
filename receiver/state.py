"""What the request handlers and background tasks share: the State kept on the aiohttp app
object, and how a background loop knows it has been asked to stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from .config import Config
from .metrics import Metrics
from .store import Store


@dataclass
class State:
    cfg: Config
    store: Store
    metrics: Metrics
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # new outbox rows: wake workers
    clock: Callable[[], float] = time.time
    ready: bool = False


STATE = web.AppKey("tailpage_state", State)


def task_stopping() -> bool:
    """This task was asked to stop. A library can swallow the CancelledError (a cancel racing a
    result on Python 3.11); the loop then ends here instead of running on forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
