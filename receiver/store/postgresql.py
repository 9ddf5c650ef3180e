"""The PostgreSQL store: several receiver replicas share one database.

Everything rests on PostgreSQL's own guarantees, no coordination scheme of ours:
- intake is one transaction; unique constraints plus INSERT ... ON CONFLICT DO NOTHING make the
  same alert posted to two replicas at once one event and one outbox row per channel;
- delivery workers claim outbox rows with SELECT ... FOR UPDATE SKIP LOCKED and a lease, so a
  replica killed mid-send leaves its rows to the others once the lease runs out;
- escalation timers are claimed the same way (row lock on the alert, SKIP LOCKED);
- rate-limit buckets are rows locked while a token is taken; digests are made under a
  transaction-scoped advisory lock per channel, so one replica summarises all held rows;
- migrations are versioned and applied at start under pg_advisory_xact_lock, so replicas that
  start together apply each one exactly once.

Times are float UNIX seconds given by the caller, as in the SQLite store (replica clocks should be
NTP-synced: leases and timers compare them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

log = logging.getLogger("tailpage.receiver.store")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[dict[str, Any]]

# pg_advisory_xact_lock keys (any constant bigint; the names only document them)
MIGRATION_LOCK = 0x7461_696C_7061_6701  # "tailpag" + 1
DIGEST_LOCK_PREFIX = "tailpage.receiver.digest:"

# Versioned, append-only. Keep every migration additive (new tables, nullable or defaulted
# columns) so an older replica still running during a rolling upgrade keeps working.
MIGRATIONS = [
    """
    CREATE TABLE events(
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      fingerprint text NOT NULL, status text NOT NULL, starts_at text NOT NULL,
      ends_at text, labels jsonb NOT NULL, annotations jsonb NOT NULL, generator_url text,
      severity text NOT NULL, external_url text, source text NOT NULL,
      received_at double precision NOT NULL,
      UNIQUE(fingerprint, status, starts_at));
    CREATE TABLE alerts(
      fingerprint text PRIMARY KEY, status text NOT NULL, severity text NOT NULL,
      labels jsonb NOT NULL, annotations jsonb NOT NULL, starts_at text NOT NULL,
      generator_url text, firing_event_id bigint, first_notified_at double precision NOT NULL,
      updated_at double precision NOT NULL, acked_by text, acked_at double precision,
      resolved_by text, resolved_at double precision,
      escalation jsonb NOT NULL DEFAULT '[]', escalation_step integer NOT NULL DEFAULT 0,
      next_escalation_at double precision);
    CREATE INDEX alerts_next_escalation ON alerts(next_escalation_at)
      WHERE next_escalation_at IS NOT NULL;
    CREATE INDEX alerts_resolved_at ON alerts(resolved_at);
    CREATE TABLE outbox(
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id bigint,
      fingerprint text NOT NULL, channel text NOT NULL, kind text NOT NULL,
      step integer NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'pending',
      attempts integer NOT NULL DEFAULT 0, created_at double precision NOT NULL,
      next_attempt_at double precision NOT NULL, lease_owner text,
      lease_until double precision, last_error text, finished_at double precision,
      digest_id bigint, payload jsonb,
      UNIQUE(event_id, channel, kind, step));
    CREATE INDEX outbox_pending ON outbox(next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_leased ON outbox(lease_until) WHERE state = 'sending';
    CREATE INDEX outbox_unfinished ON outbox(fingerprint, channel, id)
      WHERE state IN ('pending', 'sending');
    CREATE INDEX outbox_held ON outbox(channel, id) WHERE state = 'held';
    CREATE INDEX outbox_dead ON outbox(finished_at) WHERE state = 'dead';
    CREATE INDEX outbox_created ON outbox(created_at);
    CREATE TABLE buckets(
      channel text PRIMARY KEY, tokens double precision NOT NULL,
      updated_at double precision NOT NULL);
    """,
    # 2: Alertmanager groups are the unit of notification (docs/receiver-groups.md)
    """
    ALTER TABLE alerts ADD COLUMN group_id text;
    CREATE INDEX alerts_group ON alerts(group_id, status);
    CREATE TABLE groups(
      id text PRIMARY KEY, group_key text NOT NULL, status text NOT NULL,
      severity text NOT NULL, labels jsonb NOT NULL, group_labels jsonb NOT NULL,
      annotations jsonb NOT NULL, channels jsonb NOT NULL DEFAULT '[]', external_url text,
      first_notified_at double precision NOT NULL, updated_at double precision NOT NULL,
      acked_by text, acked_at double precision, resolved_by text,
      resolved_at double precision, escalation jsonb NOT NULL DEFAULT '[]',
      escalation_step integer NOT NULL DEFAULT 0, next_escalation_at double precision,
      firing integer NOT NULL DEFAULT 0);
    CREATE INDEX groups_next_escalation ON groups(next_escalation_at)
      WHERE next_escalation_at IS NOT NULL;
    """,
    # 3: heartbeats (dead man's switches)
    """
    CREATE TABLE heartbeats(
      name text PRIMARY KEY, last_ping_at double precision, missing_since double precision,
      announced boolean NOT NULL DEFAULT false);
    """,
]
_GROUP_UPSERT = rows.group_upsert_sql("%s")
GROUP_LOCK_PREFIX = "tailpage.receiver.group:"

# deadlock_detected, serialization_failure: the transaction did nothing; run it again
_RETRY_TX = (pgerrors.DeadlockDetected, pgerrors.SerializationFailure)
# our own lock_timeout / statement_timeout: answer now (503), do not wait that long again
_NO_RETRY = (pgerrors.QueryCanceled, pgerrors.LockNotAvailable)


def _load(v: Any) -> Any:
    # jsonb columns come back decoded already
    return v


def _stay_cancelled(cause: BaseException | None = None) -> None:
    """Raise CancelledError when this task was asked to stop. On Python 3.11 a cancel can get
    lost on its way through psycopg_pool (its asyncio.wait_for returns the connection handed
    over at the same moment instead of raising), and a receiver worker would then never stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


class PostgreSQLStore:
    def __init__(self, url: str, timeout_s: float = 5.0, pool_max: int = 10):
        self.url = url  # holds the password: never log it, never put it in an error
        self.timeout_s = timeout_s
        self.pool_max = pool_max
        self._password = conninfo_to_dict(url).get("password") or ""
        self._pool: AsyncConnectionPool[Conn] | None = None
        # lease_owner names the replica too (worker names repeat across replicas), so
        # `SELECT lease_owner, count(*) FROM outbox WHERE state='sending'` shows who holds what;
        # the random part keeps it unique where host and pid repeat (pid 1 in containers on a
        # hostNetwork node) and makes a restarted process a new owner.
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    # -- plumbing ------------------------------------------------------------------------------

    def _error(self, what: str, e: BaseException) -> StoreError:
        text = f"{what}: {type(e).__name__}: {e}".strip()
        if self._password:
            text = text.replace(self._password, "***")
        return StoreError(text[:500])

    async def _configure(self, conn: Conn) -> None:
        # A webhook waits at most store_timeout for a lock, then gets 503 (Alertmanager retries);
        # statement_timeout bounds a hung query so workers and readiness never stall forever.
        ms = max(1, int(self.timeout_s * 1000))
        await conn.execute(f"SET lock_timeout = {ms}")
        await conn.execute(f"SET statement_timeout = {max(ms * 4, 10000)}")

    async def open(self) -> None:
        connect = {
            "autocommit": True,
            "row_factory": dict_row,
            "application_name": "tailpage-receiver",
        }
        if "connect_timeout" not in conninfo_to_dict(self.url):
            connect["connect_timeout"] = max(2, int(self.timeout_s))
        try:
            await self._migrate(connect)
        except (psycopg.Error, OSError) as e:
            raise self._error("cannot open the PostgreSQL store", e) from e
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_max,
            kwargs=connect,
            configure=self._configure,
            timeout=self.timeout_s,
            name="tailpage-receiver",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=max(self.timeout_s, 10.0))
        except (PoolTimeout, psycopg.Error) as e:
            await pool.close()
            raise self._error("cannot open the PostgreSQL store", e) from e
        self._pool = pool

    async def _migrate(self, connect: dict[str, Any]) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, **connect) as conn:
            await self._configure(conn)
            # Wait as long as another replica needs for its migrations, not just lock_timeout
            # (statement_timeout too would cut the wait for the advisory lock).
            await conn.execute("SET lock_timeout = 0")
            await conn.execute("SET statement_timeout = 0")
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS tailpage_schema_version("
                    "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                cur = await conn.execute("SELECT max(version) AS v FROM tailpage_schema_version")
                row = await cur.fetchone()
                have = (row or {}).get("v") or 0
                if have > len(MIGRATIONS):
                    log.warning(
                        "database schema version %d is newer than this receiver's %d; "
                        "running on it (migrations are additive)",
                        have,
                        len(MIGRATIONS),
                    )
                for version, script in enumerate(MIGRATIONS, start=1):
                    if version > have:
                        await conn.execute(script)  # type: ignore[arg-type]
                        await conn.execute(
                            "INSERT INTO tailpage_schema_version(version) VALUES (%s)", (version,)
                        )
                        log.info("store schema migrated to version %d", version)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _tx(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run fn in one transaction on a pooled connection. Deadlocks and serialization
        failures are retried; a connection lost before or during the transaction is retried
        once on a fresh one (every operation here is safe to run again: a commit that did land
        makes the retried intake see duplicates, a claim is re-claimed after its lease)."""
        pool = self._pool
        if pool is None:
            raise StoreError("store is closed")
        attempt = 0
        while True:
            attempt += 1
            _stay_cancelled()
            try:
                async with pool.connection() as conn, conn.transaction():
                    return await fn(conn)
            except (PoolTimeout, psycopg.Error) as e:
                _stay_cancelled(e)  # the error came out of an interrupted query or rollback
                if isinstance(e, PoolTimeout):  # all connections busy or server unreachable
                    raise self._error("PostgreSQL store: no connection", e) from e
                if isinstance(e, _RETRY_TX) and attempt < 5:
                    await asyncio.sleep(0.01 * attempt)
                    continue
                if (
                    isinstance(e, psycopg.OperationalError)
                    and not isinstance(e, _NO_RETRY)
                    and attempt < 2
                ):
                    log.warning("%s; retrying once", self._error("PostgreSQL store", e))
                    # after a server restart or failover every idle connection is dead too:
                    # drop them now, or the retry just draws the next dead one
                    with contextlib.suppress(psycopg.Error, PoolTimeout):
                        await pool.check()
                    continue
                raise self._error("PostgreSQL store", e) from e

    # -- the interface -------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._tx(lambda c: c.execute("SELECT 1"))

    async def ingest(self, group: IncomingGroup, now: float) -> IngestResult:
        async def op(c: Conn) -> IngestResult:
            gid = rows.group_id(group.key)
            # one transaction at a time per group: the HA pair's copy of a webhook waits, then
            # finds only duplicates; two changes of a group each see the other's result
            await _lock_group(c, gid)
            alerts = group.alerts
            res = rows.ingest_result(alerts, await _ingest_alerts(c, alerts, now, gid))
            if res.accepted:  # something changed: an alert joined or resolved
                joined = sum(a.status == "firing" for a in res.accepted)
                resolved = [a for a in res.accepted if a.status == "resolved"]
                res.deliveries = await _group_changed(c, gid, group, joined, resolved, now, None)
            return res

        return await self._tx(op)

    async def claim_due(
        self, worker: str, now: float, limit: int, lease_s: float
    ) -> list[Delivery]:
        async def op(c: Conn) -> list[Delivery]:
            cur = await c.execute(
                _CLAIM,
                {
                    "now": now,
                    "limit": limit,
                    "worker": f"{self.replica}/{worker}",
                    "until": now + lease_s,
                },
            )
            return [rows.delivery(r, _load) for r in await cur.fetchall()]

        return await self._tx(op)

    async def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        async def op(c: Conn) -> int:
            cur = await c.execute(sql, params)  # type: ignore[arg-type]
            return cur.rowcount

        return await self._tx(op)

    # A replica frozen past its lease reports late, after another replica re-claimed the row:
    # "sent" is still news worth keeping (the notification did go out, unfinished rows only),
    # but its failure, dead letter or hold must not undo what the new owner does with the row.
    async def mark_sent(self, delivery_id: int, now: float) -> None:
        await self._exec(
            "UPDATE outbox SET state='sent', attempts=attempts+1, finished_at=%s, "
            "lease_owner=NULL, lease_until=NULL, last_error=NULL "
            "WHERE id=%s AND state IN ('pending','sending')",
            (now, delivery_id),
        )

    async def _release_own(self, delivery_id: int, sets: str, params: tuple[Any, ...]) -> None:
        """End a claim this replica still holds: `sets` (constant SQL of the caller) plus
        dropping the lease; nothing when another replica has re-claimed the row."""
        await self._exec(
            # only the constant strings of the three methods below are spliced in
            f"UPDATE outbox SET {sets}, lease_owner=NULL, lease_until=NULL "  # noqa: S608
            "WHERE id=%s AND state='sending' AND starts_with(lease_owner, %s)",
            (*params, delivery_id, f"{self.replica}/"),
        )

    async def mark_failed(self, delivery_id: int, error: str, next_attempt_at: float) -> None:
        await self._release_own(
            delivery_id,
            "state='pending', attempts=attempts+1, last_error=%s, next_attempt_at=%s",
            (error, next_attempt_at),
        )

    async def mark_dead(self, delivery_id: int, error: str, now: float) -> None:
        await self._release_own(
            delivery_id,
            "state='dead', attempts=attempts+1, last_error=%s, finished_at=%s",
            (error, now),
        )

    async def hold(self, delivery_id: int, now: float) -> None:
        await self._release_own(delivery_id, "state='held'", ())

    async def take_token(self, channel: str, now: float, rate_per_s: float, burst: int) -> bool:
        async def op(c: Conn) -> bool:
            await c.execute(
                "INSERT INTO buckets(channel, tokens, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (channel) DO NOTHING",
                (channel, float(burst), now),
            )
            # the row lock makes replicas take tokens one after the other
            cur = await c.execute(
                "SELECT tokens, updated_at FROM buckets WHERE channel=%s FOR UPDATE", (channel,)
            )
            row = await cur.fetchone()
            assert row is not None
            ok, tokens = rows.take_token(row["tokens"], row["updated_at"], now, rate_per_s, burst)
            # greatest(): a replica whose clock lags must not make the bucket refill twice
            await c.execute(
                "UPDATE buckets SET tokens=%s, updated_at=greatest(updated_at, %s) "
                "WHERE channel=%s",
                (tokens, now, channel),
            )
            return ok

        return await self._tx(op)

    async def channels_with_held(self) -> list[str]:
        async def op(c: Conn) -> list[str]:
            cur = await c.execute(
                "SELECT DISTINCT channel FROM outbox WHERE state='held' ORDER BY channel"
            )
            return [r["channel"] for r in await cur.fetchall()]

        return await self._tx(op)

    async def make_digest(self, channel: str, now: float) -> int | None:
        return await self._tx(lambda c: _make_digest(c, channel, now))

    async def fire_due_escalations(self, now: float, limit: int) -> list[EscalationFired]:
        return await self._tx(lambda c: _fire_due_escalations(c, now, limit))

    async def ack(self, fingerprint: str, who: str, now: float) -> bool:
        return await self._tx(lambda c: _ack(c, fingerprint, who, now))

    async def resolve(self, fingerprint: str, who: str, now: float) -> bool:
        return await self._tx(lambda c: _manual_resolve(c, fingerprint, who, now))

    async def ack_group(self, group_id: str, who: str, now: float) -> bool:
        return await self._tx(lambda c: _ack_group(c, group_id, who, now))

    async def resolve_group(self, group_id: str, who: str, now: float) -> bool:
        return await self._tx(lambda c: _resolve_group(c, group_id, who, now))

    async def active_groups(self) -> list[dict[str, Any]]:
        async def op(c: Conn) -> list[dict[str, Any]]:
            groups = await _firing_groups(c)
            notices = await _group_deliveries(c, groups)
            return [rows.active_group(g, notices.get(gid, [])) for gid, g in groups.items()]

        return await self._tx(op)

    async def active_alerts(self) -> list[dict[str, Any]]:
        return await self._tx(_active_alerts)

    async def history(self, since: float) -> dict[str, Any]:
        return await self._tx(lambda c: _history(c, since))

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        async def op(c: Conn) -> list[dict[str, Any]]:
            cur = await c.execute(
                "SELECT o.id, o.channel, o.kind, o.step, o.fingerprint, o.attempts, "
                "o.last_error AS error, o.created_at, o.finished_at AS dead_at, "
                "coalesce(e.labels->>'alertname', o.payload->'labels'->>'alertname') AS alertname "
                "FROM outbox o LEFT JOIN events e ON e.id = o.event_id WHERE o.state='dead' "
                "ORDER BY o.finished_at DESC LIMIT %s",
                (limit,),
            )
            return list(await cur.fetchall())

        return await self._tx(op)

    async def queue_depth(self) -> dict[str, int]:
        async def op(c: Conn) -> dict[str, int]:
            cur = await c.execute(
                "SELECT channel, count(*) AS n FROM outbox "
                "WHERE state IN ('pending','sending','held') GROUP BY channel"
            )
            return {r["channel"]: r["n"] for r in await cur.fetchall()}

        return await self._tx(op)

    # -- heartbeats ----------------------------------------------------------------------------
    # The conditional updates below take the row lock; a replica that waited for it re-reads the
    # row (READ COMMITTED) and finds the WHERE no longer true, so exactly one replica wins.

    async def heartbeat_pinged(self, names: list[str], now: float) -> None:
        async def op(c: Conn) -> None:
            for name in sorted(set(names)):  # one lock order for every replica
                await c.execute(
                    "INSERT INTO heartbeats(name, last_ping_at) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET last_ping_at="
                    "greatest(heartbeats.last_ping_at, excluded.last_ping_at)",
                    (name, now),
                )

        await self._tx(op)

    async def heartbeat_states(self) -> dict[str, HeartbeatState]:
        async def op(c: Conn) -> dict[str, HeartbeatState]:
            cur = await c.execute(
                "SELECT name, last_ping_at, missing_since, announced FROM heartbeats"
            )
            return {r["name"]: HeartbeatState(**r) for r in await cur.fetchall()}

        return await self._tx(op)

    async def heartbeat_claim_missing(
        self, name: str, last_ping_at: float, missing_since: float
    ) -> bool:
        n = await self._exec(
            "UPDATE heartbeats SET missing_since=%s, announced=false "
            "WHERE name=%s AND missing_since IS NULL AND last_ping_at=%s",
            (missing_since, name, last_ping_at),
        )
        return n > 0

    async def heartbeat_announced(self, name: str, missing_since: float) -> None:
        await self._exec(
            "UPDATE heartbeats SET announced=true WHERE name=%s AND missing_since=%s",
            (name, missing_since),
        )

    async def heartbeat_clear_missing(self, name: str, missing_since: float) -> bool:
        n = await self._exec(
            "UPDATE heartbeats SET missing_since=NULL, announced=false "
            "WHERE name=%s AND missing_since=%s",
            (name, missing_since),
        )
        return n > 0


# -- operations: each runs inside the transaction _tx opened ----------------------------------

# Due rows, oldest first, skipping rows another worker holds locked right now. A row waits while
# an earlier row of the same alert and channel is unfinished, so a resolve never overtakes its
# firing notice (the NOT EXISTS reads the statement's snapshot: a firing row just claimed by
# another replica is still unfinished in it, so its resolve stays back).
_CLAIM = """
WITH due AS (
  SELECT o.id FROM outbox o
  WHERE ((o.state = 'pending' AND o.next_attempt_at <= %(now)s)
         OR (o.state = 'sending' AND o.lease_until <= %(now)s))
    AND NOT EXISTS (
      SELECT 1 FROM outbox p
      WHERE o.fingerprint <> '' AND p.fingerprint = o.fingerprint AND p.channel = o.channel
        AND p.id < o.id AND p.state IN ('pending', 'sending'))
  ORDER BY o.next_attempt_at, o.id
  LIMIT %(limit)s
  FOR UPDATE OF o SKIP LOCKED
), claimed AS (
  UPDATE outbox o SET state = 'sending', lease_owner = %(worker)s, lease_until = %(until)s
  FROM due WHERE o.id = due.id
  RETURNING o.id, o.channel, o.kind, o.step, o.attempts, o.created_at, o.next_attempt_at,
            o.fingerprint, o.payload, o.event_id
)
SELECT c.*, e.status, e.severity, e.labels, e.annotations, e.starts_at, e.generator_url,
       e.external_url, e.source, a.resolved_by
FROM claimed c LEFT JOIN events e ON e.id = c.event_id
LEFT JOIN alerts a ON a.fingerprint = c.fingerprint
ORDER BY c.next_attempt_at, c.id
"""


async def _insert_outbox(
    c: Conn, event_id: int | None, fp: str, channels, kind: str, step: int, now: float
) -> int:
    n = 0
    for ch in dict.fromkeys(channels):
        cur = await c.execute(
            "INSERT INTO outbox(event_id, fingerprint, channel, kind, step, created_at, "
            "next_attempt_at) VALUES (%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (event_id, channel, kind, step) DO NOTHING",
            (event_id, fp, ch, kind, step, now, now),
        )
        n += cur.rowcount
    return n


_INSERT_EVENT = (
    "INSERT INTO events(fingerprint, status, starts_at, ends_at, labels, annotations, "
    "generator_url, severity, external_url, source, received_at) "
    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
    "ON CONFLICT (fingerprint, status, starts_at) DO NOTHING RETURNING id"
)
_UPSERT_FIRING = (
    "INSERT INTO alerts(fingerprint, status, severity, labels, annotations, starts_at, "
    "generator_url, firing_event_id, first_notified_at, updated_at, escalation, "
    "next_escalation_at, escalation_step, group_id) "
    "VALUES (%s, 'firing', %s,%s,%s,%s,%s,%s,%s,%s,%s,%s,0,%s) "
    "ON CONFLICT (fingerprint) DO UPDATE SET status='firing', "
    "severity=excluded.severity, labels=excluded.labels, "
    "annotations=excluded.annotations, starts_at=excluded.starts_at, "
    "generator_url=excluded.generator_url, firing_event_id=excluded.firing_event_id, "
    "first_notified_at=excluded.first_notified_at, updated_at=excluded.updated_at, "
    "acked_by=NULL, acked_at=NULL, resolved_by=NULL, resolved_at=NULL, "
    "escalation=excluded.escalation, escalation_step=0, "
    "next_escalation_at=excluded.next_escalation_at, group_id=excluded.group_id"
)
_UPSERT_RESOLVED = (
    "INSERT INTO alerts(fingerprint, status, severity, labels, annotations, starts_at, "
    "generator_url, first_notified_at, updated_at, resolved_by, resolved_at, group_id) "
    "VALUES (%s, 'resolved', %s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
    "ON CONFLICT (fingerprint) DO UPDATE SET status='resolved', "
    "updated_at=excluded.updated_at, resolved_by=excluded.resolved_by, "
    "resolved_at=excluded.resolved_at, next_escalation_at=NULL, "
    "group_id=coalesce(alerts.group_id, excluded.group_id)"
)


async def _ingest_alerts(
    c: Conn, alerts: tuple[IncomingAlert, ...], now: float, gid: str
) -> list[int | None]:
    """A webhook's alerts of group gid, as _ingest_one would store them one by one, in a
    handful of round trips (executemany pipelines): a 3,000-alert group is 9,000 statements.
    Per alert: None for a duplicate, else 0 (the group, not the alert, gets outbox rows).
    Rows are locked in fingerprint order, so two replicas ingesting overlapping groups wait
    for each other instead of deadlocking."""
    counts: list[int | None] = [None] * len(alerts)
    order = sorted(range(len(alerts)), key=lambda i: alerts[i].fingerprint)
    firing = [alerts[i] for i in order if alerts[i].status == "firing"]
    late: set[tuple[str, str]] = set()
    if firing:  # late firing copies of episodes already resolved: nothing new to say
        cur = await c.execute(
            "SELECT fingerprint, starts_at FROM events WHERE status='resolved' AND "
            "(fingerprint, starts_at) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([a.fingerprint for a in firing], [a.starts_at for a in firing]),
        )
        late = {(r["fingerprint"], r["starts_at"]) for r in await cur.fetchall()}
    todo = [
        i
        for i in order
        if alerts[i].status != "firing" or (alerts[i].fingerprint, alerts[i].starts_at) not in late
    ]
    if not todo:
        return counts
    ids: dict[int, int] = {}
    cur = c.cursor()
    params = [rows.event_params(alerts[i], "webhook", now, Jsonb) for i in todo]
    await cur.executemany(_INSERT_EVENT, params, returning=True)
    for k, i in enumerate(todo):  # one result per event: its id, or nothing (a duplicate)
        if k:
            cur.nextset()
        row = await cur.fetchone()
        if row is not None:
            ids[i] = row["id"]
    fire = [
        (*rows.firing_alert_params(alerts[i], ids[i], now, [], None, Jsonb), gid)
        for i in todo
        if i in ids and alerts[i].status == "firing"
    ]
    if fire:
        await cur.executemany(_UPSERT_FIRING, fire)
    gone = [
        (*rows.resolved_alert_params(alerts[i], None, now, Jsonb), gid)
        for i in todo
        if i in ids and alerts[i].status == "resolved"
    ]
    if gone:
        await cur.executemany(_UPSERT_RESOLVED, gone)
    for i in ids:
        counts[i] = 0
    return counts


async def _lock_group(c: Conn, gid: str) -> None:
    await c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (GROUP_LOCK_PREFIX + gid,)
    )


async def _group_firing(c: Conn, gid: str) -> list[dict[str, Any]]:
    cur = await c.execute(
        "SELECT fingerprint, severity, labels, annotations, starts_at FROM alerts "
        "WHERE group_id=%s AND status='firing'",
        (gid,),
    )
    return await cur.fetchall()


async def _group_changed(
    c: Conn,
    gid: str,
    g: IncomingGroup | None,
    joined: int,
    resolved: list[IncomingAlert],
    now: float,
    who: str | None,
) -> int:
    """After alerts of the group joined or resolved: the group's new state, and one outbox row
    per channel to tell (a pending one refreshed instead). The number of new outbox rows.
    The caller holds the group's lock."""
    # FOR UPDATE: an escalation step firing right now (it locks the row, not the advisory
    # lock) commits first and is read here, instead of being overwritten by a stale copy
    cur = await c.execute("SELECT * FROM groups WHERE id=%s FOR UPDATE", (gid,))
    r = await cur.fetchone()
    old = rows.group_dict(r, _load) if r else None
    firing = await _group_firing(c, gid)
    was_firing = old is not None and old["status"] == "firing"
    told = old["channels"] if was_firing else []
    sends = rows.group_sends(
        was_firing, old is not None, len(firing), told, g.channels if g else None
    )
    new = rows.next_group(old, g, gid, [f["severity"] for f in firing], sends, now, who)
    await c.execute(_GROUP_UPSERT, rows.group_params(new, Jsonb))
    if firing and new["acked_at"] is not None:  # alerts joining an acknowledged group
        await c.execute(
            "UPDATE alerts SET acked_by=%s, acked_at=%s WHERE group_id=%s AND status='firing' "
            "AND acked_at IS NULL",
            (new["acked_by"], new["acked_at"], gid),
        )
    payload = rows.group_payload(new, firing, joined, resolved, _load, who)
    return await _queue_group(c, gid, sends, payload, now, 0)


async def _queue_group(
    c: Conn, gid: str, sends: list[tuple[str, str]], payload: dict[str, Any], now: float, step: int
) -> int:
    """Outbox rows of a group notification. An update where the channel's last unfinished row
    of the group is a firing or update not yet sent (pending or held by the rate limit) refreshes
    that row instead: the channel gets the newest state once, not every step of a storm."""
    n = 0
    for ch, kind in sends:
        if kind == "update":
            # FOR UPDATE: a worker's claim either came first (state 'sending': a new row) or
            # waits for this transaction (and sends the refreshed payload)
            cur = await c.execute(
                "SELECT id, kind, state, payload FROM outbox WHERE fingerprint=%s "
                "AND channel=%s AND state IN ('pending','sending','held') "
                "ORDER BY id DESC LIMIT 1 FOR UPDATE",
                (gid, ch),
            )
            last = await cur.fetchone()
            if (
                last
                and last["state"] in ("pending", "held")
                and last["kind"] in ("firing", "update")
            ):
                merged = rows.merge_payload(last["payload"], payload)
                await c.execute(
                    "UPDATE outbox SET payload=%s WHERE id=%s", (Jsonb(merged), last["id"])
                )
                continue
        await c.execute(
            "INSERT INTO outbox(event_id, fingerprint, channel, kind, step, created_at, "
            "next_attempt_at, payload) VALUES (NULL,%s,%s,%s,%s,%s,%s,%s)",
            (gid, ch, kind, step, now, now, Jsonb(payload)),
        )
        n += 1
    return n


async def _ingest_one(
    c: Conn, a: IncomingAlert, now: float, source: str, who: str | None, gid: str | None
) -> int | None:
    """Store one alert event; None when it is a duplicate, else the number of outbox rows (an
    alert of a group has none of its own: the group is notified)."""
    if a.status == "firing":
        cur = await c.execute(
            "SELECT 1 FROM events WHERE fingerprint=%s AND status='resolved' AND starts_at=%s",
            (a.fingerprint, a.starts_at),
        )
        if await cur.fetchone():
            return None  # a late firing copy of an episode already resolved: nothing new to say
    # The unique constraint decides: a replica inserting the same event at the same moment
    # waits here for the other's commit and then inserts nothing.
    cur = await c.execute(_INSERT_EVENT, rows.event_params(a, source, now, Jsonb))
    row = await cur.fetchone()
    if row is None:
        return None
    event_id = row["id"]
    if a.status == "firing":
        plan, next_at = ([], None) if gid else rows.escalation_plan(a, now)
        await c.execute(
            _UPSERT_FIRING, (*rows.firing_alert_params(a, event_id, now, plan, next_at, Jsonb), gid)
        )
        if gid:
            return 0
        return await _insert_outbox(c, event_id, a.fingerprint, a.channels, "firing", 0, now)

    await c.execute(_UPSERT_RESOLVED, (*rows.resolved_alert_params(a, who, now, Jsonb), gid))
    if gid:
        return 0
    # resolved: announce on every channel that carried the firing notice of this episode
    cur = await c.execute(
        "SELECT id FROM events WHERE fingerprint=%s AND status='firing' AND starts_at=%s",
        (a.fingerprint, a.starts_at),
    )
    firing = await cur.fetchone()
    if firing:
        cur = await c.execute(
            "SELECT channel FROM outbox WHERE event_id=%s AND kind IN ('firing','escalation') "
            "AND state <> 'dead' ORDER BY id",
            (firing["id"],),
        )
        channels = [r["channel"] for r in await cur.fetchall()]
    else:  # never saw it fire (e.g. the receiver was replaced): tell the routed channels
        channels = list(a.channels)
    return await _insert_outbox(c, event_id, a.fingerprint, channels, "resolved", 0, now)


async def _make_digest(c: Conn, channel: str, now: float) -> int | None:
    # One replica at a time summarises a channel, so all its held rows go into ONE digest.
    await c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (DIGEST_LOCK_PREFIX + channel,)
    )
    cur = await c.execute(
        "SELECT o.id, o.kind, o.step, o.created_at, o.fingerprint, o.payload, e.status, "
        "e.severity, e.labels, e.annotations FROM outbox o "
        "LEFT JOIN events e ON e.id = o.event_id "
        "WHERE o.channel=%s AND o.state='held' ORDER BY o.id FOR UPDATE OF o",
        (channel,),
    )
    held = await cur.fetchall()
    if not held:
        return None
    cur = await c.execute(
        "INSERT INTO outbox(event_id, fingerprint, channel, kind, step, created_at, "
        "next_attempt_at, payload) VALUES (NULL, '', %s, 'digest', 0, %s, %s, %s) RETURNING id",
        (channel, min(r["created_at"] for r in held), now, Jsonb(rows.digest_items(held, _load))),
    )
    row = await cur.fetchone()
    assert row is not None
    digest_id = row["id"]
    await c.execute(
        "UPDATE outbox SET state='digested', digest_id=%s, finished_at=%s WHERE id = ANY(%s)",
        (digest_id, now, [r["id"] for r in held]),
    )
    return digest_id


async def _fire_due_escalations(c: Conn, now: float, limit: int) -> list[EscalationFired]:
    # SKIP LOCKED: a timer another replica is firing right now is its business, not ours.
    cur = await c.execute(
        "SELECT fingerprint, escalation, escalation_step, first_notified_at, firing_event_id "
        "FROM alerts WHERE status='firing' AND acked_at IS NULL AND next_escalation_at <= %s "
        "ORDER BY next_escalation_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (now, limit),
    )
    fired = []
    for r in await cur.fetchall():
        fp, step = r["fingerprint"], r["escalation_step"] + 1
        nxt = rows.next_escalation(r["escalation"], step, r["first_notified_at"])
        if nxt is None:
            await c.execute("UPDATE alerts SET next_escalation_at=NULL WHERE fingerprint=%s", (fp,))
            continue
        channels, next_at = nxt
        await _insert_outbox(c, r["firing_event_id"], fp, channels, "escalation", step, now)
        await c.execute(
            "UPDATE alerts SET escalation_step=%s, next_escalation_at=%s, updated_at=%s "
            "WHERE fingerprint=%s",
            (step, next_at, now, fp),
        )
        fired.append(EscalationFired(fp, step, channels))
    cur = await c.execute(
        "SELECT * FROM groups WHERE status='firing' AND acked_at IS NULL "
        "AND next_escalation_at <= %s ORDER BY next_escalation_at LIMIT %s "
        "FOR UPDATE SKIP LOCKED",
        (now, max(0, limit - len(fired))),
    )
    for r in await cur.fetchall():
        g = rows.group_dict(r, _load)
        gid, step = g["id"], g["escalation_step"] + 1
        nxt = rows.next_escalation(g["escalation"], step, g["first_notified_at"])
        if nxt is None:
            await c.execute("UPDATE groups SET next_escalation_at=NULL WHERE id=%s", (gid,))
            continue
        channels, next_at = nxt
        payload = rows.group_payload(g, await _group_firing(c, gid), 0, [], _load)
        await _queue_group(c, gid, [(ch, "escalation") for ch in channels], payload, now, step)
        told = list(dict.fromkeys([*g["channels"], *channels]))  # they hear the resolve too
        await c.execute(
            "UPDATE groups SET escalation_step=%s, next_escalation_at=%s, updated_at=%s, "
            "channels=%s WHERE id=%s",
            (step, next_at, now, Jsonb(told), gid),
        )
        fired.append(EscalationFired(gid, step, channels))
    return fired


async def _lock_alert_group(c: Conn, fingerprint: str) -> str | None:
    """Lock the alert's group first (the lock order of intake: group, then its alerts) and
    return its id, None for an alert without a group."""
    cur = await c.execute("SELECT group_id FROM alerts WHERE fingerprint=%s", (fingerprint,))
    r = await cur.fetchone()
    gid = r["group_id"] if r else None
    if gid:
        await _lock_group(c, gid)
    return gid


async def _ack(c: Conn, fingerprint: str, who: str, now: float) -> bool:
    gid = await _lock_alert_group(c, fingerprint)
    cur = await c.execute(
        "UPDATE alerts SET acked_by=coalesce(acked_by, %s), acked_at=coalesce(acked_at, %s), "
        "next_escalation_at=NULL, updated_at=%s WHERE fingerprint=%s AND status='firing'",
        (who, now, now, fingerprint),
    )
    if cur.rowcount == 0:
        return False
    if gid:  # the group's escalation stops once none of its firing alerts is unacknowledged
        await c.execute(
            "UPDATE groups SET acked_by=coalesce(acked_by, %s), "
            "acked_at=coalesce(acked_at, %s), next_escalation_at=NULL, updated_at=%s "
            "WHERE id=%s AND status='firing' AND NOT EXISTS (SELECT 1 FROM alerts "
            "WHERE group_id=%s AND status='firing' AND acked_at IS NULL)",
            (who, now, now, gid, gid),
        )
    return True


async def _ack_group(c: Conn, gid: str, who: str, now: float) -> bool:
    await _lock_group(c, gid)
    cur = await c.execute(
        "UPDATE groups SET acked_by=coalesce(acked_by, %s), acked_at=coalesce(acked_at, %s), "
        "next_escalation_at=NULL, updated_at=%s WHERE id=%s AND status='firing'",
        (who, now, now, gid),
    )
    if cur.rowcount == 0:
        return False
    await c.execute(
        "UPDATE alerts SET acked_by=coalesce(acked_by, %s), acked_at=coalesce(acked_at, %s), "
        "updated_at=%s WHERE group_id=%s AND status='firing'",
        (who, now, now, gid),
    )
    return True


async def _manual_resolve(c: Conn, fingerprint: str, who: str, now: float) -> bool:
    # _ingest_one takes its locks in the same order as a webhook's intake (group, event, then
    # alert), and its unique constraint makes two resolves at once one event.
    await _lock_alert_group(c, fingerprint)
    cur = await c.execute(
        "SELECT * FROM alerts WHERE fingerprint=%s AND status='firing'", (fingerprint,)
    )
    r = await cur.fetchone()
    if r is None:
        return False
    a, gid = rows.manual_resolve_alert(r, _load), r["group_id"]
    if await _ingest_one(c, a, now, "manual", who, gid) is not None and gid:
        await _group_changed(c, gid, None, 0, [a], now, who)  # an update, or the group's resolve
    return True


async def _resolve_group(c: Conn, gid: str, who: str, now: float) -> bool:
    await _lock_group(c, gid)
    cur = await c.execute(
        "SELECT a.* FROM alerts a JOIN groups g ON g.id = a.group_id "
        "WHERE a.group_id=%s AND a.status='firing' AND g.status='firing' ORDER BY a.fingerprint",
        (gid,),
    )
    found = await cur.fetchall()
    if not found:
        return False
    gone = []
    for r in found:
        a = rows.manual_resolve_alert(r, _load)
        if await _ingest_one(c, a, now, "manual", who, gid) is not None:
            gone.append(a)
    await _group_changed(c, gid, None, 0, gone, now, who)
    return True


async def _firing_groups(c: Conn) -> dict[str, dict[str, Any]]:
    cur = await c.execute(
        "SELECT * FROM groups WHERE status='firing' ORDER BY CASE severity "
        "WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 "
        "ELSE 4 END, first_notified_at"
    )
    return {r["id"]: rows.group_dict(r, _load) for r in await cur.fetchall()}


async def _group_deliveries(
    c: Conn, groups: dict[str, dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """This episode's notices of each group, in one query."""
    cur = await c.execute(
        "SELECT o.fingerprint, o.channel, o.kind, o.step, o.state, o.attempts, "
        "o.last_error AS error, o.finished_at FROM outbox o "
        "JOIN groups g ON g.id = o.fingerprint AND o.created_at >= g.first_notified_at "
        "WHERE o.fingerprint = ANY(%s) ORDER BY o.id",
        (list(groups),),
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for x in await cur.fetchall():
        out.setdefault(x.pop("fingerprint"), []).append(x)
    return out


async def _active_alerts(c: Conn) -> list[dict[str, Any]]:
    groups = await _firing_groups(c)
    notices = await _group_deliveries(c, groups)
    cur = await c.execute(
        "SELECT * FROM alerts WHERE status='firing' ORDER BY CASE severity "
        "WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 "
        "ELSE 4 END, first_notified_at"
    )
    alerts = await cur.fetchall()
    # one query for every alert's deliveries instead of one per alert (a round trip each)
    cur = await c.execute(
        "SELECT event_id, channel, kind, step, state, attempts, last_error AS error, "
        "finished_at FROM outbox WHERE event_id = ANY(%s) ORDER BY id",
        ([r["firing_event_id"] for r in alerts if r["firing_event_id"] is not None],),
    )
    deliveries: dict[int, list[dict[str, Any]]] = {}
    for x in await cur.fetchall():
        deliveries.setdefault(x.pop("event_id"), []).append(x)
    return [
        rows.active_alert(r, _load, notices.get(gid, []), groups[gid])
        if (gid := r["group_id"]) in groups
        else rows.active_alert(r, _load, deliveries.get(r["firing_event_id"], []))
        for r in alerts
    ]


async def _history(c: Conn, since: float) -> dict[str, Any]:
    cur = await c.execute(
        "SELECT a.*, EXISTS(SELECT 1 FROM events e WHERE e.fingerprint=a.fingerprint AND "
        "e.status='resolved' AND e.starts_at=a.starts_at AND e.source='manual') AS manual "
        "FROM alerts a WHERE a.status='resolved' AND a.resolved_at >= %s "
        "ORDER BY a.resolved_at DESC LIMIT 1000",
        (since,),
    )
    resolved = [rows.resolved_alert(r, _load) for r in await cur.fetchall()]
    cur = await c.execute(
        "SELECT channel, count(*) FILTER (WHERE state='sent') AS sent, "
        "count(*) FILTER (WHERE state='dead') AS dead, "
        "count(*) FILTER (WHERE state IN ('pending','sending','held')) AS pending, "
        "sum(CASE WHEN state='sent' THEN attempts - 1 ELSE attempts END) AS failed_attempts, "
        "count(*) FILTER (WHERE state='digested') AS digested "
        "FROM outbox WHERE created_at >= %s GROUP BY channel ORDER BY channel",
        (since,),
    )
    return {"since": since, "resolved": resolved, "channels": list(await cur.fetchall())}
