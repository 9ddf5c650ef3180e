"""Escalate: fire due escalation steps. The timers live in the store, so they survive restarts
and, on PostgreSQL, are claimed by exactly one replica."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .metrics import Metrics
from .state import task_stopping
from .store import Store, StoreError

log = logging.getLogger("tailpage.receiver.escalate")


async def tick(store: Store, metrics: Metrics, wake: asyncio.Event, now: float) -> int:
    fired = await store.fire_due_escalations(now, 100)
    for f in fired:
        metrics.escalations.labels(str(f.step)).inc()
        log.warning(
            "escalation step %d of %s (not acknowledged): %s",
            f.step,
            f.fingerprint,
            ", ".join(f.channels),
        )
    if fired:
        wake.set()
    return len(fired)


async def run(
    store: Store,
    metrics: Metrics,
    wake: asyncio.Event,
    poll_s: float,
    clock: Callable[[], float] = time.time,
) -> None:
    while not task_stopping():
        try:
            if await tick(store, metrics, wake, clock()):
                continue
        except StoreError as e:
            log.error("escalation: store unavailable: %s", e)
        await asyncio.sleep(poll_s)
