"""The storage interface: small, transactional, and the same for SQLite and PostgreSQL.

Every method is one transaction. Idempotency comes from a unique constraint on
(fingerprint, status, starts_at) of alert events; delivery workers claim outbox rows with a lease
(a PostgreSQL implementation does it with `FOR UPDATE SKIP LOCKED`), so a worker that dies leaves
its rows to the others once the lease expires. Escalation timers, rate-limit buckets and digests
live in the store too, so they hold across restarts and replicas.

Alertmanager's group (the webhook's groupKey) is the unit of notification: `ingest` takes one
group, stores its alerts one by one (idempotent as above) and, only when something changed (an
alert joined or resolved), queues ONE outbox row per channel for the group, carrying a snapshot
of it in `payload` (docs/receiver-groups.md). Acks and escalation timers are per group.

Times are float UNIX seconds. Outbox row states: pending -> sending -> sent | dead, or
pending -> held (rate-limited) -> digested (summarised in one digest row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class StoreError(Exception):
    """The store could not do the operation (locked, unwritable, unreachable)."""


@dataclass(frozen=True)
class IncomingAlert:
    """One alert of a webhook, already routed (the store does not know the config)."""

    fingerprint: str
    status: str  # firing | resolved
    starts_at: str  # as Alertmanager sent it (part of the idempotency key)
    ends_at: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str | None
    severity: str  # normalised: critical high medium low unknown
    channels: tuple[str, ...]  # firing: routed channels; resolved: fallback when none carried it
    escalation: tuple[tuple[float, tuple[str, ...]], ...] = ()  # (after_s, channels)
    external_url: str | None = None


@dataclass(frozen=True)
class IncomingGroup:
    """One webhook: an Alertmanager group, routed on its common labels and highest severity."""

    key: str  # the webhook's groupKey
    labels: dict[str, str]  # commonLabels
    group_labels: dict[str, str]
    annotations: dict[str, str]  # commonAnnotations
    severity: str
    channels: tuple[str, ...]
    escalation: tuple[tuple[float, tuple[str, ...]], ...] = ()
    external_url: str | None = None
    alerts: tuple[IncomingAlert, ...] = ()


@dataclass
class IngestResult:
    accepted: list[IncomingAlert] = field(default_factory=list)
    duplicates: list[IncomingAlert] = field(default_factory=list)
    deliveries: int = 0  # outbox rows created


@dataclass
class Delivery:
    """A claimed outbox row with what rendering needs."""

    id: int
    channel: str
    kind: str  # firing | resolved | escalation | digest
    step: int  # escalation step (1-based) for kind == escalation
    attempts: int
    created_at: float  # when the webhook was accepted (latency, max age)
    fingerprint: str
    status: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    generator_url: str | None
    external_url: str | None
    resolved_by: str | None = None
    digest: list[dict[str, Any]] | None = None  # kind == digest: the summarised notifications
    group: dict[str, Any] | None = None  # a group notification: its snapshot (rows.group_payload)


@dataclass
class EscalationFired:
    fingerprint: str
    step: int
    channels: tuple[str, ...]


@dataclass(frozen=True)
class HeartbeatState:
    """A heartbeat's row (receiver/heartbeat.py). No row, or no last ping: not armed yet."""

    name: str
    last_ping_at: float | None
    missing_since: float | None  # HeartbeatMissing fires from then (its startsAt); None: fine
    announced: bool  # the firing HeartbeatMissing of missing_since is in the store


class Store(Protocol):
    """What the receiver needs from storage. Implementations: sqlite.SQLiteStore (default)."""

    async def open(self) -> None:
        """Connect and apply schema migrations (safe when replicas start together)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError when the store cannot answer (readiness)."""

    async def ingest(self, group: IncomingGroup, now: float) -> IngestResult:
        """One transaction: alert events (duplicates skipped), alert and group state, and when
        the group changed one outbox row per channel (a pending one is refreshed instead)."""

    async def claim_due(
        self, worker: str, now: float, limit: int, lease_s: float
    ) -> list[Delivery]:
        """Claim due outbox rows (pending, or sending with an expired lease), oldest first.
        A row is only due when no earlier row of the same alert and channel is unfinished, so a
        resolve never overtakes its firing notice."""

    async def mark_sent(self, delivery_id: int, now: float) -> None: ...

    async def mark_failed(self, delivery_id: int, error: str, next_attempt_at: float) -> None: ...

    async def mark_dead(self, delivery_id: int, error: str, now: float) -> None: ...

    async def hold(self, delivery_id: int, now: float) -> None:
        """Rate-limited: park the row until a digest summarises it."""

    async def take_token(self, channel: str, now: float, rate_per_s: float, burst: int) -> bool:
        """Token bucket per channel: True and one token less, or False when empty."""

    async def channels_with_held(self) -> list[str]: ...

    async def make_digest(self, channel: str, now: float) -> int | None:
        """Move every held row of the channel into one new pending digest row; its id."""

    async def fire_due_escalations(self, now: float, limit: int) -> list[EscalationFired]:
        """Unacknowledged firing alerts whose next step is due: outbox rows for the step's
        channels and the timer moved to the next step, in one transaction."""

    async def ack(self, fingerprint: str, who: str, now: float) -> bool:
        """Record who acknowledged; stops escalation. False when no such active alert. The
        group's escalation stops once every firing alert of it is acknowledged."""

    async def ack_group(self, group_id: str, who: str, now: float) -> bool:
        """Acknowledge a firing group and each of its firing alerts."""

    async def resolve_group(self, group_id: str, who: str, now: float) -> bool:
        """Manual resolve of every firing alert of the group: one resolved message."""

    async def active_groups(self) -> list[dict[str, Any]]:
        """Firing groups with their counts, ack, escalation state and deliveries."""

    async def resolve(self, fingerprint: str, who: str, now: float) -> bool:
        """Manual resolve: like a resolved webhook (announced on the channels that carried the
        firing notice, escalation stopped). False when no such active alert."""

    async def active_alerts(self) -> list[dict[str, Any]]:
        """Firing alerts with their deliveries, ack and escalation state."""

    async def history(self, since: float) -> dict[str, Any]:
        """Resolved alerts since then (time to ack / resolve) and per-channel delivery failures."""

    async def dead_letters(self, limit: int) -> list[dict[str, Any]]: ...

    async def queue_depth(self) -> dict[str, int]:
        """Unfinished outbox rows (pending, sending, held) per channel."""

    # -- heartbeats (dead man's switches, receiver/heartbeat.py) --------------------------------

    async def heartbeat_pinged(self, names: list[str], now: float) -> None:
        """Record a ping of each heartbeat (arms it); last_ping_at never goes back."""

    async def heartbeat_states(self) -> dict[str, HeartbeatState]: ...

    async def heartbeat_claim_missing(
        self, name: str, last_ping_at: float, missing_since: float
    ) -> bool:
        """Conditional update in one transaction: mark the heartbeat missing from missing_since
        unless it already is or a ping came since last_ping_at. True for exactly one caller."""

    async def heartbeat_announced(self, name: str, missing_since: float) -> None:
        """The firing HeartbeatMissing of that episode is stored."""

    async def heartbeat_clear_missing(self, name: str, missing_since: float) -> bool:
        """End that episode (its resolve is stored). True for exactly one caller."""


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL. `sqlite:///var/lib/tailpage/receiver.db` is the absolute
    /var/lib/tailpage/receiver.db (the issue's example and the Helm chart write it so; a
    working-directory-relative reading would put the data outside the volume); `sqlite:////abs`
    works too; relative paths start with ./ or ../ (the default `sqlite:///./var/receiver.db`)."""
    rest = url.removeprefix("sqlite:///")
    if rest == ":memory:" or rest.startswith(("./", "../")):
        return rest
    return "/" + rest.lstrip("/")


def open_store(url: str, timeout_s: float = 5.0) -> Store:
    """The store for a `store:` URL."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), timeout_s=timeout_s)
    if url.startswith(("postgres://", "postgresql://")):
        try:
            from .postgresql import PostgreSQLStore  # type: ignore[import-not-found]
        except ImportError as e:
            raise StoreError("the PostgreSQL store is not available in this build") from e
        return PostgreSQLStore(url, timeout_s=timeout_s)
    raise StoreError("store: expected sqlite:///PATH or postgresql://...")
