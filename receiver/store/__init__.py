"""Durable state: alert events, outbox, escalation timers, rate-limit buckets, digests."""

from .base import (
    Delivery,
    EscalationFired,
    HeartbeatState,
    IncomingAlert,
    IncomingGroup,
    IngestResult,
    Store,
    StoreError,
    open_store,
)

__all__ = [
    "Delivery",
    "EscalationFired",
    "HeartbeatState",
    "IncomingAlert",
    "IncomingGroup",
    "IngestResult",
    "Store",
    "StoreError",
    "open_store",
]
