"""Deliver: workers claim outbox rows and send them through apprise's async API.

Failures are retried with exponential backoff and jitter until the row is older than
`delivery.max_age`, then it becomes a dead letter (counted, logged, listed by the API).
Rate-limited channels park rows as `held`; once a token is free they go out as ONE digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import sys
import time
import traceback
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import apprise
from apprise.decorators import notify as apprise_notify

from .config import Channel, Config, DeliverySettings
from .metrics import Metrics
from .render import Notification, render
from .state import task_stopping
from .store import Delivery, Store, StoreError

log = logging.getLogger("tailpage.receiver.deliver")


# apprise has no "print it" scheme; a custom notification registered through its own @notify
# decorator keeps console:// on the same send path (timeouts, results) as every other channel.
@apprise_notify(on="console", name="tailpage console")
def _console(body: str, title: str, notify_type: str, *args, **kwargs) -> bool:
    text = f"--- {title}\n{body}\n" if title else f"--- {body}\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return True


def contain_library_logs() -> None:
    """apprise and urllib3 log endpoint URLs (which hold tokens) at DEBUG..WARNING. Keep them off
    our handlers: apprise's records still reach the per-call capture that `send` reads its
    failure reason from (then redacted); nothing else of theirs is printed."""
    lib = logging.getLogger("apprise")
    lib.setLevel(logging.WARNING)
    lib.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in lib.handlers):
        lib.addHandler(logging.NullHandler())  # else logging's last-resort handler prints it
    for name in ("urllib3", "requests"):
        logging.getLogger(name).setLevel(logging.ERROR)


def with_params(url: str, params: dict[str, str]) -> str:
    """The channel URL with per-message parameters (PagerDuty dedup key) merged in."""
    if not params:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return parts._replace(query=urlencode(query)).geturl()


def redact(message: str, url: str) -> str:
    """Remove every token-like piece of the channel URL from an error text."""
    for piece in sorted(set(re.split(r"[/:@?&=#]+", url)), key=len, reverse=True):
        if (
            len(piece) >= 4
            and "." not in piece
            and piece.lower() not in ("http", "https", "json", "jsons")
        ):
            message = message.replace(piece, "***")
    return message


async def send(ch: Channel, n: Notification, timeout_s: float) -> str | None:
    """Send one notification; None on success, else a reason without secrets."""
    a = apprise.Apprise()
    if not a.add(with_params(ch.url, n.url_params)):
        return "the channel URL is not understood by apprise"
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the
        # send completes, and the worker would then never stop
        async with asyncio.timeout(timeout_s):
            result = await a.async_notify(
                body=n.body or " ",
                title=n.title,
                notify_type=apprise.NotifyType(n.notify_type),
                body_format=apprise.NotifyFormat(n.body_format),
            )
    except TimeoutError:
        return f"timed out after {timeout_s:g}s"
    if result:
        return None
    # apprise >= 2 returns an AppriseResult with per-service logs; 1.x a plain bool
    reason = f"apprise: {getattr(result.status, 'name', 'FAILURE').lower()}"
    # the plugin's own warning ("... error=500.") says why; it may quote the URL, hence redact
    for res in getattr(result, "results", ()):
        msgs = [e.message for e in res.logs() if e.level in ("WARNING", "ERROR")]
        if msgs:
            reason = msgs[-1]
    return redact(redact(reason, with_params(ch.url, n.url_params)), ch.url)[:500]


def retry_delay(attempt: int, s: DeliverySettings, jitter: float | None = None) -> float:
    """Exponential backoff after the `attempt`-th failure (1-based), capped at backoff_max, times
    a random factor in [0.5, 1]: retries of many rows to one recovering service spread out."""
    factor = random.uniform(0.5, 1.0) if jitter is None else jitter
    return min(s.backoff_max_s, s.backoff_initial_s * 2 ** min(attempt - 1, 60)) * factor


def _what(d: Delivery) -> str:
    if d.group is not None:
        return f"group {d.fingerprint}"
    return f"alert {d.fingerprint}" if d.fingerprint else "digest"


class Deliverer:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        metrics: Metrics,
        wake: asyncio.Event,
        clock: Callable[[], float] = time.time,
    ):
        self.cfg, self.store, self.metrics, self.wake, self.clock = cfg, store, metrics, wake, clock
        self.settings = cfg.delivery
        self.limited = {n for n, c in cfg.channels.items() if c.rate_burst}
        self.draining = False  # shutdown: finish the batch in hand, claim no more (app.py)

    async def run(self, name: str) -> None:
        """One worker: tick until cancelled or draining; sleep until woken or the poll interval
        passes."""
        while not task_stopping() and not self.draining:
            try:
                busy = await self.tick(name)
            except StoreError as e:
                log.error("delivery worker %s: store unavailable: %s", name, e)
                busy = 0
            if busy:
                continue
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see send()
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self.wake.wait()
            self.wake.clear()

    async def tick(self, worker: str) -> int:
        held: set[str] = set()
        if self.limited:
            for chan in await self.store.channels_with_held():
                ch = self.cfg.channels.get(chan)
                if ch is None or not ch.rate_burst:
                    await self.store.make_digest(chan, self.clock())  # no limit (any more): flush
                elif await self._take_token(ch):
                    await self.store.make_digest(chan, self.clock())
                else:
                    held.add(chan)
        rows = await self.store.claim_due(
            worker, self.clock(), self.settings.batch, self.settings.lease_s
        )
        if rows:
            await asyncio.gather(*(self._deliver(d, held) for d in rows))
        return len(rows)

    async def _deliver(self, d: Delivery, held: set[str]) -> None:
        ch = self.cfg.channels.get(d.channel)
        if ch is None:
            await self._dead(d, "channel is no longer in the config")
            return
        limited = ch.rate_burst and d.kind != "digest"  # a digest already spent its token
        if limited and (d.channel in held or not await self._take_token(ch)):
            held.add(d.channel)  # keep order: later rows of this channel join the digest too
            await self.store.hold(d.id, self.clock())
            self.metrics.rate_limited.labels(d.channel).inc()
            return
        try:
            error = await send(ch, render(d, ch, self.cfg.external_url), self.settings.timeout_s)
        except Exception as e:  # a bug in rendering or a plugin must not kill the worker
            # the traceback helps find the bug; exception texts may quote the URL: redacted
            trace = "".join(traceback.format_exception(e))
            log.error("delivery %s to %s crashed:\n%s", d.id, d.channel, redact(trace, ch.url))
            error = f"internal error: {type(e).__name__}"
        now = self.clock()
        if error is None:
            await self.store.mark_sent(d.id, now)
            self.metrics.notifications.labels(d.channel, "success").inc()
            self.metrics.latency.labels(d.channel).observe(max(0.0, now - d.created_at))
            log.info("sent %s %s of %s to %s", d.kind, d.id, _what(d), d.channel)
            return
        self.metrics.notifications.labels(d.channel, "failure").inc()
        attempt = d.attempts + 1
        delay = retry_delay(attempt, self.settings)
        if now + delay - d.created_at > self.settings.max_age_s:
            await self._dead(d, error)
        else:
            await self.store.mark_failed(d.id, error, now + delay)
            log.warning(
                "delivery %s to %s failed (attempt %d, retry in %.1fs): %s",
                d.id,
                d.channel,
                attempt,
                delay,
                error,
            )

    async def _take_token(self, ch: Channel) -> bool:
        """Only for a rate-limited channel (rate_burst set)."""
        return await self.store.take_token(
            ch.name, self.clock(), ch.rate_per_s or 0.0, ch.rate_burst or 0
        )

    async def _dead(self, d: Delivery, error: str) -> None:
        await self.store.mark_dead(d.id, error, self.clock())
        self.metrics.dead_letters.labels(d.channel).inc()
        log.error(
            "DEAD LETTER: %s %s of %s to channel %s after %d attempts: %s",
            d.kind,
            d.id,
            _what(d),
            d.channel,
            d.attempts + 1,
            error,
        )
