"""What both stores do alike around their SQL: statement parameters from an alert, rows shaped
into the dicts and dataclasses the receiver sees, escalation and token-bucket arithmetic.

The SQL stays in each backend (placeholders, locking and JSON functions differ); these functions
are where they must agree, so an answer never depends on the backend. The one backend difference
they see is JSON: SQLite keeps it as text, PostgreSQL's jsonb comes back decoded. So each takes the
backend's `dump` (value -> parameter) or `load` (column -> value, None stays None).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from .base import Delivery, IncomingAlert, IncomingGroup, IngestResult

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
    digest or group row (no event), hence the defaults."""
    payload = load(r["payload"])
    fields: dict[str, Any]
    if isinstance(payload, dict):  # a group notification: everything is in its snapshot
        fields = dict(
            status="resolved" if r["kind"] == "resolved" else "firing",
            severity=payload["severity"],
            labels=payload["labels"],
            annotations=payload["annotations"],
            starts_at="",
            generator_url=None,
            external_url=payload.get("external_url"),
            resolved_by=payload.get("resolved_by"),
            group=payload,
        )
    else:
        fields = dict(
            status=r["status"] or "",
            severity=r["severity"] or "unknown",
            labels=load(r["labels"]) or {},
            annotations=load(r["annotations"]) or {},
            starts_at=r["starts_at"] or "",
            generator_url=r["generator_url"],
            external_url=r["external_url"],
            resolved_by=r["resolved_by"] if r["source"] == "manual" else None,
            digest=payload,
        )
    return Delivery(
        id=r["id"],
        channel=r["channel"],
        kind=r["kind"],
        step=r["step"],
        attempts=r["attempts"],
        created_at=r["created_at"],
        fingerprint=r["fingerprint"],
        **fields,
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
        if isinstance(payload, dict):  # a group notification
            items.append(group_digest_item(r, payload))
            continue
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


def active_alert(
    r: Row, load: Load, deliveries: list[dict[str, Any]], group: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A firing alert with its escalation state and the deliveries of its firing event; for an
    alert of a group, the group's (escalation and notices are per group)."""
    d = alert_dict(r, load)
    d["group"] = r["group_id"]
    if group is not None:
        d["escalation"] = group_escalation(group)
        d["deliveries"] = deliveries
        return d
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


# -- groups -----------------------------------------------------------------------------------

SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
TOP_ALERTS = 5  # alerts a group message lists by name; the rest are counted
GROUP_COLUMNS = (
    "id",
    "group_key",
    "status",
    "severity",
    "labels",
    "group_labels",
    "annotations",
    "channels",
    "external_url",
    "first_notified_at",
    "updated_at",
    "acked_by",
    "acked_at",
    "resolved_by",
    "resolved_at",
    "escalation",
    "escalation_step",
    "next_escalation_at",
    "firing",
)
GROUP_JSON = frozenset({"labels", "group_labels", "annotations", "channels", "escalation"})


def group_id(key: str) -> str:
    """The group's id: sha256 of Alertmanager's groupKey, as Alertmanager's own PagerDuty
    integration makes its dedup key. Stable across replicas and restarts."""
    return hashlib.sha256(key.encode()).hexdigest()


def rank(sev: str) -> int:
    return SEVERITY_RANK.get(sev, 4)


def top_severity(sevs: Iterable[str]) -> str:
    return min(sevs, key=rank, default="unknown")


def distinct_labels(labels: dict[str, str], common: dict[str, str]) -> dict[str, str]:
    """What tells this alert apart from the others of its group (pod, instance...)."""
    return {k: v for k, v in labels.items() if common.get(k) != v}


def group_sends(
    was_firing: bool, existed: bool, firing: int, told: Sequence[str], routed: Sequence[str] | None
) -> list[tuple[str, str]]:
    """(channel, kind) to queue after a change of the group. `told`: the channels that carried
    this episode's notices; `routed`: where the webhook's route sends it (None: a manual change,
    which tells only those already told)."""
    routed = list(routed or ())
    if firing and not was_firing:  # a new incident (or the group fires again after resolving)
        return [(ch, "firing") for ch in dict.fromkeys(routed)]
    if firing:  # the group changed: an update where told, the first notice where newly routed
        return [(ch, "update") for ch in told] + [
            (ch, "firing") for ch in dict.fromkeys(routed) if ch not in told
        ]
    if was_firing:
        return [(ch, "resolved") for ch in told]
    # resolved alerts of a group never seen firing (e.g. the receiver was replaced): routed
    return [] if existed else [(ch, "resolved") for ch in dict.fromkeys(routed)]


def _alert_brief(labels: dict[str, str], common: dict[str, str], sev: str, ann, fp: str) -> dict:
    return {
        "fingerprint": fp,
        "severity": sev,
        "labels": distinct_labels(labels, common),
        "alertname": labels.get("alertname", ""),
        "summary": (ann or {}).get("summary", ""),
    }


def group_payload(
    g: dict[str, Any],
    firing: Sequence[Row],
    joined: int,
    resolved: Sequence[IncomingAlert],
    load: Load,
    resolved_by: str | None = None,
) -> dict[str, Any]:
    """The snapshot a group message is rendered from. `g`: the group's columns (decoded);
    `firing`: its firing alerts (fingerprint, severity, labels, annotations, starts_at rows);
    `joined`/`resolved`: what this change brought."""
    common = g["labels"]
    alerts = sorted(firing, key=lambda r: (rank(r["severity"]), r["starts_at"], r["fingerprint"]))
    top = [
        _alert_brief(
            load(r["labels"]), common, r["severity"], load(r["annotations"]), r["fingerprint"]
        )
        for r in alerts[:TOP_ALERTS]
    ]
    by_sev = Counter(r["severity"] for r in alerts)
    gone = sorted(resolved, key=lambda a: (rank(a.severity), a.fingerprint))
    resolved_top = [
        _alert_brief(a.labels, common, a.severity, a.annotations, a.fingerprint)
        for a in gone[:TOP_ALERTS]
    ]
    # a group of one alert: its messages read like that alert's
    single = top[0] if len(alerts) == 1 else None
    if not alerts and len(resolved) == 1:
        single = resolved_top[0]
    return {
        "group": g["id"],
        "group_key": g["group_key"],
        "severity": g["severity"],
        "labels": common,
        "group_labels": g["group_labels"],
        "annotations": g["annotations"],
        "external_url": g["external_url"],
        "firing": len(alerts),
        # pairs, not an object: jsonb does not keep key order
        "by_severity": [[s, by_sev[s]] for s in sorted(by_sev, key=rank)],
        "joined": joined,
        "resolved": len(resolved),
        "top": top,
        "resolved_top": resolved_top,
        "resolved_by": resolved_by,
        "single": single,
    }


def merge_payload(older: dict[str, Any] | None, newer: dict[str, Any]) -> dict[str, Any]:
    """An update refreshing a message not sent yet: the newest state, and the changes of both
    (what joined and resolved since the last message that went out)."""
    if not older:
        return newer
    gone = [*newer["resolved_top"], *older["resolved_top"]][:TOP_ALERTS]
    return {
        **newer,
        "joined": older["joined"] + newer["joined"],
        "resolved": older["resolved"] + newer["resolved"],
        "resolved_top": gone,
    }


def group_dict(r: Row, load: Load) -> dict[str, Any]:
    """A groups row with JSON columns decoded."""
    return {k: load(r[k]) if k in GROUP_JSON else r[k] for k in GROUP_COLUMNS}


def group_escalation(g: dict[str, Any]) -> dict[str, Any]:
    plan, step = g["escalation"] or [], g["escalation_step"]
    return {
        "step": step,
        "steps": len(plan),
        "next_at": g["next_escalation_at"],
        "next_channels": plan[step][1]
        if g["next_escalation_at"] is not None and step < len(plan)
        else [],
    }


def active_group(g: dict[str, Any], deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """A firing group as the API shows it."""
    out = {k: g[k] for k in GROUP_COLUMNS if k not in ("escalation", "escalation_step")}
    out["escalation"] = group_escalation(g)
    out["deliveries"] = deliveries
    return out


def group_digest_item(r: Row, p: dict[str, Any]) -> dict[str, Any]:
    """A held group notification in a digest."""
    return {
        "fingerprint": r["fingerprint"],
        "kind": r["kind"],
        "step": r["step"],
        "status": "resolved" if r["kind"] == "resolved" else "firing",
        "severity": p["severity"],
        "labels": p["labels"],
        "summary": f"{p['firing']} firing" if p["firing"] else "all resolved",
        "at": r["created_at"],
    }


def next_group(
    old: dict[str, Any] | None,
    g: IncomingGroup | None,
    gid: str,
    firing_sevs: Sequence[str],
    sends: Sequence[tuple[str, str]],
    now: float,
    who: str | None,
) -> dict[str, Any]:
    """The group's columns after a change (g is None for a manual one, old then exists)."""
    firing = len(firing_sevs)
    was_firing = old is not None and old["status"] == "firing"
    if old is None or (firing and not was_firing):  # a new episode: timers and ack start over
        plan = [[after, list(chs)] for after, chs in g.escalation] if g else []
        new: dict[str, Any] = {
            "id": gid,
            "first_notified_at": now,
            "acked_by": None,
            "acked_at": None,
            "resolved_by": None,
            "resolved_at": None,
            "escalation": plan,
            "escalation_step": 0,
            "next_escalation_at": now + plan[0][0] if plan and firing else None,
            "channels": [],
            "severity": g.severity if g else "unknown",
        }
    else:
        new = dict(old)
    if g is not None:
        new.update(
            group_key=g.key,
            labels=g.labels,
            group_labels=g.group_labels,
            annotations=g.annotations,
            external_url=g.external_url,
        )
    told = new["channels"] if (was_firing or not firing) else []
    new["channels"] = list(dict.fromkeys([*told, *(ch for ch, _ in sends)]))
    new.update(status="firing" if firing else "resolved", updated_at=now, firing=firing)
    if firing:
        new["severity"] = top_severity(firing_sevs)
    elif was_firing:
        new.update(resolved_by=who or "alertmanager", resolved_at=now, next_escalation_at=None)
    return new


def group_upsert_sql(ph: str) -> str:
    """INSERT ... ON CONFLICT of a whole groups row; `ph` the backend's placeholder."""
    cols = ", ".join(GROUP_COLUMNS)
    sets = ", ".join(f"{k}=excluded.{k}" for k in GROUP_COLUMNS if k != "id")
    marks = ", ".join([ph] * len(GROUP_COLUMNS))
    return f"INSERT INTO groups({cols}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {sets}"  # noqa: S608


def group_params(g: dict[str, Any], dump: Dump) -> tuple[Any, ...]:
    return tuple(dump(g[k]) if k in GROUP_JSON else g[k] for k in GROUP_COLUMNS)
