"""API: active alerts and groups, ack, manual resolve, history, dead letters. Same auth as
intake. Groups (docs/receiver-groups.md) are acked and resolved as a whole or alert by alert.

Answers carry channel NAMES and delivery states, never channel URLs.
"""

from __future__ import annotations

import re

from aiohttp import web

from .config import parse_duration
from .intake import authorized, unauthorized
from .state import STATE

_WHO = re.compile(r"^[\w .@+-]{1,64}$")


def _auth(request: web.Request) -> str | None:
    return authorized(request, request.app[STATE].cfg.auth)


async def get_alerts(request: web.Request) -> web.Response:
    if _auth(request) is None:
        return unauthorized(request.app[STATE].cfg.auth)
    store = request.app[STATE].store
    alerts = await store.active_alerts()
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a["severity"]] = counts.get(a["severity"], 0) + 1
    groups = await store.active_groups()
    return web.json_response({"counts": counts, "alerts": alerts, "groups": groups})


async def get_groups(request: web.Request) -> web.Response:
    if _auth(request) is None:
        return unauthorized(request.app[STATE].cfg.auth)
    return web.json_response({"groups": await request.app[STATE].store.active_groups()})


async def _who(request: web.Request, caller: str) -> str | web.Response:
    who = request.query.get("by")
    if who is None and request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(
                {"error": 'body: expected JSON like {"by": "alice"}'}, status=400
            )
        who = body.get("by") if isinstance(body, dict) else None
    who = who or caller or "api"
    if not isinstance(who, str) or not _WHO.match(who.strip()):
        return web.json_response(
            {"error": "by: expected 1-64 letters, digits, space . @ + - _"}, status=400
        )
    return who.strip()


async def _act(request: web.Request, action: str) -> web.Response:
    state = request.app[STATE]
    caller = _auth(request)
    if caller is None:
        return unauthorized(state.cfg.auth)
    who = await _who(request, caller)
    if isinstance(who, web.Response):
        return who
    if "group" in request.match_info:
        key, ident, what = "group", request.match_info["group"], "group"
        fn = state.store.ack_group if action == "ack" else state.store.resolve_group
    else:
        key, ident, what = "fingerprint", request.match_info["fingerprint"], "alert"
        fn = state.store.ack if action == "ack" else state.store.resolve
    if not await fn(ident, who, state.clock()):
        return web.json_response({"error": f"no firing {what} with {key} {ident}"}, status=404)
    if action == "resolve":
        state.wake.set()
    return web.json_response({key: ident, action: True, "by": who})


async def post_ack(request: web.Request) -> web.Response:
    return await _act(request, "ack")


async def post_resolve(request: web.Request) -> web.Response:
    return await _act(request, "resolve")


async def get_history(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _auth(request) is None:
        return unauthorized(state.cfg.auth)
    try:
        since = parse_duration(request.query.get("since", "24h"))
    except ValueError:
        return web.json_response({"error": "since: expected a duration such as 24h"}, status=400)
    return web.json_response(await state.store.history(state.clock() - since))


async def get_dead_letters(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if _auth(request) is None:
        return unauthorized(state.cfg.auth)
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError:
        return web.json_response({"error": "limit: expected an integer"}, status=400)
    return web.json_response({"dead_letters": await state.store.dead_letters(limit)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/alerts", get_alerts)
    app.router.add_post("/api/v1/alerts/{fingerprint}/ack", post_ack)
    app.router.add_post("/api/v1/alerts/{fingerprint}/resolve", post_resolve)
    app.router.add_get("/api/v1/groups", get_groups)
    app.router.add_post("/api/v1/groups/{group}/ack", post_ack)
    app.router.add_post("/api/v1/groups/{group}/resolve", post_resolve)
    app.router.add_get("/api/v1/history", get_history)
    app.router.add_get("/api/v1/dead-letters", get_dead_letters)
