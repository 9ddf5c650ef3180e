"""Intake: POST /alerts, Alertmanager's webhook. 200 only once the batch is durably stored."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from importlib import resources

import fastjsonschema
import orjson
from aiohttp import web

from . import heartbeat
from .body import BodyError, read_body
from .config import Auth, Config
from .route import route, severity
from .state import STATE, State
from .store import IncomingAlert, IncomingGroup, StoreError
from .store.rows import rank

log = logging.getLogger("tailpage.receiver.intake")

WEBHOOK_SCHEMA = json.loads(resources.files("receiver").joinpath("webhook.schema.json").read_text())
# fastjsonschema compiles the schema to Python: ~40 us per webhook where jsonschema takes ~1.7 ms,
# which alone would halve intake throughput. jsonschema still validates the (cold) config.
_validate = fastjsonschema.compile(WEBHOOK_SCHEMA)


def authorized(request: web.Request, auth: Auth) -> str | None:
    """The caller's name ('' without auth configured) or None. Constant-time comparisons."""
    if auth.bearer_token is None and auth.username is None:
        return ""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if (
        auth.bearer_token is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(value.strip().encode(), auth.bearer_token.encode())
    ):
        return "token"
    if auth.username is not None and auth.password is not None and scheme.lower() == "basic":
        try:
            user, _, pw = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        ok_user = hmac.compare_digest(user.encode(), auth.username.encode())
        ok_pw = hmac.compare_digest(pw.encode(), auth.password.encode())
        if ok_user and ok_pw:
            return user
    return None


def unauthorized(auth: Auth) -> web.Response:
    challenge = 'Basic realm="tailpage"' if auth.username else 'Bearer realm="tailpage"'
    return web.json_response(
        {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": challenge}
    )


def _reject(state: State, reason: str, status: int, message: str) -> web.Response:
    state.metrics.webhooks_rejected.labels(reason).inc()
    log.warning("webhook rejected (%d %s): %s", status, reason, message)
    return web.json_response({"error": message}, status=status)


def build_group(cfg: Config, data: dict) -> IncomingGroup:
    """The webhook as one group: its alerts, routed together on the common labels and the
    highest severity among the firing alerts (docs/receiver-groups.md)."""
    external = data.get("externalURL") or None
    alerts = tuple(
        IncomingAlert(
            fingerprint=a["fingerprint"],
            status=a["status"],
            starts_at=a["startsAt"],
            ends_at=a.get("endsAt"),
            labels=a["labels"],
            annotations=a.get("annotations") or {},
            generator_url=a.get("generatorURL") or None,
            severity=severity(a["labels"]),
            channels=(),
            external_url=external,
        )
        for a in data["alerts"]
    )
    common = data.get("commonLabels") or {}
    group_labels = data.get("groupLabels") or {}
    labels = common
    if "severity" not in common and alerts:  # severities differ: the worst firing one routes
        worst = min(
            (a for a in alerts if a.status == "firing"),
            key=lambda a: rank(a.severity),
            default=None,
        )
        worst = worst or min(alerts, key=lambda a: rank(a.severity))
        labels = {**common, "severity": worst.labels.get("severity", "")}
    r = route(cfg, labels)
    # without a groupKey (not Alertmanager?) the receiver and group labels name the group
    key = (
        data.get("groupKey")
        or orjson.dumps(
            [data.get("receiver", ""), group_labels], option=orjson.OPT_SORT_KEYS
        ).decode()
    )
    return IncomingGroup(
        key=key,
        labels=common,
        group_labels=group_labels,
        annotations=data.get("commonAnnotations") or {},
        severity=r.severity,
        channels=r.channels,
        escalation=tuple((s.after_s, s.channels) for s in r.escalation),
        external_url=external,
        alerts=alerts,
    )


async def handle_alerts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cfg = state.cfg
    if authorized(request, cfg.auth) is None:
        state.metrics.webhooks_rejected.labels("auth").inc()
        return unauthorized(cfg.auth)
    try:
        body = await read_body(request, cfg.max_body_bytes)
    except BodyError as e:
        return _reject(state, e.reason, e.status, e.message)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        return _reject(state, "invalid_json", 400, f"invalid JSON: {e}")
    del body  # up to max_body_bytes, no longer needed while the alerts are stored
    try:
        _validate(data)
    except fastjsonschema.JsonSchemaException as e:
        where = e.message.removeprefix("data.").removeprefix("data")
        return _reject(
            state, "schema", 400, f"not an Alertmanager v4 webhook: {where.strip()[:300]}"
        )

    others, pings = heartbeat.split_pings(cfg.heartbeats, data["alerts"])
    group = build_group(cfg, heartbeat.without_pings(data, others))
    try:
        res = await state.store.ingest(group, state.clock())
        if pings:
            await heartbeat.record_pings(state, pings)
    except StoreError:
        state.metrics.webhooks_rejected.labels("store").inc()
        raise  # app's middleware answers 503, so Alertmanager retries
    for a in res.accepted:
        state.metrics.alerts_received.labels(a.status, a.severity).inc()
    if res.duplicates:
        state.metrics.duplicates.inc(len(res.duplicates))
    if res.deliveries:
        state.wake.set()
    return web.json_response({"accepted": len(res.accepted), "duplicates": len(res.duplicates)})
