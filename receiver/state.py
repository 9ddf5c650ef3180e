"""What the request handlers and background tasks share: kept on the aiohttp app object."""

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
