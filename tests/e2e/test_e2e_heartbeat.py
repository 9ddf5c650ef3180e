"""The heartbeat drill: a real Alertmanager re-sends an always-firing TailpageWatchdog to real
receiver processes; Alertmanager is killed, the receiver pages HeartbeatMissing through the
stand-in channels, Alertmanager comes back, the page resolves.

A thread plays Prometheus: it posts the watchdog to Alertmanager every second, as a rule
evaluation would, and keeps trying while Alertmanager is down.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from e2e_harness import (
    BIN,
    CHANNELS,
    TOKEN,
    Receiver,
    free_port,
    metric_sum,
    post_json,
    receiver_config,
    wait_ready,
    wait_until,
    write_yaml,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "postgres"))
import pg_harness

pytestmark = pytest.mark.slow

PERIOD, GRACE, POLL = 4.0, 4.0, 0.2  # seconds; Alertmanager re-sends every ~3 s (below)
LAST_PING = "tailpage_receiver_heartbeat_last_ping_timestamp_seconds"
MISSING = "tailpage_receiver_heartbeat_missing"


def start_receiver(group, sinks, name: str, store: str | None = None) -> Receiver:
    root = group.root / name
    root.mkdir(exist_ok=True)
    port = free_port()
    conf = receiver_config(root, sinks, port=port)
    doc = yaml.safe_load(conf.read_text())
    doc["heartbeats"] = [{"name": "alertmanager", "match": {"alertname": "TailpageWatchdog"},
                          "period": f"{PERIOD:g}s", "grace": f"{GRACE:g}s"}]
    doc["escalation"]["poll_interval"] = f"{POLL * 1000:g}ms"  # the heartbeat timer's too
    if store:
        doc["store"] = store
    write_yaml(conf, doc)
    proc = group.add(name, [str(BIN / "tailpage-receiver"), "run", "--config", str(conf),
                            "--listen", f"127.0.0.1:{port}"])
    return Receiver(proc, port).start()


def start_alertmanager(group, receivers: list[Receiver]):
    """Alertmanager with the chart's heartbeat route in small: repeat_interval 2s on 1s group
    ticks (a re-send every ~3 s), no resolved notices."""
    root = group.root / "alertmanager"
    root.mkdir(exist_ok=True)
    port = free_port()
    conf = write_yaml(root / "alertmanager.yml", {
        "route": {"receiver": "tailpage-heartbeat", "group_by": ["alertname"],
                  "group_wait": "0s", "group_interval": "1s", "repeat_interval": "2s"},
        "receivers": [{"name": "tailpage-heartbeat", "webhook_configs": [
            {"url": f"{r.url}/alerts", "send_resolved": False,
             "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}
            for r in receivers]}],
    })
    proc = group.add("alertmanager", [
        "prometheus-alertmanager", f"--config.file={conf}", f"--storage.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        "--log.level=warn"])
    proc.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + "/-/ready")
    return proc, url


@contextlib.contextmanager
def prometheus_standin(am_url: str) -> Iterator[None]:
    stop = threading.Event()
    starts = datetime.now(UTC).isoformat()

    def loop() -> None:
        while not stop.is_set():
            ends = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
            with contextlib.suppress(OSError):
                post_json(am_url + "/api/v2/alerts", [{
                    "labels": {"alertname": "TailpageWatchdog", "severity": "info"},
                    "annotations": {"summary": "Alerting pipeline heartbeat (always firing)"},
                    "startsAt": starts, "endsAt": ends}], timeout=2)
            stop.wait(1.0)

    t = threading.Thread(target=loop, name="prometheus-standin", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)


def last_ping(rcv: Receiver) -> float:
    return metric_sum(rcv.metrics(), LAST_PING, heartbeat="alertmanager")


def pages(sinks, resolved: bool = False) -> list:
    notes = sinks.received(containing="HeartbeatMissing")
    return [n for n in notes if ("RESOLVED" in n.title + n.text) == resolved]


def kill_and_page(am, rcv: Receiver, sinks) -> tuple[float, float]:
    """Kill Alertmanager; (seconds from the last ping to the first page, to the last channel)."""
    am.kill9()
    time.sleep(0.5)  # a webhook in flight lands
    last = last_ping(rcv)
    assert last > 0
    wait_until(lambda: {n.channel for n in pages(sinks)} == set(CHANNELS), 30,
               what="HeartbeatMissing on every critical channel")
    times = sorted(n.at for n in pages(sinks))
    return times[0] - last, times[-1] - last


def test_alertmanager_killed_pages_once_and_resolves_when_it_returns(group, sinks, drill):
    report = drill("heartbeat-alertmanager-killed", "HeartbeatMissing pages")
    rcv = start_receiver(group, sinks, "receiver")
    am, am_url = start_alertmanager(group, [rcv])
    with prometheus_standin(am_url):
        wait_until(lambda: last_ping(rcv) > 0, 20, what="the first ping")
        # Alertmanager running: pings keep coming, nothing reaches a channel
        first = last_ping(rcv)
        time.sleep(2 * (PERIOD + GRACE))
        assert last_ping(rcv) > first + PERIOD
        assert sinks.received() == []

        # the receiver itself is down for longer than period + grace, then restarts: it gives
        # Alertmanager period + grace to ping before judging, and does not page
        rcv.proc.stop()
        time.sleep(PERIOD + GRACE + 1)
        rcv.start()
        time.sleep(2 * (PERIOD + GRACE))
        assert sinks.received() == []
        assert metric_sum(rcv.metrics(), MISSING, heartbeat="alertmanager") == 0

        # Alertmanager dies: the receiver pages within period + grace + its poll interval
        first_page, last_page = kill_and_page(am, rcv, sinks)
        assert PERIOD + GRACE - 0.5 <= first_page <= PERIOD + GRACE + POLL + 2.0, first_page
        assert metric_sum(rcv.metrics(), MISSING, heartbeat="alertmanager") == 1
        active = rcv.alerts()
        [alert] = active["alerts"]
        assert alert["labels"]["heartbeat"] == "alertmanager"
        [group] = active["groups"]  # a group of one under the receiver's own groupKey
        assert group["group_key"] == 'tailpage-heartbeat:{heartbeat="alertmanager"}'
        assert (group["firing"], alert["group"]) == (1, group["id"])
        time.sleep(PERIOD + GRACE)
        assert len(pages(sinks)) == len(CHANNELS)  # one page per channel, not one per tick

        # Alertmanager is back (Prometheus re-sends the watchdog): the page resolves
        am.start()
        wait_until(lambda: {n.channel for n in pages(sinks, resolved=True)} == set(CHANNELS),
                   30, what="the resolve on every channel")
    assert len(pages(sinks)) == len(CHANNELS)
    assert len(pages(sinks, resolved=True)) == len(CHANNELS)
    assert rcv.alerts()["alerts"] == [] and rcv.alerts()["groups"] == []
    report.written = 1
    report.delivered = 1
    report.notes.update(seconds_from_last_ping_to_first_page=round(first_page, 2),
                        seconds_to_last_channel=round(last_page, 2),
                        period_s=PERIOD, grace_s=GRACE, poll_s=POLL)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[pg_harness.PgServer]:
    yield from pg_harness.serve()


def test_two_receivers_on_one_postgresql_page_exactly_once(group, sinks, drill, pg_server):
    report = drill("heartbeat-two-replicas", "HeartbeatMissing pages")
    db = pg_server.create_database()
    try:
        a = start_receiver(group, sinks, "replica-a", store=pg_server.dsn(db))
        b = start_receiver(group, sinks, "replica-b", store=pg_server.dsn(db))
        am, am_url = start_alertmanager(group, [a, b])
        with prometheus_standin(am_url):
            wait_until(lambda: last_ping(a) > 0 and last_ping(b) > 0, 20, what="pings")
            first_page, _ = kill_and_page(am, a, sinks)
            time.sleep(PERIOD + GRACE)  # both replicas judged many times
            by_channel = {ch: len([n for n in pages(sinks) if n.channel == ch]) for ch in CHANNELS}
            assert by_channel == {ch: 1 for ch in CHANNELS}
            am.start()
            wait_until(lambda: len(pages(sinks, resolved=True)) >= len(CHANNELS), 30,
                       what="the resolve")
            time.sleep(2)
        assert len(pages(sinks, resolved=True)) == len(CHANNELS)
        report.written = 1
        report.delivered = 1
        report.notes.update(seconds_from_last_ping_to_first_page=round(first_page, 2))
    finally:
        group.close()  # the receivers hold connections: stop them before dropping the database
        pg_server.drop_database(db)
