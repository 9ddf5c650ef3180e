"""The Alertmanager group is the unit of notification (docs/receiver-groups.md): one message
per channel when a group fires, an update only when it changes, one when it resolves; acks and
escalation per group. Every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio

from rcv_helpers import (
    AUTH,
    alert,
    base_config,
    eventually,
    gid,
    group_body,
    store_group,
    wait_for,
)

from receiver.deliver import Deliverer
from receiver.state import STATE
from receiver.store import IncomingAlert

CHANNELS = ("pagerduty", "sms", "slack")


def _text(b: dict) -> str:
    return f"{b['title']}\n{b['message']}".strip()


async def _settle(sink, counts: dict[str, int], what: str) -> None:
    """Wait for exactly these message counts, then make sure no more arrive."""
    await wait_for(lambda: all(len(sink.to(c)) >= n for c, n in counts.items()), what=what)
    await asyncio.sleep(0.4)  # several poll intervals: a stray extra message would show
    assert {c: len(sink.to(c)) for c in counts} == counts, what


async def test_group_fires_grows_partly_resolves_and_resolves(receiver, sink):
    client = await receiver(base_config(sink))
    key = '{}/{severity="critical"}:{alertname="PodCrash"}'
    a1 = alert("a1", pod="web-1")
    r = await client.post("/alerts", json=group_body(key, [a1]), headers=AUTH)
    assert await r.json() == {"accepted": 1, "duplicates": 0}
    await _settle(sink, dict.fromkeys(CHANNELS, 1), "the first notice")
    [slack] = sink.to("slack")
    assert slack["title"] == "[CRITICAL] PodCrash — shop"  # a group of one reads like its alert

    # group_interval / repeat_interval resend of the unchanged group: a duplicate
    r = await client.post("/alerts", json=group_body(key, [a1]), headers=AUTH)
    assert await r.json() == {"accepted": 0, "duplicates": 1}

    # two alerts join: one update per channel naming what differs (the pod)
    grown = [a1, alert("a2", pod="web-2"), alert("a3", pod="web-3", severity="high")]
    r = await client.post("/alerts", json=group_body(key, grown), headers=AUTH)
    assert await r.json() == {"accepted": 2, "duplicates": 1}
    await _settle(sink, dict.fromkeys(CHANNELS, 2), "the update")
    update = sink.to("slack")[1]
    assert update["title"] == "[CRITICAL] PodCrash — shop: 3 firing (+2 new)"
    assert "3 firing (2 critical, 1 high)" in update["message"]
    for pod in ("web-1", "web-2", "web-3"):
        assert f"pod={pod}" in update["message"]
    # the same full list again (next group_interval): nothing changed, nothing sent
    r = await client.post("/alerts", json=group_body(key, grown), headers=AUTH)
    assert await r.json() == {"accepted": 0, "duplicates": 3}

    # web-2 resolves: the update names it
    part = [a1, alert("a2", "resolved", pod="web-2"), grown[2]]
    r = await client.post("/alerts", json=group_body(key, part), headers=AUTH)
    assert await r.json() == {"accepted": 1, "duplicates": 2}
    await _settle(sink, dict.fromkeys(CHANNELS, 3), "the partial resolve")
    update = sink.to("slack")[2]
    assert update["title"] == "[CRITICAL] PodCrash — shop: 2 firing (1 resolved)"
    assert "Resolved: 1" in update["message"] and "✓ [CRITICAL] pod=web-2" in update["message"]
    sms = sink.to("sms")[2]["message"]
    assert sms.startswith("[CRITICAL] PodCrash - shop: 2 firing (1 resolved)") and len(sms) <= 160

    # the whole group resolves: one message per channel
    done = [alert(fp, "resolved", pod=f"web-{fp[1]}") for fp in ("a1", "a2", "a3")]
    done[2]["labels"]["severity"] = "high"
    r = await client.post("/alerts", json=group_body(key, done), headers=AUTH)
    assert await r.json() == {"accepted": 2, "duplicates": 1}
    await _settle(sink, dict.fromkeys(CHANNELS, 4), "the resolve")
    for ch in CHANNELS:
        assert _text(sink.to(ch)[3]).startswith("[RESOLVED] PodCrash")
    # PagerDuty: one incident, one dedup key (Alertmanager's own: sha256 of the group key)
    pd = sink.to("pagerduty")
    assert {p["dedup_key"] for p in pd} == {gid({"groupKey": key})}
    assert [p["event_action"] for p in pd] == ["trigger", "trigger", "trigger", "resolve"]

    body = await (await client.get("/api/v1/alerts", headers=AUTH)).json()
    assert body["alerts"] == [] and body["groups"] == []
    hist = await (await client.get("/api/v1/history?since=1h", headers=AUTH)).json()
    assert sorted(a["fingerprint"] for a in hist["resolved"]) == ["a1", "a2", "a3"]


def _esc_config(sink) -> dict:
    cfg = base_config(sink)
    cfg["routes"] = [
        {
            "match": {"severity": "critical"},
            "channels": ["slack"],
            "escalate": [{"after": "1s", "channels": ["sms"]}],
        }
    ]
    return cfg


async def test_ack_and_escalation_per_group_single_alert_ack_and_resolve(receiver, sink):
    client = await receiver(_esc_config(sink))
    groups = {
        name: group_body(
            f'{{}}:{{alertname="{name}"}}',
            [alert(f"{name}-{i}", alertname=name, pod=f"p{i}") for i in range(n)],
        )
        for name, n in (("G1", 3), ("G2", 2), ("G3", 2))
    }
    for body in groups.values():
        assert (await client.post("/alerts", json=body, headers=AUTH)).status == 200
    await _settle(sink, {"slack": 3, "sms": 0}, "one notice per group")

    # G1 acknowledged as a group: each of its alerts shows who
    r = await client.post(f"/api/v1/groups/{gid(groups['G1'])}/ack?by=alice", headers=AUTH)
    assert r.status == 200 and (await r.json())["by"] == "alice"
    # G3: both alerts acknowledged one by one (the first leaves the group escalating)
    assert (await client.post("/api/v1/alerts/G3-0/ack?by=bob", headers=AUTH)).status == 200
    body = await (await client.get("/api/v1/groups", headers=AUTH)).json()
    g3 = next(g for g in body["groups"] if g["id"] == gid(groups["G3"]))
    assert g3["acked_by"] is None and g3["escalation"]["next_at"] is not None
    assert (await client.post("/api/v1/alerts/G3-1/ack?by=bob", headers=AUTH)).status == 200
    assert (await client.post("/api/v1/groups/nope/ack", headers=AUTH)).status == 404

    alerts = {
        a["fingerprint"]: a
        for a in (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
    }
    assert {alerts[f"G1-{i}"]["acked_by"] for i in range(3)} == {"alice"}
    assert {alerts[f"G3-{i}"]["acked_by"] for i in range(2)} == {"bob"}
    assert {alerts[f"G2-{i}"]["acked_by"] for i in range(2)} == {None}
    assert alerts["G1-0"]["group"] == gid(groups["G1"])

    # only G2 (nobody acknowledged it) escalates, once for the group, not per alert
    await _settle(sink, {"slack": 3, "sms": 1}, "G2's escalation")
    [sms] = sink.to("sms")
    assert "G2" in sms["message"] and "escalation 1" in sms["message"]

    # one alert of G2 resolved by hand: an update to every channel that heard of G2
    assert (await client.post("/api/v1/alerts/G2-0/resolve?by=carol", headers=AUTH)).status == 200
    await _settle(sink, {"slack": 4, "sms": 2}, "the update")
    assert "(1 resolved)" in sink.to("slack")[3]["title"]
    # the rest of G2 resolved as a group: one resolve per channel, naming who
    r = await client.post(f"/api/v1/groups/{gid(groups['G2'])}/resolve?by=dave", headers=AUTH)
    assert r.status == 200
    await _settle(sink, {"slack": 5, "sms": 3}, "the resolve")
    assert sink.to("slack")[4]["title"] == "[RESOLVED] G2 — shop (resolved by dave)"
    r = await client.post(f"/api/v1/groups/{gid(groups['G2'])}/resolve", headers=AUTH)
    assert r.status == 404  # no longer firing

    async def g2_gone():
        body = await (await client.get("/api/v1/groups", headers=AUTH)).json()
        assert {g["id"] for g in body["groups"]} == {gid(groups["G1"]), gid(groups["G3"])}
        assert all(g["acked_by"] for g in body["groups"])

    await eventually(g2_gone)


async def test_migration_keeps_an_existing_database_working(make_store, backend, monkeypatch):
    """A database of the previous schema (per-alert notices), with a firing alert whose notice
    is still pending: after the upgrade the notice goes out as it was, the alert resolves with
    one announcement, and new webhooks are handled per group."""
    from receiver.store import postgresql, sqlite

    module = sqlite if backend == "sqlite" else postgresql
    old = make_store()
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:1])  # the schema before groups
    await old.open()

    async def stmt(sql: str) -> None:  # the rows a receiver of the previous version wrote
        if backend == "sqlite":
            old._conn.execute(sql)
            return
        async with old._pool.connection() as c:
            await c.execute(sql)

    await stmt(
        "INSERT INTO events(fingerprint, status, starts_at, labels, annotations, severity, "
        "source, received_at) VALUES ('legacy1', 'firing', '2026-01-01T12:00:00Z', "
        '\'{"alertname": "Old", "severity": "critical"}\', \'{"summary": "old one"}\', '
        "'critical', 'webhook', 1)"
    )
    await stmt(
        "INSERT INTO alerts(fingerprint, status, severity, labels, annotations, starts_at, "
        "firing_event_id, first_notified_at, updated_at) VALUES ('legacy1', 'firing', "
        '\'critical\', \'{"alertname": "Old", "severity": "critical"}\', \'{}\', '
        "'2026-01-01T12:00:00Z', (SELECT id FROM events), 1, 1)"
    )
    await stmt(
        "INSERT INTO outbox(event_id, fingerprint, channel, kind, created_at, next_attempt_at) "
        "VALUES ((SELECT id FROM events), 'legacy1', 'slack', 'firing', 1, 1)"
    )
    await old.close()
    monkeypatch.undo()

    s = make_store()
    await s.open()  # migration 2 on the existing database
    try:
        [legacy] = await s.claim_due("w", 2.0, 10, 30)
        assert legacy.fingerprint == "legacy1" and legacy.group is None
        assert legacy.labels["alertname"] == "Old"
        await s.mark_sent(legacy.id, 2.0)
        [a] = await s.active_alerts()
        assert a["fingerprint"] == "legacy1" and a["group"] is None
        # Alertmanager's resolve of it now comes as a group: announced once
        gone = IncomingAlert(
            fingerprint="legacy1",
            status="resolved",
            starts_at="2026-01-01T12:00:00Z",
            ends_at=None,
            labels={"alertname": "Old", "severity": "critical"},
            annotations={},
            generator_url=None,
            severity="critical",
            channels=(),
        )
        res = await s.ingest(store_group(gone, key="old-group"), 3.0)
        assert len(res.accepted) == 1 and res.deliveries == 1
        [resolved] = await s.claim_due("w", 3.0, 10, 30)
        assert resolved.kind == "resolved" and resolved.channel == "slack"
        assert await s.active_alerts() == []
    finally:
        await s.close()


async def test_a_channel_that_was_down_gets_the_newest_state_once(receiver, sink):
    """Slack fails while the group grows three times: its pending notice is refreshed, not
    queued again, so when Slack is back it gets ONE message with the newest count. Delivery is
    driven tick by tick so the order of events is the test's, not the scheduler's."""
    sink.fail["slack"] = 10**6
    client = await receiver(base_config(sink), workers=False)
    state = client.app[STATE]
    deliver = Deliverer(state.cfg, state.store, state.metrics, state.wake)
    key = '{}:{alertname="PodCrash"}'
    alerts: list[dict] = []

    async def grow(step: int) -> None:
        alerts.extend(alert(f"c{step}{i}", pod=f"web-{step}{i}") for i in range(3))
        r = await client.post("/alerts", json=group_body(key, alerts), headers=AUTH)
        assert (await r.json())["accepted"] == 3

    await grow(0)
    await deliver.tick("t")  # pagerduty and sms sent; slack failed, to be retried
    assert len(sink.to("sms")) == 1 and sink.fail["slack"] < 10**6
    for step in (1, 2, 3):
        await grow(step)
    sink.fail["slack"] = 0
    await asyncio.sleep(0.5)  # past the retry backoff
    while await deliver.tick("t"):
        pass
    [slack] = sink.to("slack")  # the first notice, refreshed: one message, the newest count
    assert slack["title"] == "[CRITICAL] PodCrash — shop: 12 firing"
    # sms got the first notice, then the three changes folded into one update
    assert len(sink.to("sms")) == 2
    assert sink.to("sms")[1]["message"].startswith("[CRITICAL] PodCrash - shop: 12 firing (+9 new)")
