"""Incident scale: a real Alertmanager sends one group of 3,000 alerts. The receiver stores all
of them and each channel (Slack, SMS, PagerDuty stand-ins, a real SMTP server) gets a handful
of messages, one saying 3000 firing, then one resolve. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from alertmanager import BINARY, alertmanager, post_alerts
from rcv_helpers import AUTH, TOKEN, Mailbox, base_config, free_port, wait_for

from receiver.render import SMS_MAX

N = 3000
CHANNELS = ("pagerduty", "sms", "slack")

STORM_CONFIG = """
route:
  receiver: tailpage
  group_by: [alertname]
  group_wait: 2s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: tailpage
    webhook_configs:
      - url: {url}
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""


def _storm(ends_at: datetime | None = None) -> list[dict]:
    starts = datetime.now(UTC) - timedelta(minutes=5)
    end = (ends_at or datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return [
        {
            "labels": {
                "alertname": "PodCrashLooping",
                "severity": "critical" if i < 3 else "high",
                "namespace": "shop",
                "pod": f"checkout-{i:04d}",
                "instance": f"10.0.{i // 250}.{i % 250}:8080",
            },
            "annotations": {"summary": f"checkout-{i:04d} restarts every 30s"},
            "startsAt": starts.isoformat(),
            "endsAt": end,
        }
        for i in range(N)
    ]


def _text(b: dict) -> str:
    return f"{b['title']}\n{b['message']}"


@pytest.mark.slow
@pytest.mark.skipif(BINARY is None, reason="prometheus-alertmanager not installed")
async def test_alertmanager_group_of_3000_is_a_handful_of_messages(receiver, sink):
    box = Mailbox()
    port = free_port()
    smtp = Controller(box, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        cfg = base_config(sink, max_body_bytes=64 * 1024 * 1024)
        cfg["channels"]["email"] = {
            "url": f"mailto://127.0.0.1:{port}?from=tailpage@example.com&to=oncall@example.com"
        }
        cfg["routes"][0]["channels"].append("email")
        client = await receiver(cfg)
        url = str(client.make_url("/alerts"))
        with alertmanager(url, TOKEN, STORM_CONFIG) as am:
            t0 = time.monotonic()
            await asyncio.to_thread(post_alerts, am, _storm())

            def says_all() -> bool:
                return all(
                    any(f"{N} firing" in _text(b) for b in sink.to(ch)) for ch in CHANNELS
                ) and any(f"{N} firing" in m["Subject"] for m in box.messages)

            await wait_for(says_all, timeout=60, what=f"a message saying {N} firing")
            to_all = time.monotonic() - t0
            body = await (await client.get("/api/v1/alerts", headers=AUTH)).json()
            assert len(body["alerts"]) == N  # stored whole
            [group] = body["groups"]
            assert group["firing"] == N and group["severity"] == "critical"

            await asyncio.to_thread(post_alerts, am, _storm(ends_at=datetime.now(UTC)))

            def resolved() -> bool:
                return all(
                    sink.to(ch) and "[RESOLVED]" in _text(sink.to(ch)[-1]) for ch in CHANNELS
                ) and bool(box.messages and "[RESOLVED]" in box.messages[-1]["Subject"])

            await wait_for(resolved, timeout=60, what="the resolve on every channel")
            await asyncio.sleep(1)  # nothing more may follow
    finally:
        smtp.stop()
    counts = {ch: len(sink.to(ch)) for ch in CHANNELS} | {"email": len(box.messages)}
    print(f"\n{N}-alert group: messages per channel {counts}; {to_all:.1f} s from the POST to")
    print(f"Alertmanager to '{N} firing' on every channel (group_wait 2s included)")
    print("slack titles:", [b["title"] for b in sink.to("slack")])
    assert all(2 <= n <= 6 for n in counts.values()), counts  # a handful, not 3,000
    slack = next(b for b in sink.to("slack") if f"{N} firing" in b["title"])
    assert slack["title"].startswith(f"[CRITICAL] PodCrashLooping — shop: {N} firing")
    # the most severe first, told apart by what differs; the rest summarised
    assert "3000 firing (3 critical, 2997 high)" in slack["message"]
    assert "pod=checkout-0000" in slack["message"] and "instance=10.0.0.0:8080" in slack["message"]
    assert f"and {N - 5} more" in slack["message"]
    assert all(len(b["message"]) <= SMS_MAX for b in sink.to("sms"))
    pd = sink.to("pagerduty")
    assert len({p["dedup_key"] for p in pd}) == 1 and pd[-1]["event_action"] == "resolve"
    assert box.messages[-1]["Subject"].startswith("[RESOLVED] PodCrashLooping — shop")
