"""Heartbeat: the dead man's switch. An always-firing alert (kube-prometheus' Watchdog, our
TailpageWatchdog) re-sent by Alertmanager every repeat_interval is a ping; when no ping came for
period + grace, the receiver raises its own HeartbeatMissing alert, and resolves it when pings
resume. It enters as a webhook through intake's group path: a group of one under its own groupKey,
routed, escalated and acknowledged like any group (docs/receiver-heartbeats.md).

The state lives in the store (survives restarts, shared by PostgreSQL replicas). Every step is
idempotent, so a replica killed half-way, or two replicas doing the same step, still end in one
notification: the missing episode is claimed with a conditional update (one winner), and the
alert's startsAt is derived from the stored last ping, so the store's unique (fingerprint,
status, startsAt) turns any repeat into a duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import intake  # a module import: intake imports this module too
from .config import Heartbeat
from .state import State, task_stopping
from .store import StoreError

log = logging.getLogger("tailpage.receiver.heartbeat")

ALERTNAME = "HeartbeatMissing"
RUNBOOK = "https://github.com/tailpage/tailpage/blob/main/docs/runbook.md#heartbeatmissing"


def _matches(hb: Heartbeat, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in hb.match.items())


def split_pings(
    heartbeats: Sequence[Heartbeat], alerts: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """A webhook's alerts -> (the other alerts, names of the heartbeats pinged). Alerts matching
    a heartbeat are consumed, firing or resolved: a Watchdog must never reach a channel nor sit
    among the active alerts. Every firing copy is a ping, duplicates included."""
    if not heartbeats:
        return alerts, []
    rest: list[dict[str, Any]] = []
    pinged: list[str] = []
    for a in alerts:
        hits = [hb.name for hb in heartbeats if _matches(hb, a["labels"])]
        if not hits:
            rest.append(a)
        elif a["status"] == "firing":
            pinged.extend(hits)
    return rest, list(dict.fromkeys(pinged))


def without_pings(data: dict[str, Any], rest: list[dict[str, Any]]) -> dict[str, Any]:
    """The webhook with only the other alerts (split_pings' `rest`), for intake.build_group. When
    pings were taken out, the common labels and annotations are those of the rest, as Alertmanager
    would have sent them for a group without the watchdog: the group is routed and named by its
    own alerts, not by labels it shared with the watchdog only."""
    if len(rest) == len(data["alerts"]):
        return data
    return {
        **data,
        "alerts": rest,
        "commonLabels": _common([a["labels"] for a in rest]),
        "commonAnnotations": _common([a.get("annotations") or {} for a in rest]),
    }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first, *others = maps
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in others)}


async def record_pings(state: State, names: list[str]) -> None:
    now = state.clock()
    await state.store.heartbeat_pinged(names, now)
    for name in names:
        state.metrics.heartbeat_last_ping.labels(name).set(now)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _span(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec else "")
    return text or f"{seconds:g}s"


def missing_webhook(
    hb: Heartbeat, status: str, missing_since: float, last_ping_at: float, now: float
) -> dict[str, Any]:
    """The HeartbeatMissing alert as the webhook Alertmanager would send: its own groupKey, one
    alert, a fingerprint from the labels, startsAt derived from the stored state (the same on
    every replica and retry)."""
    labels = {**hb.labels, "alertname": ALERTNAME, "heartbeat": hb.name}
    match = ", ".join(f'{k}="{v}"' for k, v in sorted(hb.match.items()))
    return {
        "version": "4",
        "groupKey": f'tailpage-heartbeat:{{heartbeat="{hb.name}"}}',
        "status": status,
        "receiver": "tailpage-heartbeat",
        "groupLabels": {"alertname": ALERTNAME, "heartbeat": hb.name},
        "commonLabels": labels,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {
                    "summary": f"No heartbeat {hb.name} for {_span(hb.period_s + hb.grace_s)}",
                    "description": (
                        f"The receiver expects a firing alert {{{match}}} every "
                        f"{_span(hb.period_s)} (grace {_span(hb.grace_s)}); the last one came "
                        f"at {_iso(last_ping_at)}. Prometheus or Alertmanager may be down, or "
                        "the route from Alertmanager to this receiver broken: other alerts may "
                        "not be reaching you either."
                    ),
                    "runbook_url": RUNBOOK,
                },
                "startsAt": _iso(missing_since),
                "endsAt": _iso(now) if status == "resolved" else "0001-01-01T00:00:00Z",
                "fingerprint": hashlib.sha256(
                    json.dumps(labels, sort_keys=True).encode()
                ).hexdigest()[:16],
            }
        ],
    }


async def announce(
    state: State, hb: Heartbeat, status: str, missing_since: float, last_ping_at: float
) -> bool:
    """Store the HeartbeatMissing alert (firing or resolved) the way intake stores a webhook:
    intake.build_group routes the webhook as a group of one, the store ingests it (a repeat is a
    duplicate, so the group does not change). True when it was new."""
    now = state.clock()
    body = missing_webhook(hb, status, missing_since, last_ping_at, now)
    res = await state.store.ingest(intake.build_group(state.cfg, body), now)
    if res.deliveries:
        state.wake.set()
    return bool(res.accepted)


async def tick(state: State, started_at: float, now: float) -> None:
    """One look at every heartbeat. A receiver judges only after period + grace of its own
    uptime: while it was down itself, Alertmanager could not deliver the pings."""
    states = await state.store.heartbeat_states()
    for hb in state.cfg.heartbeats:
        st = states.get(hb.name)
        if st is None or st.last_ping_at is None:
            continue  # armed by its first ping
        state.metrics.heartbeat_last_ping.labels(hb.name).set(st.last_ping_at)
        wait = hb.period_s + hb.grace_s
        due = st.last_ping_at + wait
        since, announced = st.missing_since, st.announced
        if since is None and now >= due and now >= started_at + wait:
            if await state.store.heartbeat_claim_missing(hb.name, st.last_ping_at, due):
                since, announced = due, False
                log.warning("heartbeat %s missing: last ping %s", hb.name, _iso(st.last_ping_at))
        elif since is not None and due > since:  # a ping came after the one that went missing
            await announce(state, hb, "resolved", since, st.last_ping_at)
            if await state.store.heartbeat_clear_missing(hb.name, since):
                log.warning("heartbeat %s back: ping at %s", hb.name, _iso(st.last_ping_at))
            since = None
        if since is not None and not announced:
            await announce(state, hb, "firing", since, st.last_ping_at)
            await state.store.heartbeat_announced(hb.name, since)
        state.metrics.heartbeat_missing.labels(hb.name).set(1 if since is not None else 0)


async def run(state: State, poll_s: float) -> None:
    started_at = state.clock()
    while not task_stopping():
        try:
            await tick(state, started_at, state.clock())
        except StoreError as e:
            log.error("heartbeats: store unavailable: %s", e)
        await asyncio.sleep(poll_s)
