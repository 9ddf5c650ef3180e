"""What both stores do alike around their SQL: statement parameters from an alert, rows shaped
into the dicts and dataclasses the receiver sees, escalation and token-bucket arithmetic.

The SQL stays in each backend (placeholders, locking and JSON functions differ); these functions
are where they must agree, so an answer never depends on the backend. The one backend difference
they see is JSON: SQLite keeps it as text, PostgreSQL's jsonb comes back decoded. So each takes the
backend's `dump` (value -> parameter) or `load` (column -> value, None stays None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .base import Delivery, IncomingAlert, IngestResult

Dump = Callable[[Any], Any]
Load = Callable[[Any], Any]
Plan = list[list[Any]]  # [[after_s, [channel, ...]], ...] as stored in alerts.escalation


class Row(Protocol):
    """A result row read by column name: sqlite3.Row and psycopg's dict_row both are."""

    def __getitem__(self, key: str, /) -> Any: ...


# -- intake -----------------------------------------------------------------------------------


def event_params(a: IncomingAlert, source: str, now: float, dump: Dump) -> tuple[Any, ...]:
    """INSERT INTO events(fingerprint, status, starts_at, ends_at, labels, annotations,
    generator_url, severity, external_url, source, received_at)."""
    return (
        a.fingerprint,
        a.status,
        a.starts_at,
        a.ends_at,
        dump(a.labels),
        dump(a.annotations),
        a.generator_url,
        a.severity,
        a.external_url,
        source,
        now,
    )


def escalation_plan(a: IncomingAlert, now: float) -> tuple[Plan, float | None]:
    """The stored plan of a firing alert and when its first step is due (None: no escalation).
    Lists, not tuples: that is what the JSON column gives back."""
    plan = [[after, list(chs)] for after, chs in a.escalation]
    return plan, (now + plan[0][0]) if plan else None


def _alert_columns(a: IncomingAlert, dump: Dump) -> tuple[Any, ...]:
    # what a firing and a resolved upsert of the alerts row both write first
    return (
        a.fingerprint,
        a.severity,
        dump(a.labels),
        dump(a.annotations),
        a.starts_at,
        a.generator_url,
    )


def firing_alert_params(
    a: IncomingAlert, event_id: int, now: float, plan: Plan, next_at: float | None, dump: Dump
) -> tuple[Any, ...]:
    """The upsert of a firing alert: fingerprint, severity, labels, annotations, starts_at,
    generator_url, firing_event_id, first_notified_at, updated_at, escalation,
    next_escalation_at."""
    return (*_alert_columns(a, dump), event_id, now, now, dump(plan), next_at)


def resolved_alert_params(
    a: IncomingAlert, who: str | None, now: float, dump: Dump
) -> tuple[Any, ...]:
    """The upsert of a resolved alert: fingerprint, severity, labels, annotations, starts_at,
    generator_url, first_notified_at, updated_at, resolved_by, resolved_at."""
    return (*_alert_columns(a, dump), now, now, who or "alertmanager", now)


def ingest_result(alerts: Sequence[IncomingAlert], counts: Sequence[int | None]) -> IngestResult:
    """Alerts in their webhook order; counts[i] is None for a duplicate, else its outbox rows."""
    res = IngestResult()
    for a, n in zip(alerts, counts, strict=True):
        if n is None:
            res.duplicates.append(a)
        else:
            res.accepted.append(a)
            res.deliveries += n
    return res


def manual_resolve_alert(r: Row, load: Load) -> IncomingAlert:
    """A manual resolve is intake of a resolved event built from the alert row, so it is
    announced and recorded exactly like one Alertmanager sent."""
    return IncomingAlert(
        fingerprint=r["fingerprint"],
        status="resolved",
        starts_at=r["starts_at"],
        ends_at=None,
        labels=load(r["labels"]),
        annotations=load(r["annotations"]),
        generator_url=r["generator_url"],
        severity=r["severity"],
        channels=(),
    )


# -- delivery ---------------------------------------------------------------------------------


def delivery(r: Row, load: Load) -> Delivery:
    """A claimed outbox row joined with its event and alert. Event columns are NULL for a
    digest row (no event), hence the defaults."""
    return Delivery(
        id=r["id"],
        channel=r["channel"],
        kind=r["kind"],
        step=r["step"],
        attempts=r["attempts"],
        created_at=r["created_at"],
        fingerprint=r["fingerprint"],
        status=r["status"] or "",
        severity=r["severity"] or "unknown",
        labels=load(r["labels"]) or {},
        annotations=load(r["annotations"]) or {},
        starts_at=r["starts_at"] or "",
        generator_url=r["generator_url"],
        external_url=r["external_url"],
        resolved_by=r["resolved_by"] if r["source"] == "manual" else None,
        digest=load(r["payload"]),
    )


def take_token(
    tokens: float, updated_at: float, now: float, rate: float, burst: int
) -> tuple[bool, float]:
    """Token bucket: refill for the time since updated_at (never back in time, never above
    burst), then take one token if there is one. (taken, tokens left)."""
    tokens = min(float(burst), tokens + max(0.0, now - updated_at) * rate)
    if tokens >= 1.0:
        return True, tokens - 1.0
    return False, tokens


def digest_items(rows: Iterable[Row], load: Load) -> list[dict[str, Any]]:
    """The summary of held outbox rows that one digest notification carries."""
    items: list[dict[str, Any]] = []
    for r in rows:
        payload = load(r["payload"])
        if payload is not None:  # a held digest (cannot happen today, but never drop anything)
            items.extend(payload)
            continue
        ann = load(r["annotations"]) or {}
        items.append(
            {
                "fingerprint": r["fingerprint"],
                "kind": r["kind"],
                "step": r["step"],
                "status": r["status"],
                "severity": r["severity"],
                "labels": load(r["labels"]) or {},
                "summary": ann.get("summary", ""),
                "at": r["created_at"],
            }
        )
    return items


def next_escalation(
    plan: Plan, step: int, first_notified_at: float
) -> tuple[tuple[str, ...], float | None] | None:
    """Step `step` (1-based) of the plan: its channels and when the step after it is due (None:
    it is the last). None when the plan has no such step (the timer is then cleared). Steps
    count from the first notification, so a late timer does not push later steps back."""
    if step > len(plan):
        return None
    channels = tuple(plan[step - 1][1])
    nxt = first_notified_at + plan[step][0] if step < len(plan) else None
    return channels, nxt


# -- status pages -----------------------------------------------------------------------------

_ALERT_COLUMNS = (
    "fingerprint",
    "status",
    "severity",
    "labels",
    "annotations",
    "starts_at",
    "generator_url",
    "first_notified_at",
    "acked_by",
    "acked_at",
    "resolved_by",
    "resolved_at",
)
_JSON_COLUMNS = frozenset({"labels", "annotations"})


def alert_dict(r: Row, load: Load) -> dict[str, Any]:
    """The public fields of an alerts row (API and status page)."""
    return {k: load(r[k]) if k in _JSON_COLUMNS else r[k] for k in _ALERT_COLUMNS}


def active_alert(r: Row, load: Load, deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """A firing alert with its escalation state and the deliveries of its firing event."""
    d = alert_dict(r, load)
    plan = load(r["escalation"])
    step = r["escalation_step"]
    d["escalation"] = {
        "step": step,
        "steps": len(plan),
        "next_at": r["next_escalation_at"],
        # no next channels once acked or past the last step (next_escalation_at is NULL then)
        "next_channels": plan[step][1]
        if r["next_escalation_at"] is not None and step < len(plan)
        else [],
    }
    d["deliveries"] = deliveries
    return d


def resolved_alert(r: Row, load: Load) -> dict[str, Any]:
    """A resolved alert of the history, with time to ack and to resolve from the first
    notification; the row carries a `manual` column (was the resolve event a manual one)."""
    d = alert_dict(r, load)
    t0 = r["first_notified_at"]
    d["time_to_ack_s"] = round(r["acked_at"] - t0, 3) if r["acked_at"] else None
    d["time_to_resolve_s"] = round(r["resolved_at"] - t0, 3)
    d["resolved_manually"] = bool(r["manual"])  # else Alertmanager sent `resolved`
    return d
