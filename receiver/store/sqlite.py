"""The embedded default store: one SQLite file, WAL, synchronous=FULL (a 200 means on disk).

All statements run on one writer thread (SQLite has one writer anyway). The thread commits
whatever has queued up in one transaction, each operation inside its own savepoint: group commit,
so N concurrent webhooks cost one fsync instead of N. sqlite3 has no such batching of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import rows
from .base import (
    Delivery,
    EscalationFired,
    HeartbeatState,
    IncomingAlert,
    IncomingGroup,
    IngestResult,
    StoreError,
)

MIGRATIONS = [
    """
    CREATE TABLE events(
      id INTEGER PRIMARY KEY,
      fingerprint TEXT NOT NULL, status TEXT NOT NULL, starts_at TEXT NOT NULL,
      ends_at TEXT, labels TEXT NOT NULL, annotations TEXT NOT NULL, generator_url TEXT,
      severity TEXT NOT NULL, external_url TEXT, source TEXT NOT NULL, received_at REAL NOT NULL,
      UNIQUE(fingerprint, status, starts_at));
    CREATE TABLE alerts(
      fingerprint TEXT PRIMARY KEY, status TEXT NOT NULL, severity TEXT NOT NULL,
      labels TEXT NOT NULL, annotations TEXT NOT NULL, starts_at TEXT NOT NULL,
      generator_url TEXT, firing_event_id INTEGER, first_notified_at REAL NOT NULL,
      updated_at REAL NOT NULL, acked_by TEXT, acked_at REAL, resolved_by TEXT, resolved_at REAL,
      escalation TEXT NOT NULL DEFAULT '[]', escalation_step INTEGER NOT NULL DEFAULT 0,
      next_escalation_at REAL);
    CREATE INDEX alerts_next_escalation ON alerts(next_escalation_at)
      WHERE next_escalation_at IS NOT NULL;
    CREATE INDEX alerts_resolved_at ON alerts(resolved_at);
    CREATE TABLE outbox(
      id INTEGER PRIMARY KEY, event_id INTEGER, fingerprint TEXT NOT NULL, channel TEXT NOT NULL,
      kind TEXT NOT NULL, step INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending',
      attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
      lease_owner TEXT, lease_until REAL, last_error TEXT, finished_at REAL, digest_id INTEGER,
      payload TEXT,
      UNIQUE(event_id, channel, kind, step));
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE INDEX outbox_alert ON outbox(fingerprint, channel, state);
    CREATE TABLE buckets(channel TEXT PRIMARY KEY, tokens REAL NOT NULL, updated_at REAL NOT NULL);
    """,
    # 2: Alertmanager groups are the unit of notification (docs/receiver-groups.md)
    """
    ALTER TABLE alerts ADD COLUMN group_id TEXT;
    CREATE INDEX alerts_group ON alerts(group_id, status);
    CREATE TABLE groups(
      id TEXT PRIMARY KEY, group_key TEXT NOT NULL, status TEXT NOT NULL, severity TEXT NOT NULL,
      labels TEXT NOT NULL, group_labels TEXT NOT NULL, annotations TEXT NOT NULL,
      channels TEXT NOT NULL DEFAULT '[]', external_url TEXT, first_notified_at REAL NOT NULL,
      updated_at REAL NOT NULL, acked_by TEXT, acked_at REAL, resolved_by TEXT, resolved_at REAL,
      escalation TEXT NOT NULL DEFAULT '[]', escalation_step INTEGER NOT NULL DEFAULT 0,
      next_escalation_at REAL, firing INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX groups_next_escalation ON groups(next_escalation_at)
      WHERE next_escalation_at IS NOT NULL;
    """,
    # 3: heartbeats (dead man's switches)
    """
    CREATE TABLE heartbeats(
      name TEXT PRIMARY KEY, last_ping_at REAL, missing_since REAL,
      announced INTEGER NOT NULL DEFAULT 0);
    """,
]
_GROUP_UPSERT = rows.group_upsert_sql("?")


def _j(v: Any) -> str:
    # orjson: the labels/annotations of every alert are serialised on the single writer thread
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()


def _load(v: str | None) -> Any:
    # JSON columns are text here; NULL (a LEFT JOIN without a match) stays None
    return json.loads(v) if v else None


class SQLiteStore:
    def __init__(self, path: str, timeout_s: float = 5.0):
        self.path = path
        self.timeout_s = timeout_s
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    # -- plumbing ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            have = row[0] or 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > have:
                    for stmt in filter(str.strip, script.split(";")):
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
            # One process owns a SQLite file, so rows left 'sending' by a killed run are ours:
            # retry them now instead of waiting for their lease to expire.
            conn.execute(
                "UPDATE outbox SET state='pending', lease_owner=NULL, lease_until=NULL "
                "WHERE state='sending'"
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {self.path}: {e}") from e
        self._conn = conn
        self._thread = threading.Thread(target=self._writer, name="sqlite-store", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._thread is None:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._q.put((fn, args, fut, loop))
        return await fut

    def _writer(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 512:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            results: list[tuple[bool, Any]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, args, _, _ in batch:
                    conn.execute("SAVEPOINT op")
                    try:
                        results.append((True, fn(conn, *args)))
                        conn.execute("RELEASE op")
                    except Exception as e:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        results.append(
                            (False, StoreError(str(e)) if isinstance(e, sqlite3.Error) else e)
                        )
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                err = StoreError(f"SQLite store: {e}")
                results = [(False, err)] * len(batch)
            # one wake-up per event loop and batch, not per operation: call_soon_threadsafe
            # writes to the loop's self-pipe each time, a measurable cost at thousands/s
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, bool, Any]]] = {}
            for (_, _, fut, loop), (ok, value) in zip(batch, results, strict=True):
                by_loop.setdefault(loop, []).append((fut, ok, value))
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle_all, settled)

    # -- the interface -------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call(lambda c: c.execute("SELECT 1").fetchone())

    async def ingest(self, group: IncomingGroup, now: float) -> IngestResult:
        return await self._call(_ingest, group, now)

    async def claim_due(
        self, worker: str, now: float, limit: int, lease_s: float
    ) -> list[Delivery]:
        return await self._call(_claim_due, worker, now, limit, lease_s)

    async def _release(self, delivery_id: int, sets: str, params: tuple[Any, ...]) -> None:
        """End a claim: `sets` (constant SQL of the caller) plus dropping the lease."""
        await self._call(
            _exec,
            # only the constant strings of the four methods below are spliced in
            f"UPDATE outbox SET {sets}, lease_owner=NULL, lease_until=NULL WHERE id=?",  # noqa: S608
            (*params, delivery_id),
        )

    async def mark_sent(self, delivery_id: int, now: float) -> None:
        await self._release(
            delivery_id,
            "state='sent', attempts=attempts+1, finished_at=?, last_error=NULL",
            (now,),
        )

    async def mark_failed(self, delivery_id: int, error: str, next_attempt_at: float) -> None:
        await self._release(
            delivery_id,
            "state='pending', attempts=attempts+1, last_error=?, next_attempt_at=?",
            (error, next_attempt_at),
        )

    async def mark_dead(self, delivery_id: int, error: str, now: float) -> None:
        await self._release(
            delivery_id,
            "state='dead', attempts=attempts+1, last_error=?, finished_at=?",
            (error, now),
        )

    async def hold(self, delivery_id: int, now: float) -> None:
        await self._release(delivery_id, "state='held'", ())

    async def take_token(self, channel: str, now: float, rate_per_s: float, burst: int) -> bool:
        return await self._call(_take_token, channel, now, rate_per_s, burst)

    async def channels_with_held(self) -> list[str]:
        return await self._call(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT channel FROM outbox WHERE state='held' ORDER BY channel"
                )
            ]
        )

    async def make_digest(self, channel: str, now: float) -> int | None:
        return await self._call(_make_digest, channel, now)

    async def fire_due_escalations(self, now: float, limit: int) -> list[EscalationFired]:
        return await self._call(_fire_due_escalations, now, limit)

    async def ack(self, fingerprint: str, who: str, now: float) -> bool:
        return await self._call(_ack, fingerprint, who, now)

    async def resolve(self, fingerprint: str, who: str, now: float) -> bool:
        return await self._call(_manual_resolve, fingerprint, who, now)

    async def ack_group(self, group_id: str, who: str, now: float) -> bool:
        return await self._call(_ack_group, group_id, who, now)

    async def resolve_group(self, group_id: str, who: str, now: float) -> bool:
        return await self._call(_resolve_group, group_id, who, now)

    async def active_groups(self) -> list[dict[str, Any]]:
        return await self._call(_active_groups)

    async def active_alerts(self) -> list[dict[str, Any]]:
        return await self._call(_active_alerts)

    async def history(self, since: float) -> dict[str, Any]:
        return await self._call(_history, since)

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return await self._call(_dead_letters, limit)

    async def queue_depth(self) -> dict[str, int]:
        return await self._call(
            lambda c: {
                r[0]: r[1]
                for r in c.execute(
                    "SELECT channel, count(*) FROM outbox WHERE state IN "
                    "('pending','sending','held') "
                    "GROUP BY channel"
                )
            }
        )

    # -- heartbeats ----------------------------------------------------------------------------

    async def heartbeat_pinged(self, names: list[str], now: float) -> None:
        await self._call(
            lambda c: c.executemany(
                "INSERT INTO heartbeats(name, last_ping_at) VALUES (?,?) ON CONFLICT(name) "
                "DO UPDATE SET last_ping_at=max(coalesce(last_ping_at, 0), excluded.last_ping_at)",
                [(n, now) for n in names],
            )
        )

    async def heartbeat_states(self) -> dict[str, HeartbeatState]:
        return await self._call(
            lambda c: {
                r[0]: HeartbeatState(r[0], r[1], r[2], bool(r[3]))
                for r in c.execute(
                    "SELECT name, last_ping_at, missing_since, announced FROM heartbeats"
                )
            }
        )

    async def heartbeat_claim_missing(
        self, name: str, last_ping_at: float, missing_since: float
    ) -> bool:
        return await self._call(
            _rowcount,
            "UPDATE heartbeats SET missing_since=?, announced=0 "
            "WHERE name=? AND missing_since IS NULL AND last_ping_at=?",
            (missing_since, name, last_ping_at),
        )

    async def heartbeat_announced(self, name: str, missing_since: float) -> None:
        await self._call(
            _rowcount,
            "UPDATE heartbeats SET announced=1 WHERE name=? AND missing_since=?",
            (name, missing_since),
        )

    async def heartbeat_clear_missing(self, name: str, missing_since: float) -> bool:
        return await self._call(
            _rowcount,
            "UPDATE heartbeats SET missing_since=NULL, announced=0 "
            "WHERE name=? AND missing_since=?",
            (name, missing_since),
        )


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _exec(c: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    c.execute(sql, params)


# -- operations: each runs inside one savepoint of a group transaction -------------------------


def _insert_outbox(
    c: sqlite3.Connection, event_id: int | None, fp: str, channels, kind: str, step: int, now: float
) -> int:
    n = 0
    for ch in dict.fromkeys(channels):
        cur = c.execute(
            "INSERT OR IGNORE INTO outbox(event_id, fingerprint, channel, kind, step, created_at, "
            "next_attempt_at) VALUES (?,?,?,?,?,?,?)",
            (event_id, fp, ch, kind, step, now, now),
        )
        n += cur.rowcount
    return n


def _ingest(c: sqlite3.Connection, g: IncomingGroup, now: float) -> IngestResult:
    gid = rows.group_id(g.key)
    res = rows.ingest_result(
        g.alerts, [_ingest_one(c, a, now, "webhook", None, gid) for a in g.alerts]
    )
    if res.accepted:  # something changed: an alert joined or resolved
        joined = sum(a.status == "firing" for a in res.accepted)
        resolved = [a for a in res.accepted if a.status == "resolved"]
        res.deliveries = _group_changed(c, gid, g, joined, resolved, now, None)
    return res


def _group_firing(c: sqlite3.Connection, gid: str) -> list[sqlite3.Row]:
    return c.execute(
        "SELECT fingerprint, severity, labels, annotations, starts_at FROM alerts "
        "WHERE group_id=? AND status='firing'",
        (gid,),
    ).fetchall()


def _group_changed(
    c: sqlite3.Connection,
    gid: str,
    g: IncomingGroup | None,
    joined: int,
    resolved: list[IncomingAlert],
    now: float,
    who: str | None,
) -> int:
    """After alerts of the group joined or resolved: the group's new state, and one outbox row
    per channel to tell (a pending one refreshed instead). The number of new outbox rows."""
    r = c.execute("SELECT * FROM groups WHERE id=?", (gid,)).fetchone()
    old = rows.group_dict(r, _load) if r else None
    firing = _group_firing(c, gid)
    was_firing = old is not None and old["status"] == "firing"
    told = old["channels"] if was_firing else []
    sends = rows.group_sends(
        was_firing, old is not None, len(firing), told, g.channels if g else None
    )
    new = rows.next_group(old, g, gid, [f["severity"] for f in firing], sends, now, who)
    c.execute(_GROUP_UPSERT, rows.group_params(new, _j))
    if firing and new["acked_at"] is not None:  # alerts joining an acknowledged group
        c.execute(
            "UPDATE alerts SET acked_by=?, acked_at=? WHERE group_id=? AND status='firing' "
            "AND acked_at IS NULL",
            (new["acked_by"], new["acked_at"], gid),
        )
    payload = rows.group_payload(new, firing, joined, resolved, _load, who)
    return _queue_group(c, gid, sends, payload, now, 0)


def _queue_group(
    c: sqlite3.Connection,
    gid: str,
    sends: list[tuple[str, str]],
    payload: dict[str, Any],
    now: float,
    step: int,
) -> int:
    """Outbox rows of a group notification. An update where the channel's last unfinished row
    of the group is a firing or update not yet sent (pending or held by the rate limit) refreshes
    that row instead: the channel gets the newest state once, not every step of a storm."""
    n = 0
    body = _j(payload)
    for ch, kind in sends:
        last = c.execute(
            "SELECT id, kind, state, payload FROM outbox WHERE fingerprint=? AND channel=? "
            "AND state IN ('pending','sending','held') ORDER BY id DESC LIMIT 1",
            (gid, ch),
        ).fetchone()
        if (
            kind == "update"
            and last is not None
            and last["state"] in ("pending", "held")
            and last["kind"] in ("firing", "update")
        ):
            merged = rows.merge_payload(_load(last["payload"]), payload)
            c.execute("UPDATE outbox SET payload=? WHERE id=?", (_j(merged), last["id"]))
            continue
        c.execute(
            "INSERT INTO outbox(event_id, fingerprint, channel, kind, step, created_at, "
            "next_attempt_at, payload) VALUES (NULL,?,?,?,?,?,?,?)",
            (gid, ch, kind, step, now, now, body),
        )
        n += 1
    return n


def _ingest_one(
    c: sqlite3.Connection,
    a: IncomingAlert,
    now: float,
    source: str,
    who: str | None,
    gid: str | None,
) -> int | None:
    """Store one alert event; None when it is a duplicate, else the number of outbox rows (an
    alert of a group has none of its own: the group is notified)."""
    if (
        a.status == "firing"
        and c.execute(
            "SELECT 1 FROM events WHERE fingerprint=? AND status='resolved' AND starts_at=?",
            (a.fingerprint, a.starts_at),
        ).fetchone()
    ):
        return None  # a late firing copy of an episode already resolved: nothing new to say
    cur = c.execute(
        "INSERT OR IGNORE INTO events(fingerprint, status, starts_at, ends_at, labels, "
        "annotations, "
        "generator_url, severity, external_url, source, received_at) VALUES "
        "(?,?,?,?,?,?,?,?,?,?,?)",
        rows.event_params(a, source, now, _j),
    )
    if cur.rowcount == 0:
        return None
    event_id = cur.lastrowid
    if a.status == "firing":
        plan, next_at = ([], None) if gid else rows.escalation_plan(a, now)
        c.execute(
            "INSERT INTO alerts(fingerprint, status, severity, labels, annotations, starts_at, "
            "generator_url, firing_event_id, first_notified_at, updated_at, escalation, "
            "next_escalation_at, escalation_step, group_id) "
            "VALUES (?, 'firing', ?,?,?,?,?,?,?,?,?,?,0,?) "
            "ON CONFLICT(fingerprint) DO UPDATE SET status='firing', severity=excluded.severity, "
            "labels=excluded.labels, annotations=excluded.annotations, "
            "starts_at=excluded.starts_at, "
            "generator_url=excluded.generator_url, firing_event_id=excluded.firing_event_id, "
            "first_notified_at=excluded.first_notified_at, updated_at=excluded.updated_at, "
            "acked_by=NULL, acked_at=NULL, resolved_by=NULL, resolved_at=NULL, "
            "escalation=excluded.escalation, escalation_step=0, "
            "next_escalation_at=excluded.next_escalation_at, group_id=excluded.group_id",
            (*rows.firing_alert_params(a, event_id, now, plan, next_at, _j), gid),
        )
        if gid:
            return 0
        return _insert_outbox(c, event_id, a.fingerprint, a.channels, "firing", 0, now)

    c.execute(
        "INSERT INTO alerts(fingerprint, status, severity, labels, annotations, starts_at, "
        "generator_url, first_notified_at, updated_at, resolved_by, resolved_at, group_id) "
        "VALUES (?, 'resolved', ?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(fingerprint) DO UPDATE SET status='resolved', updated_at=excluded.updated_at, "
        "resolved_by=excluded.resolved_by, resolved_at=excluded.resolved_at, "
        "next_escalation_at=NULL, group_id=coalesce(alerts.group_id, excluded.group_id)",
        (*rows.resolved_alert_params(a, who, now, _j), gid),
    )
    if gid:
        return 0
    # resolved: announce on every channel that carried the firing notice of this episode
    firing = c.execute(
        "SELECT id FROM events WHERE fingerprint=? AND status='firing' AND starts_at=?",
        (a.fingerprint, a.starts_at),
    ).fetchone()
    if firing:
        channels = [
            r[0]
            for r in c.execute(
                "SELECT channel FROM outbox WHERE event_id=? AND kind IN ('firing','escalation') "
                "AND state != 'dead' ORDER BY id",
                (firing[0],),
            )
        ]
    else:  # never saw it fire (e.g. the receiver was replaced): tell the routed channels
        channels = list(a.channels)
    return _insert_outbox(c, event_id, a.fingerprint, channels, "resolved", 0, now)


def _claim_due(
    c: sqlite3.Connection, worker: str, now: float, limit: int, lease_s: float
) -> list[Delivery]:
    found = c.execute(
        "SELECT o.id, o.channel, o.kind, o.step, o.attempts, o.created_at, o.fingerprint, "
        "o.payload, e.status, e.severity, e.labels, e.annotations, e.starts_at, e.generator_url, "
        "e.external_url, e.source, a.resolved_by "
        "FROM outbox o LEFT JOIN events e ON e.id = o.event_id "
        "LEFT JOIN alerts a ON a.fingerprint = o.fingerprint "
        "WHERE ((o.state='pending' AND o.next_attempt_at <= ?) OR (o.state='sending' AND "
        "o.lease_until <= ?)) "
        "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.fingerprint = o.fingerprint AND "
        "o.fingerprint != '' "
        "  AND p.channel = o.channel AND p.id < o.id AND p.state IN ('pending','sending')) "
        "ORDER BY o.next_attempt_at, o.id LIMIT ?",
        (now, now, limit),
    ).fetchall()
    c.executemany(
        "UPDATE outbox SET state='sending', lease_owner=?, lease_until=? WHERE id=?",
        [(worker, now + lease_s, r["id"]) for r in found],
    )
    return [rows.delivery(r, _load) for r in found]


def _take_token(c: sqlite3.Connection, channel: str, now: float, rate: float, burst: int) -> bool:
    row = c.execute("SELECT tokens, updated_at FROM buckets WHERE channel=?", (channel,)).fetchone()
    # a new bucket starts full
    tokens, updated_at = (float(burst), now) if row is None else (row[0], row[1])
    ok, tokens = rows.take_token(tokens, updated_at, now, rate, burst)
    c.execute(
        "INSERT INTO buckets(channel, tokens, updated_at) VALUES (?,?,?) ON CONFLICT(channel) "
        "DO UPDATE SET tokens=excluded.tokens, updated_at=excluded.updated_at",
        (channel, tokens, now),
    )
    return ok


def _make_digest(c: sqlite3.Connection, channel: str, now: float) -> int | None:
    held = c.execute(
        "SELECT o.id, o.kind, o.step, o.created_at, o.fingerprint, o.payload, e.status, "
        "e.severity, "
        "e.labels, e.annotations FROM outbox o LEFT JOIN events e ON e.id = o.event_id "
        "WHERE o.channel=? AND o.state='held' ORDER BY o.id",
        (channel,),
    ).fetchall()
    if not held:
        return None
    cur = c.execute(
        "INSERT INTO outbox(event_id, fingerprint, channel, kind, step, created_at, "
        "next_attempt_at, payload) "
        "VALUES (NULL, '', ?, 'digest', 0, ?, ?, ?)",
        (channel, min(r["created_at"] for r in held), now, _j(rows.digest_items(held, _load))),
    )
    digest_id = cur.lastrowid
    c.executemany(
        "UPDATE outbox SET state='digested', digest_id=?, finished_at=? WHERE id=?",
        [(digest_id, now, r["id"]) for r in held],
    )
    return digest_id


def _fire_due_escalations(c: sqlite3.Connection, now: float, limit: int) -> list[EscalationFired]:
    fired = []
    due = c.execute(
        "SELECT fingerprint, escalation, escalation_step, first_notified_at, firing_event_id FROM "
        "alerts "
        "WHERE status='firing' AND acked_at IS NULL AND next_escalation_at <= ? "
        "ORDER BY next_escalation_at LIMIT ?",
        (now, limit),
    ).fetchall()
    for r in due:
        fp, step = r["fingerprint"], r["escalation_step"] + 1
        nxt = rows.next_escalation(_load(r["escalation"]), step, r["first_notified_at"])
        if nxt is None:
            c.execute("UPDATE alerts SET next_escalation_at=NULL WHERE fingerprint=?", (fp,))
            continue
        channels, next_at = nxt
        _insert_outbox(c, r["firing_event_id"], fp, channels, "escalation", step, now)
        c.execute(
            "UPDATE alerts SET escalation_step=?, next_escalation_at=?, updated_at=? WHERE "
            "fingerprint=?",
            (step, next_at, now, fp),
        )
        fired.append(EscalationFired(fp, step, channels))
    due = c.execute(
        "SELECT * FROM groups WHERE status='firing' AND acked_at IS NULL "
        "AND next_escalation_at <= ? ORDER BY next_escalation_at LIMIT ?",
        (now, max(0, limit - len(fired))),
    ).fetchall()
    for r in due:
        g = rows.group_dict(r, _load)
        gid, step = g["id"], g["escalation_step"] + 1
        nxt = rows.next_escalation(g["escalation"], step, g["first_notified_at"])
        if nxt is None:
            c.execute("UPDATE groups SET next_escalation_at=NULL WHERE id=?", (gid,))
            continue
        channels, next_at = nxt
        payload = rows.group_payload(g, _group_firing(c, gid), 0, [], _load)
        _queue_group(c, gid, [(ch, "escalation") for ch in channels], payload, now, step)
        told = list(dict.fromkeys([*g["channels"], *channels]))  # they hear the resolve too
        c.execute(
            "UPDATE groups SET escalation_step=?, next_escalation_at=?, updated_at=?, channels=? "
            "WHERE id=?",
            (step, next_at, now, _j(told), gid),
        )
        fired.append(EscalationFired(gid, step, channels))
    return fired


def _ack(c: sqlite3.Connection, fingerprint: str, who: str, now: float) -> bool:
    cur = c.execute(
        "UPDATE alerts SET acked_by=coalesce(acked_by, ?), acked_at=coalesce(acked_at, ?), "
        "next_escalation_at=NULL, updated_at=? WHERE fingerprint=? AND status='firing'",
        (who, now, now, fingerprint),
    )
    if cur.rowcount == 0:
        return False
    # the group's escalation stops once none of its firing alerts is unacknowledged
    c.execute(
        "UPDATE groups SET acked_by=coalesce(acked_by, ?), acked_at=coalesce(acked_at, ?), "
        "next_escalation_at=NULL, updated_at=? "
        "WHERE id=(SELECT group_id FROM alerts WHERE fingerprint=?) AND status='firing' "
        "AND NOT EXISTS (SELECT 1 FROM alerts WHERE group_id=groups.id AND status='firing' "
        "AND acked_at IS NULL)",
        (who, now, now, fingerprint),
    )
    return True


def _ack_group(c: sqlite3.Connection, gid: str, who: str, now: float) -> bool:
    cur = c.execute(
        "UPDATE groups SET acked_by=coalesce(acked_by, ?), acked_at=coalesce(acked_at, ?), "
        "next_escalation_at=NULL, updated_at=? WHERE id=? AND status='firing'",
        (who, now, now, gid),
    )
    if cur.rowcount == 0:
        return False
    c.execute(
        "UPDATE alerts SET acked_by=coalesce(acked_by, ?), acked_at=coalesce(acked_at, ?), "
        "updated_at=? WHERE group_id=? AND status='firing'",
        (who, now, now, gid),
    )
    return True


def _manual_resolve(c: sqlite3.Connection, fingerprint: str, who: str, now: float) -> bool:
    r = c.execute(
        "SELECT * FROM alerts WHERE fingerprint=? AND status='firing'", (fingerprint,)
    ).fetchone()
    if r is None:
        return False
    a, gid = rows.manual_resolve_alert(r, _load), r["group_id"]
    if _ingest_one(c, a, now, "manual", who, gid) is not None and gid:
        _group_changed(c, gid, None, 0, [a], now, who)  # an update, or the group's resolve
    return True


def _resolve_group(c: sqlite3.Connection, gid: str, who: str, now: float) -> bool:
    found = c.execute(
        "SELECT a.* FROM alerts a JOIN groups g ON g.id = a.group_id "
        "WHERE a.group_id=? AND a.status='firing' AND g.status='firing'",
        (gid,),
    ).fetchall()
    if not found:
        return False
    gone = [rows.manual_resolve_alert(r, _load) for r in found]
    gone = [a for a in gone if _ingest_one(c, a, now, "manual", who, gid) is not None]
    _group_changed(c, gid, None, 0, gone, now, who)
    return True


def _group_deliveries(c: sqlite3.Connection, g: dict[str, Any]) -> list[dict[str, Any]]:
    """This episode's notices of the group."""
    return [
        dict(x)
        for x in c.execute(
            "SELECT channel, kind, step, state, attempts, last_error AS error, finished_at "
            "FROM outbox WHERE fingerprint=? AND created_at >= ? ORDER BY id",
            (g["id"], g["first_notified_at"]),
        )
    ]


def _firing_groups(c: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    return {
        r["id"]: rows.group_dict(r, _load)
        for r in c.execute(
            "SELECT * FROM groups WHERE status='firing' ORDER BY CASE severity "
            "WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 "
            "ELSE 4 END, first_notified_at"
        )
    }


def _active_groups(c: sqlite3.Connection) -> list[dict[str, Any]]:
    return [rows.active_group(g, _group_deliveries(c, g)) for g in _firing_groups(c).values()]


def _active_alerts(c: sqlite3.Connection) -> list[dict[str, Any]]:
    out = []
    groups = _firing_groups(c)
    notices = {gid: _group_deliveries(c, g) for gid, g in groups.items()}
    for r in c.execute(
        "SELECT * FROM alerts WHERE status='firing' ORDER BY CASE severity WHEN 'critical' THEN 0 "
        "WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END, first_notified_at"
    ):
        if r["group_id"] in groups:
            gid = r["group_id"]
            out.append(rows.active_alert(r, _load, notices[gid], groups[gid]))
            continue
        deliveries = [
            dict(x)
            for x in c.execute(
                "SELECT channel, kind, step, state, attempts, last_error AS error, finished_at "
                "FROM outbox "
                "WHERE event_id=? ORDER BY id",
                (r["firing_event_id"],),
            )
        ]
        out.append(rows.active_alert(r, _load, deliveries))
    return out


def _history(c: sqlite3.Connection, since: float) -> dict[str, Any]:
    resolved = [
        rows.resolved_alert(r, _load)
        for r in c.execute(
            "SELECT a.*, EXISTS(SELECT 1 FROM events e WHERE e.fingerprint=a.fingerprint AND "
            "e.status='resolved' AND e.starts_at=a.starts_at AND e.source='manual') AS manual "
            "FROM alerts a WHERE a.status='resolved' AND a.resolved_at >= ? "
            "ORDER BY a.resolved_at DESC LIMIT 1000",
            (since,),
        )
    ]
    channels = [
        dict(x)
        for x in c.execute(
            "SELECT channel, sum(state='sent') AS sent, sum(state='dead') AS dead, "
            "sum(state IN ('pending','sending','held')) AS pending, "
            "sum(CASE WHEN state='sent' THEN attempts - 1 ELSE attempts END) AS failed_attempts, "
            "sum(state='digested') AS digested FROM outbox WHERE created_at >= ? GROUP BY channel "
            "ORDER BY channel",
            (since,),
        )
    ]
    return {"since": since, "resolved": resolved, "channels": channels}


def _dead_letters(c: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in c.execute(
            "SELECT o.id, o.channel, o.kind, o.step, o.fingerprint, o.attempts, o.last_error AS "
            "error, "
            "o.created_at, o.finished_at AS dead_at, coalesce(json_extract(e.labels, "
            "'$.alertname'), json_extract(o.payload, '$.labels.alertname')) AS alertname "
            "FROM outbox o LEFT JOIN events e ON e.id = o.event_id WHERE o.state='dead' "
            "ORDER BY o.finished_at DESC LIMIT ?",
            (limit,),
        )
    ]


def _rowcount(c: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> bool:
    return c.execute(sql, params).rowcount > 0
