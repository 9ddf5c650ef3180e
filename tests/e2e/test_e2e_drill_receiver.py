"""Drills on the receiver side: crash mid-burst, a channel down, HA Alertmanagers, garbage.

Each drill reports what was written (alerts accepted), delivered, duplicated and lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from e2e_harness import (
    TOKEN,
    count_by_key,
    free_port,
    http,
    metric_sum,
    post_json,
    scrape,
    start_alertmanager,
    start_receiver,
    wait_until,
    webhook,
)
from e2e_harness import am_alert as alert

pytestmark = pytest.mark.slow

SCHEMA = Path(__file__).resolve().parents[2] / "receiver" / "config.schema.json"
SEQ = re.compile(r"drill alert #(\d{5})")
GID = re.compile(r"group ([0-9a-f]{12})")  # the footer of every group message


def group_webhook(alerts: list[dict], key: str) -> dict:
    """A webhook of the Alertmanager group `key` (the receiver notifies per group:
    docs/receiver-groups.md)."""
    return {**webhook(alerts), "groupKey": key}


def gid12(key: str) -> str:
    """How a group's messages name it: the first 12 hex digits of sha256(groupKey)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def groups_told(notes, ids) -> list[str]:
    """The groups (of `ids`) a channel was told about, once per message."""
    out = []
    for n in notes:
        out.extend(g for g in set(GID.findall(n.text)) if g in ids)
    return out


def seqs(notes, alertname: str) -> list[int]:
    """The alert numbers a channel received for this drill (one per notification)."""
    out = []
    for n in notes:
        if alertname in n.text:
            out.extend(int(m) for m in set(SEQ.findall(n.text)))
    return out


def tally(report, expected: set[int], got: list[int]) -> None:
    counts = count_by_key(str(s) for s in got)
    report.delivered = len(counts)
    report.duplicated = sum(c - 1 for c in counts.values())
    report.lost = len([s for s in expected if str(s) not in counts])


def test_receiver_sigkill_mid_burst_loses_no_accepted_alert(group, sinks, drill) -> None:
    """1,000 alerts in 100 webhooks, one Alertmanager group of 10 each (group_by alertname,
    batch; Alertmanager's format, posted directly: Alertmanager would take minutes to produce
    them), 4 senders; SIGKILL when 300 alerts are accepted. Webhooks that failed are sent again
    after the restart, as Alertmanager retries. Every group that got a 200 must be notified,
    saying its 10 alerts; none twice (beyond a delivery in flight at the kill)."""
    report = drill("receiver-sigkill-burst", "groups of 10 alerts")
    rcv = start_receiver(group, sinks, db="kill.db")
    batches = [[alert("DrillKill", b * 10 + i, "medium") for i in range(10)] for b in range(100)]
    keys = [f'{{}}:{{alertname="DrillKill", batch="b{b:02d}"}}' for b in range(100)]
    ids = {gid12(k): b for b, k in enumerate(keys)}
    report.written = 100
    accepted: set[int] = set()  # batches (groups)
    failed: list[int] = []  # batch numbers to retry
    lock = threading.Lock()
    killed = threading.Event()

    def send(b: int) -> None:
        try:
            status, _ = rcv.post(group_webhook(batches[b], keys[b]), timeout=10)
        except OSError:
            status = 0
        with lock:
            if status == 200:
                accepted.add(b)
            else:
                failed.append(b)
            if len(accepted) >= 30 and not killed.is_set():
                killed.set()
                rcv.proc.kill9()

    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(100)))
    assert killed.is_set(), "the burst finished before the kill"
    accepted_before_kill = set(accepted)
    report.notes["groups_accepted_before_kill"] = len(accepted_before_kill)
    report.notes["webhooks_failed_at_kill"] = len(failed)

    rcv.start()  # same config, same SQLite file
    retry, failed = sorted(failed), []
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, retry))
    assert not failed, f"webhooks still refused after the restart: {failed}"

    def told() -> list[int]:
        return [ids[g] for g in groups_told(sinks.received("slack"), ids)]

    try:
        wait_until(lambda: set(told()) >= accepted, 120, interval=0.5,
                   what="every accepted group notified")
    finally:
        got = told()
        tally(report, accepted, got)
        report.notes["lost_of_accepted_before_kill"] = len(accepted_before_kill - set(got))
        report.seconds = time.monotonic() - t0
        print(report.line())
    time.sleep(1)  # a late duplicate would show here
    tally(report, accepted, told())
    assert report.lost == 0
    assert report.delivered == 100
    # every group message says all 10 of its alerts
    assert all("10 firing" in n.text for n in sinks.received("slack", "DrillKill")), "a count"
    # all 1,000 alerts stored, one by one
    assert len(rcv.alerts()["alerts"]) == 1000
    # At-least-once: a delivery sent but not yet marked when the process died goes out again.
    # The receiver's workers (4) x batch bound that; anything above means the dedup is broken.
    assert report.duplicated <= 4 * 32, report.as_dict()


def test_receiver_sigkill_mid_burst_from_real_alertmanager(group, sinks, drill) -> None:
    """The same drill with Alertmanager in front: 1,000 alerts handed to a real Alertmanager in
    100 groups of 10 (group_by alertname + batch), 100 alerts every 0.3 s so the 100 webhooks
    spread over about 3 s (all at once they are stored before anyone can kill). The receiver
    is SIGKILLed once it has accepted 300 alerts and restarted 2 s later; Alertmanager retries the
    webhooks that failed (its flush retries, then the next group_interval). Every alert must
    reach the receiver's store and every group Slack, at most a few deliveries in flight at the
    kill twice."""
    report = drill("receiver-sigkill-burst-via-alertmanager", "groups of 10 alerts")
    rcv = start_receiver(group, sinks, db="kill-am.db")
    am = start_alertmanager(group, rcv.port, "am-kill", group_by=["alertname", "batch"])
    now = datetime.now(UTC)
    alerts = [{"labels": {"alertname": "DrillKillAM", "severity": "medium",
                          "batch": f"b{n // 10:02d}", "seq": f"{n:05d}"},
               "annotations": {"summary": f"DrillKillAM drill alert #{n:05d}"},
               "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
              for n in range(1000)]
    report.written = len(alerts)
    t0 = time.monotonic()

    def feed() -> None:
        for i in range(0, len(alerts), 100):
            am.post_alerts(alerts[i:i + 100])
            time.sleep(0.3)

    feeder = threading.Thread(target=feed, name="drill-am-feed")
    feeder.start()

    def accepted() -> float:
        return metric_sum(rcv.metrics(), "tailpage_receiver_alerts_received_total")

    at_kill = wait_until(lambda: (n := accepted()) >= 300 and n, 60, interval=0.02,
                         what="the receiver accepting 300 alerts")
    rcv.proc.kill9()
    report.notes["accepted_before_kill_at_least"] = at_kill
    feeder.join(timeout=30)
    time.sleep(2)  # Alertmanager's webhooks now fail with connection refused
    rcv.start()
    expected = set(range(100))  # the groups (alertname, batch): b00..b99
    report.written = len(expected)

    def told() -> list[int]:
        # the receiver's API names each group's labels; its messages name the group's id
        ids = {g["id"][:12]: int(g["group_labels"]["batch"][1:])
               for g in rcv.alerts()["groups"] if g["labels"].get("alertname") == "DrillKillAM"}
        return [ids[g] for g in groups_told(sinks.received("slack"), ids)]

    try:
        wait_until(lambda: set(told()) >= expected, 180,
                   interval=0.5, what="every group notified after the restart")
        time.sleep(2)  # a late duplicate would show here
    finally:
        tally(report, expected, told())
        # a group Alertmanager flushed in two webhooks is a firing message and an update (both
        # right); a duplicate is the same message twice
        texts = count_by_key(f"{g} {n.text}" for n in sinks.received("slack", "DrillKillAM")
                             for g in set(GID.findall(n.text)))
        report.notes["group_updates"] = report.duplicated - sum(c - 1 for c in texts.values())
        report.duplicated = sum(c - 1 for c in texts.values())
        am_m = scrape(am.url + "/metrics")
        report.notes["alertmanager_webhook_requests_failed"] = metric_sum(
            am_m, "alertmanager_notification_requests_failed_total", integration="webhook")
        report.notes["receiver_duplicates_stopped"] = metric_sum(
            rcv.metrics(), "tailpage_receiver_duplicates_total")
        report.seconds = time.monotonic() - t0
        print(report.line(), report.notes)
    assert at_kill < 1000, "the burst was over before the kill"
    assert report.notes["alertmanager_webhook_requests_failed"] > 0, "no webhook failed: no drill"
    assert report.lost == 0, report.as_dict()
    assert len(rcv.alerts()["alerts"]) == 1000  # every alert stored
    assert report.duplicated <= 4 * 32, report.as_dict()


OUTAGE_500_S = 30.0  # Slack answers HTTP 500 ...
OUTAGE_REFUSED_S = 30.0  # ... then nothing listens (connection refused): one minute in all


def test_channel_down_then_back_nothing_dropped(group, sinks, drill) -> None:
    """Slack answers 500 for 30 s, then refuses connections for 30 s, then comes back, while
    alerts keep arriving. Retries use backoff 200ms..5s (shipped default 2s..5m, under which the
    first retry after the outage could come up to 5 minutes later: longer than the suite may
    wait; the retry age is the shipped 24 h). Every notification arrives once, the outage shows in
    the metrics while it lasts, and the other channels are not held up by the broken one."""
    report = drill("channel-down", "group notifications")
    rcv = start_receiver(group, sinks, db="down.db",
                         delivery={"backoff_initial": "200ms", "backoff_max": "5s"})
    t0 = time.monotonic()
    sinks.set_mode("slack", "fail500")
    sent = 0
    ids: dict[str, int] = {}  # group id -> the post that made it (each post: a group of its own)

    def post(n: int, severity: str = "medium") -> None:
        nonlocal sent
        batch = [alert("DrillDown", i, severity) for i in range(sent, sent + n)]
        key = f'{{}}:{{alertname="DrillDown", post="{len(ids)}"}}'
        assert rcv.post(group_webhook(batch, key))[0] == 200
        ids[gid12(key)] = len(ids)
        sent += n

    def told(ch: str) -> list[int]:
        return [ids[g] for g in groups_told(sinks.received(ch), ids)]

    post(10)
    wait_until(lambda: sinks.hits["slack"] >= 3, 15, what="slack tried while failing")
    # a critical alert during the outage: the other channels deliver it at once
    t_crit = time.monotonic()
    post(1, "critical")
    crit_seq = sent - 1
    wait_until(lambda: all(crit_seq in seqs(sinks.received(ch), "DrillDown")
                           for ch in ("pagerduty", "sms", "email")), 20,
               what="pagerduty, sms and email unaffected by the slack outage")
    others_latency = round(time.monotonic() - t_crit, 2)
    while time.monotonic() - t0 < OUTAGE_500_S:
        post(2)
        time.sleep(5)
    during_500 = rcv.metrics()
    sinks.set_mode("slack", "down")
    t_down = time.monotonic()
    while time.monotonic() - t_down < OUTAGE_REFUSED_S:
        post(2)
        time.sleep(5)
    during = rcv.metrics()
    sinks.set_mode("slack", "ok")
    t_back = time.monotonic()
    expected = set(ids.values())
    report.written = len(expected)
    failures_500 = metric_sum(during_500, "tailpage_receiver_notifications_total",
                              channel="slack", result="failure")
    failures = metric_sum(during, "tailpage_receiver_notifications_total",
                          channel="slack", result="failure")
    queued = metric_sum(during, "tailpage_receiver_queue_depth", channel="slack")
    drained = None
    try:
        wait_until(lambda: set(told("slack")) >= expected, 60,
                   what="every notification after the channel came back")
        drained = round(time.monotonic() - t_back, 1)
        wait_until(lambda: metric_sum(rcv.metrics(), "tailpage_receiver_queue_depth",
                                      channel="slack") == 0, 15, what="slack queue empty")
        time.sleep(1)  # a late duplicate would show here
    finally:
        tally(report, expected, told("slack"))
        report.seconds = time.monotonic() - t0
        report.notes.update({
            "outage": f"{OUTAGE_500_S:g} s HTTP 500 + {OUTAGE_REFUSED_S:g} s connection refused",
            "slack_failures_counted_http_500": failures_500,
            "slack_failures_counted_total": failures,
            "slack_queue_depth_while_down": queued,
            "seconds_to_drain_after_back": drained,
            "other_channels_latency_during_outage_s": others_latency,
        })
        print(report.line(), report.notes)
    assert failures_500 > 0, "HTTP 500s must show in tailpage_receiver_notifications_total"
    assert failures > failures_500, "refused connections must show as failures too"
    assert queued > 0, "undelivered notifications must show in the queue depth"
    assert metric_sum(rcv.metrics(), "tailpage_receiver_dead_letters_total") == 0
    assert report.lost == 0 and report.duplicated == 0, report.as_dict()
    for ch in ("pagerduty", "sms", "email"):  # the critical one only, once each
        assert seqs(sinks.received(ch), "DrillDown") == [crit_seq], ch


@pytest.mark.parametrize("peer_timeout", ["200ms", "0s"])
def test_two_clustered_alertmanagers_one_notification_per_alert_per_channel(
        group, sinks, drill, peer_timeout) -> None:
    """Two Alertmanager 0.25 peers gossiping on loopback, both given the same 20 alerts (as
    Prometheus sends every alert to every Alertmanager). Each alert must reach Slack and email
    once. With a 200ms peer timeout the second peer finds the first one's notification in the
    gossiped log and stays quiet (Alertmanager deduplicates); with 0s both peers send at once
    and the receiver's idempotency (fingerprint, status, startsAt) must stop the copies:
    tailpage_receiver_duplicates_total shows how many it stopped."""
    report = drill(f"alertmanager-ha-peer-timeout-{peer_timeout}", "notifications")
    rcv = start_receiver(group, sinks, db="ha.db")
    c1, c2 = free_port(), free_port()
    fast = ["--cluster.gossip-interval=50ms", "--cluster.pushpull-interval=2s",
            f"--cluster.peer-timeout={peer_timeout}"]
    am1 = start_alertmanager(group, rcv.port, "am1", cluster_port=c1, peers=[c2], extra=fast)
    am2 = start_alertmanager(group, rcv.port, "am2", cluster_port=c2, peers=[c1], extra=fast)

    def clustered():
        return all(len(a.status()["cluster"]["peers"]) == 2 and
                   a.status()["cluster"]["status"] == "ready" for a in (am1, am2))

    wait_until(clustered, 30, what="two Alertmanagers in one cluster")
    t0 = time.monotonic()
    now = datetime.now(UTC)
    alerts = [{"labels": {"alertname": "DrillHA", "severity": "high", "component": f"c{i:02d}",
                          "seq": f"{i:05d}"},
               "annotations": {"summary": f"DrillHA drill alert #{i:05d}"},
               "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
              for i in range(20)]
    am1.post_alerts(alerts)
    am2.post_alerts(alerts)
    expected = set(range(20))
    report.written = 20 * 2  # 20 alerts x (slack, email)
    try:
        wait_until(lambda: all(set(seqs(sinks.received(ch), "DrillHA")) >= expected
                               for ch in ("slack", "email")), 30, what="every alert on both")
        time.sleep(4)  # both peers past their wait: a duplicate would have arrived by now
    finally:
        per_channel = {ch: seqs(sinks.received(ch), "DrillHA") for ch in ("slack", "email")}
        counts = {ch: count_by_key(str(s) for s in got) for ch, got in per_channel.items()}
        report.delivered = sum(len(c) for c in counts.values())
        report.duplicated = sum(n - 1 for c in counts.values() for n in c.values())
        report.lost = report.written - report.delivered
        m = rcv.metrics()
        report.notes["duplicates_stopped_by_receiver"] = metric_sum(
            m, "tailpage_receiver_duplicates_total")
        report.notes["alerts_received"] = metric_sum(m, "tailpage_receiver_alerts_received_total")
        report.seconds = time.monotonic() - t0
        print(report.line())
    assert report.lost == 0 and report.duplicated == 0, report.as_dict()
    assert not sinks.received("pagerduty") and not sinks.received("sms")
    if peer_timeout == "0s":
        assert report.notes["duplicates_stopped_by_receiver"] >= 1, "both peers should have sent"


def test_garbage_at_the_webhook_gets_the_right_codes(group, sinks, drill) -> None:
    """Nine kinds of bad request, each followed by a good webhook: every bad one gets its 4xx and
    is counted by reason, the receiver keeps running, every good alert is delivered once and the
    alert in the unauthenticated requests (#00000) never is."""
    report = drill("webhook-garbage", "good alerts between bad requests")
    rcv = start_receiver(group, sinks, db="garbage.db")
    url = rcv.url + "/alerts"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    forged = webhook([alert("DrillGarbage", 0, "medium")])
    cases: list[tuple[str, Callable[[], tuple[int, bytes]], int]] = [
        ("random bytes", lambda: http("POST", url, os.urandom(4096), auth), 400),
        ("invalid UTF-8 JSON",
         lambda: http("POST", url, b'{"version": "4", "x": "\xff\xfe"}', auth), 400),
        ("truncated JSON", lambda: http("POST", url, b'{"version": "4", "alerts": [', auth), 400),
        ("wrong schema", lambda: post_json(url, {"alerts": "not a list"}, auth), 400),
        ("alert without labels",
         lambda: post_json(url, {**forged, "alerts": [{"status": "firing"}]}, auth), 400),
        ("huge body (default limit + 1 MiB)", lambda: _post_huge(url, auth), 413),
        ("wrong token",
         lambda: post_json(url, forged, {"Authorization": "Bearer not-the-token"}), 401),
        ("no token", lambda: post_json(url, forged), 401),
        ("basic instead of bearer",
         lambda: post_json(url, forged, {"Authorization": "Basic ZTJlOnB3"}), 401),
    ]
    bad, goods = [], []
    for i, (name, send, want) in enumerate(cases, start=1):
        status, body = send()
        assert TOKEN not in body.decode(errors="replace"), f"{name}: the token leaked"
        report.notes[name] = status
        if status != want:
            bad.append((name, status, want))
        assert rcv.proc.alive(), f"the receiver crashed on {name}"
        good = group_webhook([alert("DrillGarbage", i, "medium")], f"garbage-good-{i}")
        good_status = rcv.post(good)[0]
        assert good_status == 200, f"good webhook after {name}: {good_status}"
        goods.append(i)
    expected = set(goods)
    report.written = len(goods)
    report.notes["bad_requests"] = len(cases)
    try:
        wait_until(lambda: set(seqs(sinks.received("slack"), "DrillGarbage")) >= expected, 20,
                   what="every good webhook between the garbage delivered")
        time.sleep(1)
    finally:
        got = seqs(sinks.received("slack"), "DrillGarbage")
        tally(report, expected, [g for g in got if g != 0])
        report.notes["wrong_codes"] = bad
        report.notes["forged_alert_delivered"] = got.count(0)
        print(report.line(), report.notes)
    m = rcv.metrics()
    for reason in ("auth", "too_large", "invalid_json", "schema"):
        rejected = metric_sum(m, "tailpage_receiver_webhooks_rejected_total", reason=reason)
        assert rejected >= 1, f"rejections for {reason} not counted"
    report.notes["rejected_by_reason"] = {
        dict(ls)["reason"]: v for (n, ls), v in m.items()
        if n == "tailpage_receiver_webhooks_rejected_total" and v}
    assert not bad, f"wrong status codes (case, got, want): {bad}"
    assert report.notes["forged_alert_delivered"] == 0
    assert report.lost == 0 and report.duplicated == 0, report.as_dict()


def _post_huge(url: str, headers: dict) -> tuple[int, bytes]:
    """Valid-looking JSON 1 MiB over the default max_body_bytes (read from the config schema),
    over a raw socket; the receiver should answer 413 without
    reading it all. A server may answer and close before the body is sent: stop sending then and
    read the answer it gave (urllib would only report the broken pipe)."""
    u = urllib.parse.urlsplit(url)
    limit = json.loads(SCHEMA.read_text())["properties"]["max_body_bytes"]["default"]
    body = b'{"version": "4", "alerts": [], "pad": "' + b"x" * (limit + (1 << 20)) + b'"}'
    head = (f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n")
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head.encode())
        with contextlib.suppress(OSError):
            for i in range(0, len(body), 65536):
                s.sendall(body[i:i + 65536])
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return (int(m.group(1)) if m else 0), answer
