"""Two real `tailpage-receiver run` replicas on one PostgreSQL; one SIGKILLed mid-burst.

What HTTP delivery can promise: a row is marked sent after the channel answered, so the rows
the killed replica was sending at the moment of SIGKILL (state 'sending', its lease) are the
only ones that can reach a channel twice: once from the dead replica (its request may or may
not have completed before the kill) and once from the survivor after the lease ran out. The
test reads that set from the database right after the kill (the lease is 6 s, so nothing has
touched those rows yet) and checks every group (each webhook is one Alertmanager group of
several alerts) reached every channel exactly once, except the rows of that set, which reached it
at most twice: one copy from each replica.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psycopg
import pytest
import yaml
from aiohttp import web
from pg_harness import PgServer
from rcv_helpers import free_port, ready  # tests/receiver (conftest puts it on sys.path)

RECEIVER = Path(sys.executable).parent / "tailpage-receiver"
PAYLOADS = Path(__file__).parent.parent / "receiver" / "payloads"
TOKEN = "ha-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOKS, PER_WEBHOOK = 200, 5  # a burst of 1,000 alerts
SLOW_S = 0.05


class StandIn:
    """A json:// channel endpoint per replica: /{replica}/{channel}. `slow` sleeps first."""

    def __init__(self) -> None:
        self.completed: list[tuple[str, str, str]] = []  # (replica, channel, fingerprint)
        self.abandoned: list[tuple[str, str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        replica, channel = request.match_info["replica"], request.match_info["channel"]
        body = await request.json()
        # a group's message ends with its id ("group 1a2b3c4d5e6f"): one webhook, one group
        fp = body["message"].rsplit("group ", 1)[1].split()[0]
        if channel == "slow":
            await asyncio.sleep(SLOW_S)
        transport = request.transport
        if transport is None or transport.is_closing():
            self.abandoned.append((replica, channel, fp))
        else:
            self.completed.append((replica, channel, fp))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{replica}/{channel}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def delivered(self, channel: str) -> Counter[str]:
        return Counter(fp for _, ch, fp in self.completed if ch == channel)


def replica_config(tmp: Path, name: str, server: PgServer, db: str, standin: StandIn) -> Path:
    """Replica a reads the store password from ${ENV}, replica b from store_password_file."""
    if name == "a":
        store = f"postgresql://tailpage:${{HA_TEST_PGPASSWORD}}@127.0.0.1:{server.port}/{db}"
        extra: dict = {}
    else:
        (tmp / "pgpass").write_text(server.password + "\n")
        store = f"postgresql://tailpage@127.0.0.1:{server.port}/{db}"
        extra = {"store_password_file": str(tmp / "pgpass")}
    base = f"json://127.0.0.1:{standin.port}/{name}"
    cfg = {
        "store": store,
        **extra,
        "auth": {"bearer_token": TOKEN},
        "channels": {"slow": {"url": f"{base}/slow"}, "fast": {"url": f"{base}/fast"}},
        "routes": [{"channels": ["slow", "fast"]}],
        # lease > timeout: a live replica's send never outlasts its lease
        "delivery": {
            "workers": 4,
            "batch": 8,
            "timeout": "4s",
            "lease": "6s",
            "poll_interval": "100ms",
            "backoff_initial": "200ms",
            "backoff_max": "1s",
            "max_age": "1h",
        },
    }
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the receiver
        return subprocess.Popen(
            [str(RECEIVER), "run", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
            cwd=cfg.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def gid12(j: int) -> str:
    """The id (as its messages show it) of webhook j's group."""
    return hashlib.sha256(f'{{}}:{{alertname="HaTest{j}"}}'.encode()).hexdigest()[:12]


def webhook(j: int) -> dict:
    """A real captured Alertmanager payload: one group (alertname HaTest{j}) of PER_WEBHOOK
    distinct alerts."""
    body = json.loads((PAYLOADS / "firing.json").read_text())
    body["groupKey"] = f'{{}}:{{alertname="HaTest{j}"}}'
    body["groupLabels"] = {"alertname": f"HaTest{j}"}
    body["commonLabels"] = {"alertname": f"HaTest{j}", "severity": "critical"}
    template = body["alerts"][0]
    body["alerts"] = []
    for k in range(PER_WEBHOOK):
        a = copy.deepcopy(template)
        a["fingerprint"] = f"ha{j:03d}{k}"
        a["labels"].update(alertname=f"HaTest{j}", instance=f"i{k}")
        body["alerts"].append(a)
    return body


@pytest.mark.slow
async def test_sigkill_one_replica_mid_burst_survivor_delivers_each_alert_once(
    pg_server: PgServer, pg_db: str, tmp_path: Path
):
    standin = StandIn()
    await standin.start()
    env = {**os.environ, "HA_TEST_PGPASSWORD": pg_server.password}
    procs, ports, logs = {}, {}, {}
    for name in ("a", "b"):
        ports[name], logs[name] = free_port(), tmp_path / f"{name}.log"
        cfg = replica_config(tmp_path, name, pg_server, pg_db, standin)
        procs[name] = start(cfg, ports[name], logs[name], env)
    accepted: dict[str, set[str]] = {"a": set(), "b": set()}
    duplicates = 0
    kill_state: dict = {}
    try:
        await asyncio.gather(*(ready(ports[n], procs[n], log=logs[n]) for n in ("a", "b")))

        async def post(session: aiohttp.ClientSession, name: str, j: int) -> None:
            nonlocal duplicates
            body = webhook(j)
            url = f"http://127.0.0.1:{ports[name]}/alerts"
            try:
                async with session.post(url, json=body, headers=AUTH) as r:
                    if r.status == 200:
                        accepted[name].add(gid12(j))
                        duplicates += (await r.json())["duplicates"]
            except (TimeoutError, aiohttp.ClientError):
                pass  # replica a died under us: not accepted there (Alertmanager would retry)

        async def killer(conn: psycopg.AsyncConnection) -> None:
            # mid-burst, and only once replica a holds leased rows it is sending right now
            owner = f"%:{procs['a'].pid}:%/%"  # host:pid:random/worker
            while True:
                cur = await conn.execute(
                    "SELECT channel, fingerprint FROM outbox WHERE state='sending' "
                    "AND lease_owner LIKE %s",
                    (owner,),
                )
                leased = await cur.fetchall()
                if len(accepted["a"]) >= WEBHOOKS // 4 and len(leased) >= 4:
                    break
                await asyncio.sleep(0.005)
            os.kill(procs["a"].pid, signal.SIGKILL)
            assert procs["a"].wait(5) == -signal.SIGKILL
            # what the dead replica was in the middle of: frozen until its lease runs out
            cur = await conn.execute(
                "SELECT channel, fingerprint FROM outbox WHERE state='sending' "
                "AND lease_owner LIKE %s",
                (owner,),
            )
            kill_state["leased"] = {(ch, f[:12]) for ch, f in await cur.fetchall()}
            kill_state["accepted_a"] = len(accepted["a"])

        async with (
            await psycopg.AsyncConnection.connect(pg_server.dsn(pg_db), autocommit=True) as conn,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        ):
            k = asyncio.create_task(killer(conn))
            sem = asyncio.Semaphore(8)

            async def send(j: int) -> None:
                # every 4th webhook reaches replica a only: the survivor knows those alerts
                # from the shared database alone
                targets = ["a"] if j % 4 == 0 else ["a", "b"]
                async with sem:
                    await asyncio.gather(*(post(session, n, j) for n in targets))

            await asyncio.gather(*(send(j) for j in range(WEBHOOKS)))
            await asyncio.wait_for(k, 20)
            assert procs["a"].wait(5) == -signal.SIGKILL
            every = accepted["a"] | accepted["b"]
            only_a = every - accepted["b"]
            # killed mid-burst: later webhooks to replica a were refused
            assert len(accepted["a"]) < WEBHOOKS, "the kill came too late"
            assert only_a, "no alert depended on the killed replica"

            def done() -> bool:
                return all(set(standin.delivered(ch)) >= every for ch in ("slow", "fast"))

            deadline = time.monotonic() + 60
            while not done():
                assert time.monotonic() < deadline, (
                    f"undelivered: slow {len(every - set(standin.delivered('slow')))}, "
                    f"fast {len(every - set(standin.delivered('fast')))}"
                )
                await asyncio.sleep(0.1)
            # let stragglers show up before counting: nothing left to send in the database
            while True:
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM outbox WHERE state IN ('pending','sending','held')"
                )
                if (await cur.fetchone())[0] == 0:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        rc_b = procs["b"].wait(15)
        await standin.runner.cleanup()

    posted = {gid12(j) for j in range(WEBHOOKS)}
    leased = kill_state["leased"]
    assert leased
    resent_by_survivor = 0
    for ch in ("slow", "fast"):
        got = standin.delivered(ch)
        in_flight = {fp for c, fp in leased if c == ch}
        # exactly once per channel for every accepted alert; nothing that was never posted
        assert {fp: n for fp, n in got.items() if n != 1 and fp not in in_flight} == {}, ch
        assert every <= set(got) <= posted, ch
        # a row in flight at the kill: the survivor sent it after the lease, and the dead
        # replica's own request may have completed just before the kill: never more
        for fp in in_flight:
            senders = sorted(r for r, c, f in standin.completed if (c, f) == (ch, fp))
            assert senders in (["a"], ["b"], ["a", "b"]), (ch, fp, senders)
            resent_by_survivor += "b" in senders
    assert resent_by_survivor, "the survivor took over none of the dead replica's rows"
    # HA duplicates: both replicas were sent the same webhooks, each alert went out once
    assert duplicates > 0
    # the only requests answered to a closed connection are the dead replica's
    assert all(r == "a" for r, _, _ in standin.abandoned)
    assert rc_b == 0
    out = logs["b"].read_text() + logs["a"].read_text()
    assert pg_server.password not in out
    assert "DEAD LETTER" not in out
