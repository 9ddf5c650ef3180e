"""Heartbeats (dead man's switch): a real receiver app on loopback, on both stores, with a fake
clock driving the heartbeat timer while delivery and the timer loops run for real."""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources

import fastjsonschema
import pytest
from rcv_helpers import (
    AUTH,
    alert,
    base_config,
    eventually,
    group_body,
    one_alert,
    store_gid,
    wait_for,
)

from receiver import config as config_mod
from receiver import heartbeat
from receiver.app import build_app
from receiver.state import STATE

PERIOD, GRACE = 60.0, 30.0  # fake seconds: realistic values, no waiting
GROUP_KEY = 'tailpage-heartbeat:{heartbeat="alertmanager"}'  # HeartbeatMissing's own group


class Clock:
    """The receiver's clock, moved by the test."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def hb_config(sink, **hb) -> dict:
    cfg = base_config(sink)
    cfg["heartbeats"] = [{"name": "alertmanager", "period": "60s", "grace": "30s", **hb}]
    return cfg


def watchdog(fp: str = "wd00000000000001", status: str = "firing") -> dict:
    return one_alert(fp, status, severity="none", alertname="Watchdog")


@pytest.fixture
def start_app(aiohttp_client, make_store):
    """start(cfg, clock) -> client of a receiver app with every background loop running."""

    async def start(cfg: dict, clock: Clock):
        app = build_app(config_mod.from_dict(cfg, "test.yml"), store=make_store(), clock=clock)
        return await aiohttp_client(app)

    return start


async def post(client, body: dict) -> dict:
    r = await client.post("/alerts", json=body, headers=AUTH)
    assert r.status == 200, await r.text()
    return await r.json()


async def metric(client, name: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f'{name}{{heartbeat="alertmanager"}} '):
            return float(line.split()[-1])
    return None


async def settle(client, seconds: float = 0.5) -> None:
    """Let the timer loop (poll 100 ms) and the delivery workers run a few rounds."""
    await asyncio.sleep(seconds)


async def drained(client) -> None:
    store = client.app[STATE].store

    async def empty():
        assert await store.queue_depth() == {}

    await eventually(empty)


async def groups(client) -> list[dict]:
    return (await (await client.get("/api/v1/groups", headers=AUTH)).json())["groups"]


def missing_notes(sink, channel: str) -> list[dict]:
    return [b for b in sink.to(channel) if "HeartbeatMissing" in b["title"] + b["message"]]


async def test_missing_pings_page_through_the_routes_and_resume_resolves(start_app, sink):
    clock = Clock()
    t0 = clock.t
    client = await start_app(hb_config(sink), clock)

    # not armed: no ping ever, nothing raised however long we wait
    clock.t += 10 * (PERIOD + GRACE)
    await settle(client)
    assert sink.got == []

    # the ping: stored nowhere as an alert, routed nowhere; a re-sent copy is a ping too
    assert await post(client, watchdog()) == {"accepted": 0, "duplicates": 0}
    first = clock.t
    clock.t += 50
    assert await post(client, watchdog()) == {"accepted": 0, "duplicates": 0}
    last = clock.t
    assert await metric(client, "tailpage_receiver_heartbeat_last_ping_timestamp_seconds") == last
    alerts = await (await client.get("/api/v1/alerts", headers=AUTH)).json()
    assert alerts["alerts"] == []
    assert first > t0

    clock.t = last + PERIOD + GRACE - 1  # due, not yet overdue
    await settle(client)
    assert sink.got == []
    assert await metric(client, "tailpage_receiver_heartbeat_missing") == 0

    clock.t = last + PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.got) == 3, what="HeartbeatMissing on the critical route")
    for ch in ("pagerduty", "sms", "slack"):
        [note] = missing_notes(sink, ch)
    assert "No heartbeat alertmanager for 1m30s" in note["message"]
    assert "heartbeat=alertmanager" in note["message"]
    assert missing_notes(sink, "slack")[0]["title"] == "[CRITICAL] HeartbeatMissing"
    [active] = (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
    assert active["labels"] == {
        "alertname": "HeartbeatMissing",
        "heartbeat": "alertmanager",
        "severity": "critical",
    }
    assert await metric(client, "tailpage_receiver_heartbeat_missing") == 1
    # a group of one, under its own groupKey: its id is the PagerDuty dedup key
    [group] = await groups(client)
    assert (group["id"], group["group_key"]) == (store_gid(GROUP_KEY), GROUP_KEY)
    assert group["firing"] == 1 and active["group"] == group["id"]
    assert sorted(group["channels"]) == ["pagerduty", "slack", "sms"]
    assert f"fingerprint {active['fingerprint']}" in missing_notes(sink, "slack")[0]["message"]

    # it stays one page: later ticks do not raise it again, and the on-call person can ack it
    await drained(client)  # before the clock jumps past the delivery lease
    clock.t += 3600
    await settle(client)
    assert len(sink.got) == 3
    r = await client.post(f"/api/v1/alerts/{active['fingerprint']}/ack", headers=AUTH)
    assert r.status == 200

    # pings resume: resolved on every channel that carried the page
    await post(client, watchdog())
    await wait_for(lambda: len(sink.got) == 6, what="the resolve")
    assert all(
        (b["title"] or b["message"]).startswith("[RESOLVED] HeartbeatMissing")
        for _, b, _ in sink.got[3:]
    )
    assert await metric(client, "tailpage_receiver_heartbeat_missing") == 0

    async def no_active():
        got = await (await client.get("/api/v1/alerts", headers=AUTH)).json()
        assert got["alerts"] == []

    await eventually(no_active)
    assert await groups(client) == []

    # missing again: a new episode, paged again
    await drained(client)
    clock.t += PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.got) == 9, what="the second episode")
    assert len(missing_notes(sink, "sms")) == 3


async def test_watchdog_is_consumed_other_alerts_of_the_webhook_are_not(start_app, sink):
    clock = Clock()
    client = await start_app(hb_config(sink, labels={"severity": "high", "team": "infra"}), clock)
    # a resolved Watchdog is consumed too but is no ping: it does not arm the heartbeat. It
    # shares an Alertmanager group (group_by: [namespace]) with another alert, so the webhook's
    # commonLabels are those of both; the receiver's group is named and routed by the other alone
    key = '{}:{namespace="shop"}'
    wd = alert("wd00000000000001", "resolved", severity="none", alertname="Watchdog")
    body = group_body(key, [wd, alert("real000000000001", severity="high")])
    body["groupLabels"] = {"namespace": "shop"}
    assert body["commonLabels"] == {"namespace": "shop"}
    assert await post(client, body) == {"accepted": 1, "duplicates": 0}
    await wait_for(lambda: len(sink.got) == 1, what="the other alert")
    assert sink.got[0][0] == "slack" and "Watchdog" not in json.dumps(sink.got[0][1])
    assert sink.got[0][1]["title"] == "[HIGH] PodCrash — shop"
    await drained(client)
    clock.t += 10 * (PERIOD + GRACE)
    await settle(client)
    assert len(sink.got) == 1

    # the group's full list again (Alertmanager sends it whole), now with the watchdog firing
    wd = alert("wd00000000000001", severity="none", alertname="Watchdog")
    more = [alert("real000000000001", severity="high"), alert("real2", severity="high", pod="p2")]
    body = group_body(key, [wd, *more])
    body["groupLabels"] = {"namespace": "shop"}
    assert await post(client, body) == {"accepted": 1, "duplicates": 1}
    await wait_for(lambda: len(sink.got) == 2, what="the update of the group")
    assert "Watchdog" not in json.dumps(sink.got[1][1])
    [shop] = await groups(client)
    assert shop["labels"] == {"alertname": "PodCrash", "namespace": "shop", "severity": "high"}
    await drained(client)
    # the page's labels come from the config (severity high routes to slack only)
    clock.t += PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.got) == 3, what="HeartbeatMissing on the high route")
    name, note, _ = sink.got[2]
    assert name == "slack" and note["title"] == "[HIGH] HeartbeatMissing"
    assert "team=infra" in note["message"]
    assert {g["group_key"] for g in await groups(client)} == {key, GROUP_KEY}
    await settle(client)
    assert len(sink.got) == 3


async def test_restart_keeps_state_and_a_receiver_that_was_down_does_not_page(start_app, sink):
    clock = Clock()
    client = await start_app(hb_config(sink), clock)
    await post(client, watchdog())
    await client.close()  # the receiver stops ...

    clock.t += 3600  # ... for an hour: Alertmanager could not deliver any ping meanwhile
    started = clock.t
    client = await start_app(hb_config(sink), clock)
    clock.t = started + PERIOD + GRACE - 1  # the restarted receiver gives Alertmanager time
    await settle(client)
    assert sink.got == []
    # the armed state survived the restart: with no ping after that time, it pages
    clock.t = started + PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.got) == 3, what="HeartbeatMissing after the restart grace")
    assert len(missing_notes(sink, "pagerduty")) == 1

    # a restart while it is missing neither pages again nor forgets to resolve (stop once the
    # outbox is done: a notification cut off mid-send is sent again, by design)
    await drained(client)
    await client.close()
    clock.t += 5
    client = await start_app(hb_config(sink), clock)
    clock.t += PERIOD + GRACE + 1
    await settle(client)
    assert len(sink.got) == 3
    await post(client, watchdog())
    await wait_for(lambda: len(sink.got) == 6, what="the resolve after the restart")
    assert len(missing_notes(sink, "pagerduty")) == 2


async def test_pings_that_keep_coming_within_period_and_grace_never_page(start_app, sink):
    clock = Clock()
    client = await start_app(hb_config(sink), clock)
    for _ in range(20):  # Alertmanager's repeat_interval at the period, sometimes late
        await post(client, watchdog())
        clock.t += PERIOD + GRACE - 5
        await asyncio.sleep(0.15)
    assert sink.got == []


async def test_two_replicas_raise_and_resolve_it_exactly_once(
    backend, aiohttp_client, make_store, sink
):
    if backend != "postgresql":
        pytest.skip("replicas share a PostgreSQL store (a SQLite file has one owner)")
    clock = Clock()
    cfg = config_mod.from_dict(hb_config(sink), "test.yml")
    apps = [build_app(cfg, store=make_store(), clock=clock, workers=False) for _ in range(2)]
    clients = [await aiohttp_client(a) for a in apps]
    states = [a[STATE] for a in apps]
    await post(clients[0], watchdog())
    started = clock.t
    clock.t += PERIOD + GRACE + 1
    for _ in range(5):  # both replicas judge at the same moment, over and over
        await asyncio.gather(*(heartbeat.tick(s, started, clock.t) for s in states))
    hist = await states[0].store.queue_depth()
    assert hist == {"pagerduty": 1, "sms": 1, "slack": 1}
    [active] = await states[1].store.active_alerts()
    assert active["labels"]["alertname"] == "HeartbeatMissing"
    [group] = await states[1].store.active_groups()
    assert (group["group_key"], group["firing"]) == (GROUP_KEY, 1)

    await post(clients[1], watchdog())
    for _ in range(5):
        await asyncio.gather(*(heartbeat.tick(s, started, clock.t) for s in states))
    assert await states[0].store.queue_depth() == {"pagerduty": 2, "sms": 2, "slack": 2}
    assert await states[0].store.active_alerts() == []
    assert await states[0].store.active_groups() == []


async def test_claiming_the_missing_episode_has_one_winner(store):
    await store.heartbeat_pinged(["a", "b"], 100.0)
    await store.heartbeat_pinged(["a"], 90.0)  # a late, older ping does not move it back
    states = await store.heartbeat_states()
    assert states["a"].last_ping_at == 100.0 and states["a"].missing_since is None
    wins = await asyncio.gather(
        *(store.heartbeat_claim_missing("a", 100.0, 190.0) for _ in range(20))
    )
    assert wins.count(True) == 1
    # a ping since the caller looked: no claim
    await store.heartbeat_pinged(["b"], 150.0)
    assert not await store.heartbeat_claim_missing("b", 100.0, 190.0)
    await store.heartbeat_announced("a", 190.0)
    assert (await store.heartbeat_states())["a"].announced
    clears = await asyncio.gather(*(store.heartbeat_clear_missing("a", 190.0) for _ in range(5)))
    assert clears.count(True) == 1
    assert (await store.heartbeat_states())["a"].missing_since is None


def test_the_raised_alert_is_an_alertmanager_webhook():
    """The alert is built as Alertmanager would send it: valid against the webhook schema intake
    uses, so it can go through intake's conversion whatever that becomes."""
    validate = fastjsonschema.compile(
        json.loads(resources.files("receiver").joinpath("webhook.schema.json").read_text())
    )
    cfg = config_mod.from_dict(
        {"channels": {"c": {"url": "console://"}}, "heartbeats": [{"name": "am"}]}, "t.yml"
    )
    hb = cfg.heartbeats[0]
    assert hb.match == {"alertname": "Watchdog"} and hb.labels == {"severity": "critical"}
    assert (hb.period_s, hb.grace_s) == (60.0, 60.0)
    body = heartbeat.missing_webhook(hb, "firing", 1_700_000_000.0, 1_699_999_880.0, 0.0)
    validate(body)
    [a] = body["alerts"]
    assert a["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert a["labels"] == {
        "alertname": "HeartbeatMissing",
        "heartbeat": "am",
        "severity": "critical",
    }
    again = heartbeat.missing_webhook(hb, "resolved", 1_700_000_000.0, 1_699_999_880.0, 1.0)
    assert again["alerts"][0]["fingerprint"] == a["fingerprint"]
    assert again["groupKey"] == body["groupKey"]


@pytest.mark.parametrize(
    "hb, path, message",
    [
        ({"name": "a", "match": {}}, "heartbeats[0].match", "expected a non-empty mapping"),
        ({"name": "a b"}, "heartbeats[0].name", "expected a name of 1..64"),
        ({"name": "a", "labels": {"heartbeat": "x"}}, "heartbeats[0].labels.heartbeat", "no "),
        ({"name": "a", "period": "0s"}, "heartbeats[0].period", "above 0"),
        ({"name": "a", "grace": "a while"}, "heartbeats[0].grace", "expected a duration"),
        ({"match": {"alertname": "W"}}, "heartbeats[0]", "'name' is a required property"),
        ({"name": "a", "every": "1m"}, "heartbeats[0]", "'every' was unexpected"),
    ],
)
def test_config_errors_name_the_key(hb, path, message):
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.from_dict(
            {"channels": {"c": {"url": "console://"}}, "heartbeats": [hb]}, "r.yml"
        )
    assert err.value.path == path and message in err.value.expected


def test_config_names_are_unique_and_labels_keep_a_severity():
    with pytest.raises(config_mod.ConfigError, match=r"heartbeats\[1\]\.name: expected a unique"):
        config_mod.from_dict(
            {"channels": {"c": {"url": "console://"}}, "heartbeats": [{"name": "a"}, {"name": "a"}]}
        )
    cfg = config_mod.from_dict(
        {"channels": {"c": {"url": "console://"}}, "heartbeats": [{"name": "a", "labels": {}}]}
    )
    assert cfg.heartbeats[0].labels == {"severity": "critical"}
    assert config_mod.from_dict({"channels": {"c": {"url": "console://"}}}).heartbeats == ()


async def test_a_watchdog_inside_an_alert_storm_is_still_a_ping(start_app, sink, backend):
    """A webhook of 10,000 alerts (the most the schema admits) with the watchdog among them: every
    other alert stored, the ping recorded."""
    if backend != "sqlite":
        pytest.skip("store-independent; 10,000 inserts on PostgreSQL take ~20 s here")
    clock = Clock()
    cfg = hb_config(sink)
    cfg["routes"] = [{"match": {"alertname": "Storm"}, "channels": []}]  # store, notify nobody
    cfg["max_body_bytes"] = 64 * 1024 * 1024
    client = await start_app(cfg, clock)
    body = one_alert("s0", alertname="Storm")
    proto = body["alerts"][0]
    body["alerts"] = [
        {**proto, "fingerprint": f"s{i:05d}", "labels": {**proto["labels"], "i": str(i)}}
        for i in range(9_999)
    ]
    body["alerts"].insert(5_000, watchdog()["alerts"][0])
    assert await post(client, body) == {"accepted": 9_999, "duplicates": 0}
    assert (
        await metric(client, "tailpage_receiver_heartbeat_last_ping_timestamp_seconds") == clock.t
    )
    assert sink.got == []


async def test_the_page_escalates_until_acknowledged_like_any_alert(start_app, sink):
    clock = Clock()
    cfg = hb_config(sink)
    cfg["routes"] = [
        {
            "match": {"alertname": "HeartbeatMissing"},
            "channels": ["slack"],
            "escalate": [
                {"after": "5m", "channels": ["sms"]},
                {"after": "10m", "channels": ["pagerduty"]},
            ],
        }
    ]
    client = await start_app(cfg, clock)
    await post(client, watchdog())
    clock.t += PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.to("slack")) == 1, what="the page")
    await drained(client)
    clock.t += 301
    await wait_for(lambda: len(sink.to("sms")) == 1, what="escalation step 1")
    assert "escalation 1: not acknowledged" in sink.to("sms")[0]["message"]
    await drained(client)
    # acknowledged as a group (the status page's "Ack group"): the alert shows alice too
    [group] = await groups(client)
    assert group["escalation"]["step"] == 1
    r = await client.post(f"/api/v1/groups/{group['id']}/ack?by=alice", headers=AUTH)
    assert r.status == 200
    [active] = (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
    assert active["acked_by"] == "alice"
    clock.t += 600
    await settle(client)
    assert sink.to("pagerduty") == []  # acknowledged: step 2 never fires
    assert len(sink.to("sms")) == 1 and len(sink.to("slack")) == 1


async def test_resolved_by_hand_it_stays_resolved_until_the_next_silence(start_app, sink):
    """Resolving the page by hand (group resolve) ends the episode's page; pings resuming later
    add nothing (their resolve is a duplicate); the next silence is a new page."""
    clock = Clock()
    client = await start_app(hb_config(sink), clock)
    await post(client, watchdog())
    clock.t += PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.got) == 3, what="the page")
    await drained(client)
    r = await client.post(f"/api/v1/groups/{store_gid(GROUP_KEY)}/resolve?by=bob", headers=AUTH)
    assert r.status == 200
    await wait_for(lambda: len(sink.got) == 6, what="the manual resolve")
    assert all("resolved by bob" in b["title"] + b["message"] for _, b, _ in sink.got[3:])
    await drained(client)
    clock.t += 3600  # still silent: resolved by hand, it does not page again this episode
    await settle(client)
    assert len(sink.got) == 6 and await groups(client) == []
    await post(client, watchdog())  # pings resume: the stored resolve is a duplicate
    await settle(client)
    assert len(sink.got) == 6
    assert await metric(client, "tailpage_receiver_heartbeat_missing") == 0
    clock.t += PERIOD + GRACE + 1
    await wait_for(lambda: len(sink.got) == 9, what="the next episode's page")
