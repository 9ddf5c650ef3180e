"""The PostgreSQL store's multi-replica guarantees, with two or more store instances (as two
replicas would have) on one real database, racing for real on separate connections."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from pg_harness import PgServer
from psycopg import sql
from rcv_helpers import (  # tests/receiver (conftest)
    AUTH,
    Sink,
    base_config,
    one_alert,
    store_gid,
    store_group,
    wait_for,
)  # tests/receiver (conftest)

from receiver import config as config_mod
from receiver.app import build_app
from receiver.store import IncomingAlert, StoreError
from receiver.store.postgresql import MIGRATIONS, PostgreSQLStore


def _group(fp: str, status: str = "firing", channels=("slack", "sms"), escalation=()):
    """A webhook of one group with one alert."""
    return store_group(_alert(fp, status), key=f"g-{fp}", channels=channels, escalation=escalation)


def _alert(fp: str, status: str = "firing"):
    return IncomingAlert(
        fingerprint=fp,
        status=status,
        starts_at="2026-01-01T12:00:00Z",
        ends_at=None,
        labels={"alertname": "A", "fp": fp},
        annotations={"summary": f"summary {fp}"},
        generator_url=None,
        severity="critical",
        channels=(),
    )


@pytest.fixture
async def replicas(pg_server: PgServer, pg_db: str):
    """Three opened stores on one database: three replicas."""
    stores = [PostgreSQLStore(pg_server.dsn(pg_db), timeout_s=5.0) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))  # migrations race too
    yield stores
    await asyncio.gather(*(s.close() for s in stores))


async def test_replicas_starting_together_migrate_once(pg_server: PgServer, pg_db: str, replicas):
    # 1: base, 2: groups, 3: heartbeats
    assert len(MIGRATIONS) == 3
    assert pg_server.sql(pg_db, "SELECT version FROM tailpage_schema_version ORDER BY 1") == [
        (1,),
        (2,),
        (3,),
    ]
    # and a restart on the migrated schema changes nothing
    s = PostgreSQLStore(pg_server.dsn(pg_db))
    await s.open()
    await s.close()
    assert pg_server.sql(pg_db, "SELECT count(*) FROM tailpage_schema_version") == [(3,)]


async def test_same_alerts_to_every_replica_at_once_are_stored_once(pg_server, pg_db, replicas):
    batch = [_alert(f"fp{i:02d}") for i in range(30)]
    # every replica gets the whole group, alerts in a different order, at the same moment
    orders = [batch, batch[::-1], batch[10:] + batch[:10]]
    results = await asyncio.gather(
        *(
            s.ingest(store_group(*o, key="g", channels=("slack", "sms")), time.time())
            for s, o in zip(replicas, orders, strict=True)
        )
    )
    assert sum(len(r.accepted) for r in results) == 30
    assert sum(len(r.duplicates) for r in results) == 60
    assert sum(r.deliveries for r in results) == 2  # one outbox row per group and channel
    rows = pg_server.sql(
        pg_db, "SELECT fingerprint, channel, count(*) FROM outbox GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert rows == []


async def test_claims_are_disjoint_and_a_dead_replicas_lease_passes_on(replicas):
    a, b, c = replicas
    now = time.time()
    for i in range(40):
        await a.ingest(_group(f"c{i:02d}"), now)
    claims = await asyncio.gather(*(s.claim_due("w", now, 30, lease_s=10) for s in replicas))
    ids = [d.id for batch in claims for d in batch]
    assert len(ids) == len(set(ids)) == 80  # every row claimed once, none twice
    # replica a "dies" holding its rows: nobody may take them before the lease runs out
    mine = {d.id for d in claims[0]}
    assert mine
    for s in (b, c):
        for d in claims[replicas.index(s)]:
            await s.mark_sent(d.id, now)
    assert await b.claim_due("w", now + 9, 100, lease_s=10) == []
    taken = await b.claim_due("w", now + 10.5, 100, lease_s=10)
    assert {d.id for d in taken} == mine
    for d in taken:
        await b.mark_sent(d.id, now + 11)
    # the dead replica's late reports (it was only frozen) cannot reopen what b finished
    for i in mine:
        await a.mark_failed(i, "late", now + 12)
    assert await c.claim_due("w", now + 100, 100, lease_s=10) == []
    assert await c.queue_depth() == {}


async def test_an_escalation_step_fires_on_exactly_one_replica(pg_server, pg_db, replicas):
    now = time.time()
    plan = ((1.0, ("pagerduty",)), (2.0, ("phone",)))
    for i in range(25):
        await replicas[0].ingest(_group(f"e{i:02d}", escalation=plan), now)
    for t in (now + 1.5, now + 2.5):
        fired = await asyncio.gather(*(s.fire_due_escalations(t, 100) for s in replicas))
        assert sorted(f.fingerprint for batch in fired for f in batch) == sorted(
            store_gid(f"g-e{i:02d}") for i in range(25)
        )
    rows = pg_server.sql(
        pg_db, "SELECT channel, step, count(*) FROM outbox WHERE kind='escalation' GROUP BY 1, 2"
    )
    assert sorted(rows) == [("pagerduty", 1, 25), ("phone", 2, 25)]


async def test_rate_limit_and_digest_hold_across_replicas(replicas):
    now = time.time()
    # burst 5 shared by three replicas taking tokens at once: 5 in total, not 5 each
    got = await asyncio.gather(*(s.take_token("sms", now, 0.001, 5) for s in replicas * 4))
    assert got.count(True) == 5
    for i in range(12):
        await replicas[0].ingest(_group(f"d{i:02d}", channels=("sms",)), now)
    for s in replicas:
        for d in await s.claim_due("w", now, 4, lease_s=10):
            await s.hold(d.id, now)
    digests = await asyncio.gather(*(s.make_digest("sms", now) for s in replicas))
    made = [d for d in digests if d is not None]
    assert len(made) == 1  # one replica summarised every held row
    [digest] = await replicas[1].claim_due("w", now, 10, lease_s=10)
    assert digest.id == made[0] and len(digest.digest) == 12


async def _receiver(aiohttp_client, dsn: str, timeout_s: float):
    """A receiver app (real HTTP on loopback) on this database; its channels post to a Sink."""
    sink = await Sink().start()
    cfg = config_mod.from_dict(base_config(sink), "test.yml")
    store = PostgreSQLStore(dsn, timeout_s=timeout_s)
    return sink, await aiohttp_client(build_app(cfg, store=store))


async def test_intake_answers_503_when_the_database_cannot_commit(pg_server, pg_db, aiohttp_client):
    sink, client = await _receiver(aiohttp_client, pg_server.dsn(pg_db), timeout_s=0.5)
    try:
        # another session holds the events table: the intake's lock_timeout runs out
        with psycopg.connect(pg_server.dsn(pg_db)) as blocker:
            blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            r = await client.post("/alerts", json=one_alert("f00d"), headers=AUTH)
            assert r.status == 503 and r.headers["Retry-After"]
            assert time.monotonic() - t0 < 5
            blocker.rollback()
        r = await client.post("/alerts", json=one_alert("f00d"), headers=AUTH)
        assert r.status == 200
        await wait_for(lambda: len(sink.to("slack")) == 1, what="delivery after recovery")
        metrics = await (await client.get("/metrics")).text()
        assert 'tailpage_receiver_webhooks_rejected_total{reason="store"} 1.0' in metrics
    finally:
        await client.close()
        await sink.runner.cleanup()


async def test_errors_never_carry_the_password(pg_server: PgServer, pg_db: str):
    wrong = "Wr0ng-pass-" + pg_server.password
    s = PostgreSQLStore(pg_server.dsn(pg_db, password=wrong), timeout_s=2)
    with pytest.raises(StoreError) as e:
        await s.open()
    assert wrong not in str(e.value) and "authentication failed" in str(e.value)
    s = PostgreSQLStore(pg_server.dsn(pg_db), timeout_s=2)
    await s.open()
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.ping()


@pytest.mark.parametrize("form", ["inline", "env", "file", "multi-host"])
async def test_store_dsn_forms_connect(pg_server, pg_db, tmp_path, monkeypatch, form):
    """The password inline, from ${ENV}, from store_password_file (any characters: the file's
    content is URL-quoted into the DSN), and a libpq multi-host DSN (failover) whose first host
    refuses connections."""
    host = f"127.0.0.1:{pg_server.port}"
    cfg: dict = {}
    secret = pg_server.password
    if form == "inline":
        cfg["store"] = pg_server.dsn(pg_db)
    elif form == "env":
        monkeypatch.setenv("PG_TEST_PASSWORD", secret)
        cfg["store"] = f"postgresql://tailpage:${{PG_TEST_PASSWORD}}@{host}/{pg_db}"
    else:
        user, secret = f"u_{pg_db}", "p@ss/w:rd %$?#&'x"
        create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")  # no parameters in DDL
        pg_server.sql(pg_db, create.format(sql.Identifier(user), sql.Literal(secret)).as_string())
        pg_server.sql(pg_db, f'GRANT ALL ON SCHEMA public TO "{user}"')
        (tmp_path / "pw").write_text(secret + "\n")
        cfg["store_password_file"] = str(tmp_path / "pw")
        hosts = host if form == "file" else f"127.0.0.1:{_closed_port()},{host}"
        cfg["store"] = f"postgresql://{user}@{hosts}/{pg_db}?connect_timeout=5"
    c = config_mod.from_dict(cfg, str(tmp_path / "receiver.yml"), tmp_path)
    s = PostgreSQLStore(c.store, timeout_s=5)
    await s.open()
    try:
        await s.ping()
        assert secret not in config_mod.redact_dsn(c.store)
    finally:
        await s.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_database_restart_answers_503_then_recovers(pg_server, pg_db, aiohttp_client):
    """PostgreSQL crashes (or fails over) under a running receiver: webhooks get 503 and
    readiness fails while it is gone; afterwards the same pool serves again without a restart
    of the receiver, and nothing is notified twice."""
    sink, client = await _receiver(aiohttp_client, pg_server.dsn(pg_db), timeout_s=1.0)
    try:
        assert (await client.post("/alerts", json=one_alert("r1"), headers=AUTH)).status == 200
        await wait_for(lambda: len(sink.to("slack")) == 1, what="first delivery")
        pg_server.pause()
        try:
            r = await client.post("/alerts", json=one_alert("r2"), headers=AUTH)
            assert r.status == 503 and r.headers["Retry-After"]
            assert (await client.get("/-/ready")).status == 503
        finally:
            pg_server.resume()
        # Alertmanager retries; the first retry after the database is back must succeed
        r = await client.post("/alerts", json=one_alert("r2"), headers=AUTH)
        assert r.status == 200, await r.text()
        assert (await client.get("/-/ready")).status == 200
        await wait_for(lambda: len(sink.to("slack")) == 2, what="delivery after the restart")
        await asyncio.sleep(0.5)  # a duplicate would show up now
        slack = [b["message"].rsplit("fingerprint ", 1)[1] for b in sink.to("slack")]
        assert slack == ["r1", "r2"]
    finally:
        await client.close()
        await sink.runner.cleanup()
