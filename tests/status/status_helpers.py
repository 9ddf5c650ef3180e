"""Helpers of the status page tests (a unique module name: test dirs have no __init__)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from receiver.app import build_app
from receiver.state import STATE, State

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "receiver" / "payloads"  # captured from a real Alertmanager 0.25
OUTPUT = ROOT / "test-output" / "status"
TOKEN = "page-test-token-9f8e7d"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def captured(name: str) -> dict:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def iso(ago_s: float) -> str:
    return datetime.fromtimestamp(time.time() - ago_s, UTC).isoformat().replace("+00:00", "Z")


def webhook(*alerts: dict, status: str = "firing") -> dict:
    """A webhook body shaped exactly like the captured one, carrying the given alerts."""
    body = captured("firing" if status == "firing" else "resolved")
    body["alerts"] = list(alerts)
    body["status"] = status
    return body


def redated(name: str, started_ago_s: float) -> dict:
    """A captured webhook as it was sent, with startsAt moved to a recent time."""
    body = captured(name)
    for a in body["alerts"]:
        a["startsAt"] = iso(started_ago_s)
    return body


def alert(
    fp: str,
    alertname: str,
    severity: str,
    component: str,
    summary: str,
    started_ago_s: float = 60,
    status: str = "firing",
    **annotations: str,
) -> dict:
    """One alert built on a captured one: only names, labels and times differ."""
    a = copy.deepcopy(captured("firing")["alerts"][1])
    a["fingerprint"] = fp
    a["status"] = status
    a["labels"] = {**a["labels"], "alertname": alertname, "severity": severity,
                   "component": component}
    a["annotations"] = {"summary": summary, **annotations}
    a["startsAt"] = iso(started_ago_s)
    if status == "resolved":
        a["endsAt"] = iso(0)
    return a


class Clock:
    """The receiver's clock: real time plus an offset a test can move forward, so the escalation
    timer (15 min in the routes below) comes due without waiting 15 minutes."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Sink:
    """Local HTTP server standing in for Slack / SMS / PagerDuty / email (apprise json://)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []
        self.failing: set[str] = set()
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in self.failing:
            return web.Response(status=500, text="stand-in failure")
        self.got.append((name, await request.json()))
        return web.Response(text="ok")

    async def start(self) -> Sink:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    def url(self, name: str) -> str:
        return f"json://127.0.0.1:{self.port}/{name}"

    def to(self, name: str) -> list[dict]:
        return [body for n, body in self.got if n == name]


def config(sink: Sink, **extra) -> dict:
    """A receiver config with every channel on the sink and short delivery timers."""
    cfg = {
        "auth": {"bearer_token": TOKEN},
        "channels": {n: {"url": sink.url(n)} for n in ("pagerduty", "sms", "slack", "email")},
        "delivery": {
            "poll_interval": "50ms",
            "backoff_initial": "100ms",
            "backoff_max": "200ms",
            "max_age": "1h",
            "timeout": "5s",
        },
        "escalation": {"poll_interval": "100ms"},
    }
    cfg.update(extra)
    return cfg


@dataclass
class Receiver:
    url: str
    app: web.Application
    runner: web.AppRunner
    headers: dict[str, str]

    @property
    def state(self) -> State:
        return self.app[STATE]

    async def post(self, path: str, body: dict | None = None, **kw) -> tuple[int, dict]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.url + path, json=body, headers=kw.get("headers", self.headers)) as r,
        ):
            return r.status, await r.json()

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.url + path, headers=self.headers if headers is None else headers) as r,
        ):
            return r.status, await r.json()

    async def alertmanager_sends(self, body: dict) -> None:
        """POST /alerts as Alertmanager does (its user agent, JSON body, bearer token)."""
        headers = {**self.headers, "User-Agent": "Alertmanager/0.25.0"}
        status, answer = await self.post("/alerts", body, headers=headers)
        assert status == 200, answer

    async def alerts(self) -> dict[str, dict]:
        status, data = await self.get("/api/v1/alerts")
        assert status == 200, data
        return {a["fingerprint"]: a for a in data["alerts"]}

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(self.url + "/metrics") as r:
            return await r.text()


async def start_receiver(
    cfg_dict: dict, db: Path, headers: dict[str, str], clock: Callable[[], float] = time.time
) -> Receiver:
    from receiver import config as config_mod
    from receiver.store.sqlite import SQLiteStore

    cfg = config_mod.from_dict(cfg_dict, "status-test.yml")
    app = build_app(cfg, store=SQLiteStore(str(db), timeout_s=2), clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return Receiver(f"http://127.0.0.1:{port}", app, runner, headers)
