"""Helpers of the status page tests (a unique module name: test dirs have no __init__).
The Sink and the captured payloads come from ../receiver/rcv_helpers.py (conftest puts it on
sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from rcv_helpers import Sink, payload

from receiver import config as config_mod
from receiver.app import build_app
from receiver.store.sqlite import SQLiteStore

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "status"
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


def iso(ago_s: float) -> str:
    return datetime.fromtimestamp(time.time() - ago_s, UTC).isoformat().replace("+00:00", "Z")


def webhook(*alerts: dict, status: str = "firing") -> dict:
    """A webhook body shaped exactly like the captured one, carrying the given alerts."""
    body = payload("firing" if status == "firing" else "resolved")
    body["alerts"] = list(alerts)
    body["status"] = status
    return body


def redated(name: str, started_ago_s: float) -> dict:
    """A captured webhook as it was sent, with startsAt moved to a recent time."""
    body = payload(name)
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
    a = payload("firing")["alerts"][1]
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
    runner: web.AppRunner
    headers: dict[str, str]

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.url + path, headers=self.headers if headers is None else headers) as r,
        ):
            return r.status, await r.json()

    async def alertmanager_sends(self, body: dict) -> None:
        """POST /alerts as Alertmanager does (its user agent, JSON body, bearer token), as if
        its route grouped by every label: one webhook, one group per alert, so each row of the
        board has notices of its own (the group model: docs/receiver-groups.md)."""
        headers = {**self.headers, "User-Agent": "Alertmanager/0.25.0"}
        for a in body["alerts"]:
            one = {
                **body,
                "alerts": [a],
                "status": a["status"],
                "groupKey": f'{{}}:{{fingerprint="{a["fingerprint"]}"}}',
                "commonLabels": a["labels"],
                "commonAnnotations": a.get("annotations") or {},
            }
            async with (
                aiohttp.ClientSession() as s,
                s.post(self.url + "/alerts", json=one, headers=headers) as r,
            ):
                assert r.status == 200, await r.text()

    async def sends_group(self, body: dict) -> None:
        """POST /alerts one webhook as it is: one Alertmanager group of all its alerts."""
        async with (
            aiohttp.ClientSession() as s,
            s.post(self.url + "/alerts", json=body, headers=self.headers) as r,
        ):
            assert r.status == 200, await r.text()

    async def alerts(self) -> dict[str, dict]:
        status, data = await self.get("/api/v1/alerts")
        assert status == 200, data
        return {a["fingerprint"]: a for a in data["alerts"]}


async def start_receiver(
    cfg_dict: dict, db: Path, headers: dict[str, str], clock: Callable[[], float] = time.time
) -> Receiver:
    cfg = config_mod.from_dict(cfg_dict, "status-test.yml")
    app = build_app(cfg, store=SQLiteStore(str(db), timeout_s=2), clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return Receiver(f"http://127.0.0.1:{port}", runner, headers)
