"""`tailpage-receiver run` for real: kill -9 mid-burst loses nothing; Alertmanager end to end."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest
import yaml
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
