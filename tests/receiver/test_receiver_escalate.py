"""Escalation, acknowledgement and resolution, through the HTTP API and the store."""

from __future__ import annotations

import time

from rcv_helpers import (
    AUTH,
    base_config,
    eventually,
    gid,
    one_alert,
    store_gid,
    store_group,
    wait_for,
)

from receiver.store import IncomingAlert


def esc_config(sink) -> dict:
    cfg = base_config(sink)
    cfg["routes"] = [
        {
            "match": {"severity": "P0"},  # alias of critical
            "channels": ["slack"],
            "escalate": [
                {"after": "300ms", "channels": ["sms"]},
                {"after": "700ms", "channels": ["pagerduty"]},
            ],
        }
    ]
    return cfg


async def test_escalates_until_acknowledged_and_resolve_is_announced_everywhere(receiver, sink):
    client = await receiver(esc_config(sink))
    for fp in ("e1", "e2"):
        assert (await client.post("/alerts", json=one_alert(fp), headers=AUTH)).status == 200
    r = await client.post("/api/v1/alerts/e2/ack", json={"by": "alice"}, headers=AUTH)
    assert r.status == 200 and (await r.json())["by"] == "alice"
    assert (await client.post("/api/v1/alerts/nope/ack", headers=AUTH)).status == 404

    await wait_for(lambda: len(sink.to("pagerduty")) == 1, timeout=5, what="second escalation")
    [sms] = sink.to("sms")
    assert "escalation 1: not acknowledged" in sms["message"]
    [pd] = sink.to("pagerduty")
    assert "(escalation 2: not acknowledged)" in pd["title"] and pd["dedup_key"] == gid(
        one_alert("e1")
    )
    assert len(sink.to("slack")) == 2  # the first notice of both; e2 (acked) never escalated

    alerts = {
        a["fingerprint"]: a
        for a in (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
    }
    assert alerts["e1"]["escalation"]["step"] == 2 and alerts["e1"]["escalation"]["next_at"] is None
    assert alerts["e2"]["acked_by"] == "alice" and alerts["e2"]["escalation"]["step"] == 0

    # Alertmanager resolves e1: announced on every channel that carried its firing notice
    assert (
        await client.post("/alerts", json=one_alert("e1", "resolved"), headers=AUTH)
    ).status == 200
    # e2 will not resolve by itself: manual resolve from the status page
    r = await client.post("/api/v1/alerts/e2/resolve?by=bob", headers=AUTH)
    assert r.status == 200
    await wait_for(lambda: len(sink.to("slack")) == 4, what="resolved notices")
    await wait_for(lambda: len(sink.to("sms")) == 2 and len(sink.to("pagerduty")) == 2)
    resolved_titles = sorted(b["title"] for b in sink.to("slack")[2:])
    assert resolved_titles[0].startswith("[RESOLVED] CriticalError")
    assert any("(resolved by bob)" in t for t in resolved_titles)
    assert sink.to("pagerduty")[1]["event_action"] == "resolve"

    # Alertmanager's own resolve of e2 arrives later: no second announcement
    r = await client.post("/alerts", json=one_alert("e2", "resolved"), headers=AUTH)
    assert await r.json() == {"accepted": 0, "duplicates": 1}
    assert (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"] == []

    hist = await (await client.get("/api/v1/history?since=1h", headers=AUTH)).json()
    by_fp = {a["fingerprint"]: a for a in hist["resolved"]}
    assert by_fp["e2"]["time_to_ack_s"] is not None and by_fp["e2"]["resolved_by"] == "bob"
    assert by_fp["e1"]["time_to_ack_s"] is None and by_fp["e1"]["resolved_by"] == "alertmanager"

    async def counted():
        metrics = await (await client.get("/metrics")).text()
        assert 'tailpage_receiver_escalations_total{step="1"} 1.0' in metrics
        assert 'tailpage_receiver_escalations_total{step="2"} 1.0' in metrics

    await eventually(counted)


def _alert(fp: str, status: str = "firing") -> IncomingAlert:
    return IncomingAlert(
        fingerprint=fp,
        status=status,
        starts_at="2026-01-01T12:00:00Z",
        ends_at=None,
        labels={"alertname": "X", "severity": "critical"},
        annotations={},
        generator_url=None,
        severity="critical",
        channels=(),
    )


def _group(*alerts: IncomingAlert, escalation=((0.2, ("sms",)),)):
    return store_group(*alerts, escalation=escalation)


async def test_timers_and_outbox_survive_a_restart(make_store):
    now = time.time()
    s = make_store()
    await s.open()
    res = await s.ingest(_group(_alert("r1"), _alert("r1")), now)
    assert len(res.accepted) == 1 and len(res.duplicates) == 1 and res.deliveries == 1
    [claimed] = await s.claim_due("w1", now, 10, lease_s=30)
    assert claimed.channel == "slack" and claimed.fingerprint == store_gid("g-r1")
    assert claimed.group is not None and claimed.group["firing"] == 1
    await s.close()  # as if the process died mid-send and restarted

    s = make_store()
    await s.open()
    try:
        assert await s.fire_due_escalations(now + 0.1, 10) == []
        [fired] = await s.fire_due_escalations(now + 0.3, 10)
        assert fired.step == 1 and fired.channels == ("sms",)
        # after the claim's lease at the latest, the unsent row is due again
        due = await s.claim_due("w2", now + 31, 10, lease_s=30)
        assert sorted(d.channel for d in due) == ["slack", "sms"]
        assert await s.queue_depth() == {"slack": 1, "sms": 1}
    finally:
        await s.close()


async def test_resolve_waits_for_its_firing_notice_and_leases_exclude(store):
    now = time.time()
    await store.ingest(_group(_alert("o1"), escalation=()), now)
    await store.ingest(_group(_alert("o1", "resolved")), now)
    [first] = await store.claim_due("w1", now, 10, lease_s=30)
    assert first.kind == "firing"
    assert await store.claim_due("w2", now, 10, lease_s=30) == []  # leased; resolve must wait
    await store.mark_failed(first.id, "boom", now + 5)
    assert await store.claim_due("w2", now + 1, 10, lease_s=30) == []  # still before the resolve
    [again] = await store.claim_due("w2", now + 5, 10, lease_s=30)
    assert again.id == first.id and again.attempts == 1
    await store.mark_sent(again.id, now + 5)
    [resolved] = await store.claim_due("w2", now + 5, 10, lease_s=30)
    assert resolved.kind == "resolved" and resolved.channel == "slack"


async def test_token_bucket_and_digest_in_the_store(store):
    now = time.time()
    assert [await store.take_token("sms", now, 1.0, 2) for _ in range(3)] == [True, True, False]
    assert await store.take_token("sms", now + 1.0, 1.0, 2) is True  # refilled one per second
    for i in range(3):
        await store.ingest(_group(_alert(f"d{i}"), escalation=()), now)
    for d in await store.claim_due("w", now, 10, 30):
        await store.hold(d.id, now)
    assert await store.channels_with_held() == ["slack"]
    digest_id = await store.make_digest("slack", now)
    assert digest_id is not None and await store.channels_with_held() == []
    [digest] = await store.claim_due("w", now, 10, 30)
    assert digest.kind == "digest" and sorted(i["fingerprint"] for i in digest.digest) == sorted(
        store_gid(f"g-d{i}") for i in range(3)
    )
