"""The chart's HA configuration, run for real: two `tailpage-receiver run` processes started from
the receiver.yaml the chart renders for replicaCount=2 on PostgreSQL, with the files its
Deployment mounts (the chart's Secret, the password Secret, or the URL Secret as environment),
against a real PostgreSQL server (tests/postgres/pg_harness.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helmkit import RELEASE, ROOT, one

# the PostgreSQL harness and the receiver tests' helpers
sys.path.insert(0, str(ROOT / "tests" / "postgres"))
sys.path.insert(0, str(ROOT / "tests" / "receiver"))
import pg_harness
from rcv_helpers import free_port, ready

EXE = Path(sys.executable).parent / "tailpage-receiver"
RECEIVER = f"{RELEASE}-tailpage-receiver"
PAYLOAD = ROOT / "tests" / "receiver" / "payloads" / "firing.json"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[pg_harness.PgServer]:
    yield from pg_harness.serve()


def mount(docs: list[dict[str, Any]], root: Path, password: str) -> Path:
    """Write what the pod would see under /etc/tailpage, at root instead; the config's path."""
    text = one(docs, "ConfigMap", RECEIVER)["data"]["receiver.yaml"]
    secret = next(d for d in docs if d["kind"] == "Secret" and "webhook-token" in d["data"])
    (root / "secrets").mkdir()
    for key, value in secret["data"].items():
        (root / "secrets" / key).write_bytes(base64.b64decode(value))
    (root / "store").mkdir()
    (root / "store" / "password").write_text(password + "\n")  # the password Secret's item
    path = root / "receiver.yaml"
    path.write_text(text.replace("/etc/tailpage/", f"{root}/"))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("form", ["passwordSecret", "urlSecret"])
async def test_two_replicas_from_the_charts_config_share_one_database(
    render, pg_server: pg_harness.PgServer, tmp_path: Path, form: str
):
    got: list[str] = []

    async def channel(request: web.Request) -> web.Response:
        got.append((await request.json())["message"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/slack", channel)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()

    db = pg_server.create_database()
    pg: dict[str, Any] = (
        {"host": "127.0.0.1", "port": pg_server.port, "database": db, "sslmode": "disable",
         "passwordSecret": {"name": "pg-app"}}
        if form == "passwordSecret"
        else {"urlSecret": {"name": "pg-app", "key": "uri"}}
    )
    docs = render({"receiver": {
        "replicaCount": 2,
        "auth": {"bearerToken": "chart-ha-token"},
        "channels": {"slack": {"url": f"json://127.0.0.1:{sink_port}/slack"}},
        "routes": [{"channels": ["slack"]}],
        "store": {"type": "postgresql", "postgresql": pg},
    }})
    assert one(docs, "Deployment", RECEIVER)["spec"]["replicas"] == 2
    config = mount(docs, tmp_path, pg_server.password)
    env = {**os.environ, "TAILPAGE_STORE_URL": pg_server.dsn(db)} if form == "urlSecret" else {
        k: v for k, v in os.environ.items() if k != "TAILPAGE_STORE_URL"}
    token = (tmp_path / "secrets" / "webhook-token").read_text().strip()
    procs, ports, logs = [], [], []
    try:
        for n in range(2):
            ports.append(free_port())
            logs.append(tmp_path / f"r{n}.log")
            with logs[-1].open("wb") as out:
                procs.append(subprocess.Popen(
                    [str(EXE), "run", "--config", str(config), "--listen",
                     f"127.0.0.1:{ports[-1]}"],
                    stdout=out, stderr=subprocess.STDOUT, env=env))
        await asyncio.gather(*(ready(p, pr, log=lg) for p, pr, lg in zip(ports, procs, logs,
                                                                     strict=True)))
        body = json.loads(PAYLOAD.read_text())
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"}
        ) as s:

            async def post(port: int) -> dict[str, int]:
                async with s.post(f"http://127.0.0.1:{port}/alerts", json=body) as r:
                    assert r.status == 200, await r.text()
                    return await r.json()

            # Alertmanager HA peers: the same webhook to both replicas at once
            answers = await asyncio.gather(*(post(p) for p in ports))
        alerts = len(body["alerts"])
        assert sum(a["accepted"] for a in answers) == alerts
        assert sum(a["duplicates"] for a in answers) == alerts
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a second copy would show up now
        # one Alertmanager group, one message (docs/receiver-groups.md), naming each alert
        assert len(got) == 1, got
        assert all(a["labels"]["component"] in got[0] for a in body["alerts"]), got
    finally:
        for pr in procs:
            pr.terminate()
        codes = [pr.wait(15) for pr in procs]
        await runner.cleanup()
        pg_server.drop_database(db)
    assert codes == [0, 0]
    out = "".join(lg.read_text() for lg in logs)
    assert pg_server.password not in out
