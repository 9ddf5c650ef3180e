"""Metrics: the receiver's series (names fixed in README "Metrics reference").

One registry per app object, so tests and embedded uses do not share global state.
Labels carry channel NAMES, never URLs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .route import SEVERITIES

P = "tailpage_receiver_"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.alerts_received = Counter(
            P + "alerts_received_total",
            "Alerts accepted from webhooks.",
            ["status", "severity"],
            registry=r,
        )
        self.webhooks_rejected = Counter(
            P + "webhooks_rejected_total", "Webhooks answered 4xx/5xx.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            P + "duplicates_total",
            "Alerts already stored (retries, HA peers): not notified again.",
            registry=r,
        )
        self.notifications = Counter(
            P + "notifications_total", "Delivery attempts.", ["channel", "result"], registry=r
        )
        self.latency = Histogram(
            P + "notification_latency_seconds",
            "From webhook accepted to channel delivered.",
            ["channel"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
        )
        self.queue_depth = Gauge(P + "queue_depth", "Outbox rows waiting.", ["channel"], registry=r)
        self.dead_letters = Counter(
            P + "dead_letters_total",
            "Deliveries given up after the retry age.",
            ["channel"],
            registry=r,
        )
        self.escalations = Counter(
            P + "escalations_total", "Escalation steps fired.", ["step"], registry=r
        )
        self.rate_limited = Counter(
            P + "rate_limited_total",
            "Notifications held back into a digest.",
            ["channel"],
            registry=r,
        )
        self.heartbeat_last_ping = Gauge(
            P + "heartbeat_last_ping_timestamp_seconds",
            "When the heartbeat's last ping arrived (UNIX time; 0: not armed yet).",
            ["heartbeat"],
            registry=r,
        )
        self.heartbeat_missing = Gauge(
            P + "heartbeat_missing",
            "1 while the receiver's HeartbeatMissing alert of the heartbeat is firing.",
            ["heartbeat"],
            registry=r,
        )
        for reason in ("auth", "too_large", "invalid_json", "schema", "store"):
            self.webhooks_rejected.labels(reason)
        for status in ("firing", "resolved"):  # bounded: severity is normalised (route.severity)
            for sev in SEVERITIES:
                self.alerts_received.labels(status, sev)

    def init_channels(self, names: list[str]) -> None:
        """Series exist from the start, so rate() and absent() work before the first page."""
        for name in names:
            for result in ("success", "failure"):
                self.notifications.labels(name, result)
            self.queue_depth.labels(name)
            self.dead_letters.labels(name)
            self.rate_limited.labels(name)
            self.latency.labels(name)

    def init_escalation_steps(self, steps: int) -> None:
        """One series per step the config can reach (1-based, like the outbox rows)."""
        for step in range(1, steps + 1):
            self.escalations.labels(str(step))

    def set_queue_depth(self, depth: dict[str, int], names: list[str]) -> None:
        for name in set(names) | set(depth):
            self.queue_depth.labels(name).set(depth.get(name, 0))

    def init_heartbeats(self, names: list[str]) -> None:
        """Heartbeat names come from the config: bounded."""
        for name in names:
            self.heartbeat_last_ping.labels(name)
            self.heartbeat_missing.labels(name)
