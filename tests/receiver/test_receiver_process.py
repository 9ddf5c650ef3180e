"""`tailpage-receiver run` for real: kill -9 mid-burst loses nothing; Alertmanager end to end."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from alertmanager import BINARY, alertmanager, post_alerts, sample_alerts
from rcv_helpers import (
    AUTH,
    TOKEN,
    base_config,
    free_port,
    one_alert,
    ready,
    start,
    stop,
    wait_for,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from receiver_big_webhook import big_webhook  # one definition of "a typical alert"


@pytest.mark.slow
async def test_kill_9_mid_burst_then_restart_delivers_every_accepted_alert(sink, tmp_path):
    """SQLite (the embedded default); the PostgreSQL suite kills replicas its own way."""
    cfg = base_config(sink, store=f"sqlite:///{tmp_path}/r.db")
    cfg["routes"] = [{"channels": ["slack"]}]
    sink.delay["slack"] = 0.05  # a channel slower than the burst: rows are pending at the kill
    cfg_path = tmp_path / "receiver.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = start(cfg_path, port, tmp_path, tmp_path / "run.log")
    accepted: set[str] = set()
    try:
        await ready(port, proc)
        url = f"http://127.0.0.1:{port}/alerts"

        async def post(session: aiohttp.ClientSession, i: int) -> None:
            fp = f"k{i:04d}"
            try:
                async with session.post(url, json=one_alert(fp), headers=AUTH) as r:
                    if r.status == 200:
                        accepted.add(fp)
            except (TimeoutError, aiohttp.ClientError):
                pass  # the process died under us: not accepted, Alertmanager would retry

        async def killer() -> None:
            while len(accepted) < 150:
                await asyncio.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            k = asyncio.create_task(killer())
            sem = asyncio.Semaphore(16)

            async def bounded(i: int) -> None:
                async with sem:
                    if proc.poll() is None:
                        await post(session, i)

            await asyncio.gather(*(bounded(i) for i in range(600)))
            await asyncio.wait_for(k, 10)
        proc.wait(5)
        assert proc.returncode == -signal.SIGKILL
        delivered_before = {b["message"].rsplit("fingerprint ", 1)[1] for b in sink.to("slack")}
        assert 150 <= len(accepted) < 600, len(accepted)
        assert len(delivered_before) < len(accepted), "kill came too late to test anything"

        proc = start(cfg_path, port, tmp_path, tmp_path / "run.log")
        await ready(port, proc)

        def delivered() -> set[str]:
            return {b["message"].rsplit("fingerprint ", 1)[1] for b in sink.to("slack")}

        await wait_for(lambda: accepted <= delivered(), timeout=30, what="every accepted alert")
    finally:
        stop(proc)
    assert accepted <= delivered()


@pytest.mark.slow
@pytest.mark.skipif(BINARY is None, reason="prometheus-alertmanager not installed")
async def test_real_alertmanager_to_receiver_to_channels(sink, tmp_path):
    cfg = base_config(sink, store=f"sqlite:///{tmp_path}/r.db")
    cfg_path = tmp_path / "receiver.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = start(cfg_path, port, tmp_path, tmp_path / "run.log")
    try:
        await ready(port, proc)
        with alertmanager(f"http://127.0.0.1:{port}/alerts", TOKEN) as am:
            await asyncio.to_thread(post_alerts, am, sample_alerts())
            await wait_for(lambda: len(sink.to("pagerduty")) >= 1, timeout=20, what="firing page")
            from datetime import UTC, datetime

            await asyncio.to_thread(post_alerts, am, sample_alerts(ends_at=datetime.now(UTC)))
            await wait_for(
                lambda: all(
                    sink.to(c)
                    and "[RESOLVED]" in sink.to(c)[-1]["title"] + sink.to(c)[-1]["message"]
                    for c in ("pagerduty", "sms", "slack")
                ),
                timeout=20,
                what="resolved notices on every channel",
            )
    finally:
        stop(proc)
    out = (tmp_path / "run.log").read_text()
    # group_by [alertname]: one group, one incident; the two alerts may come in one webhook or
    # in two (then the second is an update of the same group)
    pd = sink.to("pagerduty")
    assert [p["event_action"] for p in pd][-1] == "resolve"
    assert set(p["event_action"] for p in pd[:-1]) == {"trigger"} and len(pd) <= 3
    assert len({p["dedup_key"] for p in pd}) == 1  # one dedup key for the group
    assert len(sink.to("slack")) == len(pd) and len(sink.to("sms")) == len(pd)
    assert proc.returncode == 0, out
    assert TOKEN not in out and f"127.0.0.1:{sink.port}" not in out


class SlowChannel:
    """A local HTTP stand-in for a slow chat service (apprise json:// posts here): it records
    when each request arrives and answers 200 only after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived: list[str] = []
        self.answered: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        fp = (await request.json())["message"].rsplit("fingerprint ", 1)[1]
        self.arrived.append(fp)
        await asyncio.sleep(self.delay)
        self.answered.append(fp)
        return web.Response(text="ok")

    async def __aenter__(self) -> SlowChannel:
        app = web.Application()
        app.router.add_post("/slow", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def outbox_states(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        return [r[0] for r in c.execute("SELECT state FROM outbox ORDER BY id")]


SIGNALS = {
    "TERM": [signal.SIGTERM],
    "INT": [signal.SIGINT],
    "INT+TERM": [signal.SIGINT, signal.SIGTERM],  # what Ctrl-C in `make run` sends
    "TERMx3": [signal.SIGTERM] * 3,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signals", "grace", "outcome"),
    [
        ("TERM", "10s", "delivered"),
        ("INT", "10s", "delivered"),
        ("INT+TERM", "10s", "delivered"),
        ("TERMx3", "500ms", "outbox"),
    ],
)
async def test_signals_stop_cleanly_and_keep_the_in_flight_notification(
    tmp_path, signals, grace, outcome
):
    """A notification is in flight to a slow channel when the signals arrive: exit status 0, no
    traceback, and the notification was either delivered (the grace covers the channel's delay)
    or is still in the outbox and goes out after the restart (the grace is shorter)."""
    db = tmp_path / "r.db"
    async with SlowChannel(delay=1.5) as channel:
        cfg = {
            "store": f"sqlite:///{db}",
            "auth": {"bearer_token": TOKEN},
            "channels": {"slack": {"url": f"json://127.0.0.1:{channel.port}/slow"}},
            "routes": [{"channels": ["slack"]}],
            "delivery": {"poll_interval": "50ms", "timeout": "30s"},
            "shutdown_grace": grace,
        }
        cfg_path = tmp_path / "receiver.yml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        port, log = free_port(), tmp_path / "run.log"
        proc = start(cfg_path, port, tmp_path, log)
        try:
            await ready(port, proc, log=log)
            url = f"http://127.0.0.1:{port}/alerts"
            async with (
                aiohttp.ClientSession() as s,
                s.post(url, json=one_alert("fly1"), headers=AUTH) as r,
            ):
                assert r.status == 200
            await wait_for(lambda: channel.arrived == ["fly1"], what="the send to start")
            for sig in SIGNALS[signals]:
                proc.send_signal(sig)
                await asyncio.sleep(0.05)
            rc = await asyncio.to_thread(proc.wait, 30)
        finally:
            stop(proc)
        out = log.read_text()
        assert rc == 0, out
        assert "Traceback" not in out, out
        assert "stopping" in out and "stopped" in out
        if outcome == "delivered":
            assert channel.answered == ["fly1"]
            assert outbox_states(db) == ["sent"]
            return
        assert outbox_states(db) == ["sending"], out  # claimed, not finished: kept
        assert "stay in the outbox" in out
        channel.delay = 0
        proc = start(cfg_path, port, tmp_path, log)
        try:
            await ready(port, proc, log=log)
            await wait_for(lambda: outbox_states(db) == ["sent"], what="delivery after restart")
        finally:
            assert stop(proc) == 0
        assert channel.arrived.count("fly1") >= 2  # sent again: at least once, never lost


@pytest.mark.slow
async def test_a_10000_alert_group_is_accepted_whole_with_the_default_config(tmp_path):
    """Issue 14: one Alertmanager group of 10,000 alerts (~11 MB, `group_by: [alertname]`) is
    one webhook; a 413 would never be retried and nobody would be paged. Embedded defaults (no
    --config): accepted in one request and stored whole; past the limit it is still a 413 with
    the reason, also when a small gzip body inflates past it."""
    body = json.dumps(big_webhook(10_000)).encode()
    assert 10 * 2**20 < len(body) < 64 * 2**20
    port, log = free_port(), tmp_path / "run.log"
    proc = start(None, port, tmp_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        await ready(port, proc, log=log)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            headers = {"Content-Type": "application/json"}
            async with s.post(f"{base}/alerts", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert await r.json() == {"accepted": 10_000, "duplicates": 0}
            async with s.get(f"{base}/api/v1/alerts") as r:
                stored = (await r.json())["alerts"]
            assert len(stored) == 10_000
            assert {a["fingerprint"] for a in stored} == {
                a["fingerprint"] for a in json.loads(body)["alerts"]
            }

            over = b"[" + b" " * (64 * 2**20) + b"]"  # one byte past 64 MiB: only the size is wrong
            async with s.post(f"{base}/alerts", data=over, headers=headers) as r:
                assert r.status == 413
                assert "larger than 67108864 bytes" in (await r.json())["error"]
            bomb = gzip.compress(b" " * (65 * 2**20))  # ~65 KB that inflates to 65 MiB
            gz = {**headers, "Content-Encoding": "gzip"}
            async with s.post(f"{base}/alerts", data=bomb, headers=gz) as r:
                assert r.status == 413
                assert "larger than 67108864 bytes decoded" in (await r.json())["error"]
            async with s.get(f"{base}/metrics") as r:
                metrics = await r.text()
        assert 'tailpage_receiver_webhooks_rejected_total{reason="too_large"} 2.0' in metrics
    finally:
        assert stop(proc) == 0
