"""App: the aiohttp application. Owns the store, the delivery workers and the escalation timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import api, escalate, heartbeat, status
from .config import Config, redact_dsn
from .deliver import Deliverer, contain_library_logs
from .intake import handle_alerts
from .metrics import Metrics
from .state import STATE, State
from .store import Store, StoreError, open_store

log = logging.getLogger("tailpage.receiver")


@web.middleware
async def _store_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any handler that cannot reach the store answers 503 with Retry-After: Alertmanager (and
    the status page) retry instead of treating the webhook as delivered."""
    try:
        return await handler(request)
    except StoreError as e:
        log.error("%s %s: store unavailable: %s", request.method, request.path, e)
        return web.json_response(
            {"error": "store unavailable, retry later"}, status=503, headers={"Retry-After": "5"}
        )


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="OK\n")


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready:
        return web.Response(status=503, text="starting\n")
    try:
        await asyncio.wait_for(state.store.ping(), state.cfg.store_timeout_s + 1)
    except (StoreError, TimeoutError):
        return web.Response(status=503, text="store unavailable\n")
    return web.Response(text="OK\n")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    with contextlib.suppress(StoreError, TimeoutError):
        depth = await asyncio.wait_for(state.store.queue_depth(), 2)
        state.metrics.set_queue_depth(depth, list(state.cfg.channels))
    return web.Response(
        body=generate_latest(state.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_app(
    cfg: Config,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    workers: bool = True,
) -> web.Application:
    """`store` defaults to the one named by cfg.store; `workers=False` leaves delivery and
    escalation to the caller (tests drive them tick by tick)."""
    contain_library_logs()  # secrets in channel URLs must not reach any log
    app = web.Application(
        client_max_size=cfg.max_body_bytes,
        middlewares=[_store_errors],
        # intake decodes Content-Encoding itself (body.py): its own errors, a bounded inflate
        handler_args={"auto_decompress": False},
    )
    m = Metrics()
    m.init_channels(list(cfg.channels))
    m.init_escalation_steps(max((len(r.escalate) for r in cfg.routes or ()), default=0))
    m.init_heartbeats([h.name for h in cfg.heartbeats])
    state = State(
        cfg=cfg, store=store or open_store(cfg.store, cfg.store_timeout_s), metrics=m, clock=clock
    )
    app[STATE] = state

    d = Deliverer(cfg, state.store, m, state.wake, clock)
    senders: list[asyncio.Task[None]] = []
    deadline = 0.0  # monotonic: when the shutdown grace ends

    async def begin_drain(app: web.Application) -> None:
        """Shutdown, step 1 (aiohttp calls it before waiting for in-flight requests): workers
        finish the batch in hand and claim no more, alongside the HTTP drain, in one grace."""
        nonlocal deadline
        deadline = time.monotonic() + cfg.shutdown_grace_s
        state.ready = False
        d.draining = True
        state.wake.set()  # idle workers wake up, see `draining` and return

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.store.open()
        log.info("store open: %s", redact_dsn(cfg.store))
        others: list[asyncio.Task[None]] = []
        if workers:
            senders.extend(
                asyncio.create_task(d.run(f"w{i}"), name=f"deliver-{i}")
                for i in range(cfg.delivery.workers)
            )
            others.append(
                asyncio.create_task(
                    escalate.run(state.store, m, state.wake, cfg.escalation_poll_s, clock),
                    name="escalate",
                )
            )
            if cfg.heartbeats:
                others.append(
                    asyncio.create_task(
                        heartbeat.run(state, cfg.escalation_poll_s), name="heartbeat"
                    )
                )
        state.ready = True
        yield
        state.ready = False
        for t in others:
            t.cancel()
        if senders:
            left = max(0.0, deadline - time.monotonic()) if deadline else 0.0
            _, late = await asyncio.wait(senders, timeout=left)
            if late:  # their rows stay 'sending' and go out again after the restart
                log.warning(
                    "shutdown grace (%gs) over: %d delivery workers stopped mid-send; "
                    "their notifications stay in the outbox",
                    cfg.shutdown_grace_s,
                    len(late),
                )
        for t in senders:
            t.cancel()
        await asyncio.gather(*senders, *others, return_exceptions=True)
        await state.store.close()

    app.on_shutdown.append(begin_drain)
    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/alerts", handle_alerts)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/metrics", metrics)
    api.add_routes(app)
    status.setup(app)  # the on-call page at `/`, behind the API's auth
    return app
