"""Shared helpers of the receiver tests (a unique module name: test dirs have no __init__)."""

from __future__ import annotations

import asyncio
import copy
import email
import email.policy
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

PAYLOADS = Path(__file__).parent / "payloads"
EXE = Path(sys.executable).parent / "tailpage-receiver"
TOKEN = "s3cret-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def payload(name: str) -> dict:
    """A webhook body captured from a real Alertmanager 0.25 (capture_payloads.py)."""
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def one_alert(fp: str, status: str = "firing", severity: str = "critical", **labels) -> dict:
    """A real captured payload narrowed to one alert with the given fingerprint and labels, in a
    group of its own (as Alertmanager sends it when group_by tells the alerts apart)."""
    body = copy.deepcopy(payload("firing" if status == "firing" else "resolved"))
    a = body["alerts"][0]
    a["fingerprint"] = fp
    a["labels"].update(severity=severity, **labels)
    if status == "resolved":
        a["endsAt"] = "2026-01-01T12:10:00Z"
    a["status"] = body["status"] = status
    body["alerts"] = [a]
    body["groupKey"] = f'{{}}:{{fingerprint="{fp}"}}'
    body["commonLabels"] = dict(a["labels"])
    body["commonAnnotations"] = dict(a.get("annotations") or {})
    return body


def gid(body: dict) -> str:
    """The receiver's id of a webhook's group (its PagerDuty dedup key)."""
    return hashlib.sha256(body["groupKey"].encode()).hexdigest()


def store_group(*alerts, key: str | None = None, channels=("slack",), escalation=()):
    """What intake hands the store for one webhook (tests that drive the store directly)."""
    from receiver.store import IncomingGroup

    return IncomingGroup(
        key=key or f"g-{alerts[0].fingerprint}",
        labels={"alertname": alerts[0].labels.get("alertname", "X")},
        group_labels={},
        annotations={},
        severity=alerts[0].severity,
        channels=tuple(channels),
        escalation=tuple(escalation),
        alerts=tuple(alerts),
    )


def store_gid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def group_body(key: str, alerts: list[dict], status: str | None = None) -> dict:
    """A webhook of one Alertmanager group with these alerts (dicts as in a real payload):
    commonLabels/commonAnnotations computed as Alertmanager does."""
    body = copy.deepcopy(payload("firing"))
    common = dict(alerts[0]["labels"])
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    ann = dict(alerts[0].get("annotations") or {})
    for a in alerts[1:]:
        ann = {k: v for k, v in ann.items() if (a.get("annotations") or {}).get(k) == v}
    firing = any(a["status"] == "firing" for a in alerts)
    body.update(
        groupKey=key,
        alerts=alerts,
        commonLabels=common,
        commonAnnotations=ann,
        status=status or ("firing" if firing else "resolved"),
    )
    return body


def alert(fp: str, status: str = "firing", severity: str = "critical", **labels) -> dict:
    """One alert of a webhook body (for group_body)."""
    return {
        "fingerprint": fp,
        "status": status,
        "startsAt": "2026-01-01T12:00:00Z",
        "endsAt": "2026-01-01T12:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph?g0.expr=x",
        "labels": {"alertname": "PodCrash", "namespace": "shop", "severity": severity, **labels},
        "annotations": {"summary": f"{labels.get('pod', fp)} is crashing"},
    }


class Sink:
    """Local HTTP server standing in for Slack / SMS / PagerDuty / email (apprise json:// posts
    here). The status page tests use it too."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict, float]] = []
        self.fail: dict[str, int] = {}  # path -> how many more requests answer 500
        self.delay: dict[str, float] = {}
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.delay.get(name):
            await asyncio.sleep(self.delay[name])
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            return web.Response(status=500, text="stand-in failure")
        self.got.append((name, await request.json(), time.time()))
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
        return [body for n, body, _ in self.got if n == name]


def base_config(sink: Sink, **extra) -> dict:
    """Short timers so the suite stays fast."""
    cfg = {
        "auth": {"bearer_token": TOKEN},
        "channels": {
            "slack": {"url": sink.url("slack")},
            "sms": {"url": sink.url("sms"), "kind": "sms"},
            "pagerduty": {"url": sink.url("pagerduty"), "kind": "pagerduty"},
        },
        "routes": [
            {"match": {"severity": "critical"}, "channels": ["pagerduty", "sms", "slack"]},
            {"match": {"severity": "high"}, "channels": ["slack"]},
        ],
        "delivery": {
            "poll_interval": "50ms",
            "backoff_initial": "100ms",
            "backoff_max": "400ms",
            "max_age": "1h",
            "timeout": "5s",
            "lease": "10s",
        },
        "escalation": {"poll_interval": "100ms"},
    }
    cfg.update(extra)
    return cfg


async def wait_for(
    cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def eventually(check, timeout: float = 10.0) -> None:
    """Await check() until it stops raising AssertionError (state settles after the sink saw it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    cfg_path: Path | None, port: int, cwd: Path, log: Path, *options: str
) -> subprocess.Popen:
    """`tailpage-receiver [options] run [--config cfg_path] --listen 127.0.0.1:port`; output is
    appended to `log` (a file, not a pipe nobody reads: a full pipe would stall the receiver)."""
    cmd = [str(EXE), *options, "run", "--listen", f"127.0.0.1:{port}"]
    if cfg_path is not None:
        cmd += ["--config", str(cfg_path)]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


async def ready(
    port: int, proc: subprocess.Popen, timeout: float = 30, log: Path | None = None
) -> None:
    """Wait for /-/ready; on failure the tail of `log` (the process's output) says why."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(f"http://127.0.0.1:{port}/-/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = f": {log.read_text()[-2000:]}" if log is not None else ""
                raise AssertionError(f"receiver did not start (exit {proc.poll()}){tail}")
            await asyncio.sleep(0.05)


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM and wait: the exit code (0 for a clean shutdown)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Mailbox:
    """An aiosmtpd handler keeping every message received (a real SMTP server on loopback)."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"
