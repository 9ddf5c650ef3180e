"""Receiver on PostgreSQL: intake throughput (one and two replicas) and delivery latency.

    .venv/bin/python bench/receiver_postgres.py [--duration 5] [--concurrency 32]
        [--latency-seconds 10]

Same machine, same run, same load generator as bench/receiver_intake.py (its helpers):
1. `tailpage-receiver run` on SQLite, intake only (the embedded default, for reference);
2. the same on a local PostgreSQL 15 (tests/postgres/pg_harness: initdb on loopback; fsync=off,
   so this measures the receiver's work, not a disk);
3. two replicas on that database, every webhook posted to both (what Alertmanager HA peers do):
   distinct webhooks/s, half of the stores being duplicates skipped by the unique constraint;
4. latency: 100 alerts/s (one alert per webhook, to both replicas) for --latency-seconds, from
   the 200 to the json:// sink receiving it, and that each alert arrived exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "postgres"))
import pg_harness  # noqa: E402
from receiver_intake import (  # noqa: E402
    TOKEN,
    body,
    free_port,
    load,
    machine,
    start_receiver,
    stop,
    wait_ready,
)


def config(tmp: Path, name: str, store: str, sink_port: int | None) -> Path:
    cfg: dict = {"auth": {"bearer_token": TOKEN}, "store": store, "channels": {}, "routes": []}
    if sink_port:
        cfg["channels"]["sink"] = {"url": f"json://127.0.0.1:{sink_port}/sink"}
        cfg["routes"] = [{"channels": ["sink"]}]
        cfg["delivery"] = {"poll_interval": "200ms"}
    p = tmp / f"{name}.yml"
    p.write_text(yaml.safe_dump(cfg))
    return p


async def throughput(cfgs: list[Path], duration: float, concurrency: int, offset: int) -> float:
    """Distinct webhooks/s when each one is posted to every replica."""
    ports = [free_port() for _ in cfgs]
    procs = [start_receiver(c, p) for c, p in zip(cfgs, ports, strict=True)]
    try:
        await asyncio.gather(
            *(wait_ready(p, pr, "/-/ready") for p, pr in zip(ports, procs, strict=True))
        )
        # the same body sequence (same offset) to every replica at once: HA peers
        results = await asyncio.gather(*(load(p, duration, concurrency, offset) for p in ports))
    finally:
        for pr in procs:
            stop(pr)
    errors = sum(e for _, e in results)
    if errors:
        raise RuntimeError(f"{errors} webhooks failed")
    return min(ok for ok, _ in results) / duration


async def latency(cfgs: list[Path], seconds: float, sink_port: int) -> dict[str, object]:
    seen: dict[str, list[float]] = {}

    async def handle(request: web.Request) -> web.Response:
        fp = (await request.json())["message"].rsplit("fingerprint ", 1)[1]
        seen.setdefault(fp, []).append(time.time())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/sink", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    ports = [free_port() for _ in cfgs]
    procs = [start_receiver(c, p) for c, p in zip(cfgs, ports, strict=True)]
    accepted: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        await asyncio.gather(
            *(wait_ready(p, pr, "/-/ready") for p, pr in zip(ports, procs, strict=True))
        )
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> None:
                data = body(900_000_000 + i, alerts=1)
                fp = json.loads(data)["alerts"][0]["fingerprint"]

                async def post(port: int) -> None:
                    async with s.post(
                        f"http://127.0.0.1:{port}/alerts", data=data, headers=headers
                    ) as r:
                        if r.status == 200:
                            accepted.setdefault(fp, time.time())

                await asyncio.gather(*(post(p) for p in ports))

            tasks, t0, n = [], time.perf_counter(), int(seconds * 100)
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / 100 - time.perf_counter()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)
            deadline = time.monotonic() + 30
            while len(seen) < len(accepted) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # a duplicate would show up now
    finally:
        for pr in procs:
            stop(pr)
        await runner.cleanup()
    ms = sorted((seen[fp][0] - accepted[fp]) * 1000 for fp in accepted if fp in seen)
    q = statistics.quantiles(ms, n=100)
    copies = Counter(len(v) for v in seen.values())
    return {
        "alerts_accepted": len(accepted),
        "delivered_once": copies.get(1, 0),
        "delivered_more_than_once": sum(n for k, n in copies.items() if k > 1),
        "missing": len(set(accepted) - set(seen)),
        "p50_ms": round(q[49], 1),
        "p95_ms": round(q[94], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(ms[-1], 1),
    }


async def main(args: argparse.Namespace) -> None:
    out: dict[str, object] = machine()
    server = pg_harness.start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="tailpage-bench-") as d:
            tmp = Path(d)
            sqlite = config(tmp, "sqlite", f"sqlite:///{tmp}/receiver.db", None)
            one = config(tmp, "pg1", server.dsn(server.create_database()), None)
            db2 = server.create_database()
            two = [config(tmp, f"pg2{n}", server.dsn(db2), None) for n in "ab"]
            dur, conc = args.duration, args.concurrency
            out["sqlite_one_replica_webhooks_per_s"] = round(
                await throughput([sqlite], dur, conc, 0)
            )
            out["postgresql_one_replica_webhooks_per_s"] = round(
                await throughput([one], dur, conc, 1_000_000)
            )
            out["postgresql_two_replicas_same_webhooks_to_both_per_s"] = round(
                await throughput(two, dur, conc, 2_000_000)
            )
            sink_port = free_port()
            db3 = server.create_database()
            lat = [config(tmp, f"pg3{n}", server.dsn(db3), sink_port) for n in "ab"]
            out["two_replicas_100_alerts_per_s_to_both"] = await latency(
                lat, args.latency_seconds, sink_port
            )
    finally:
        server.stop()
    out["webhook"] = "a real Alertmanager payload, 2 alerts (1 in the latency run)"
    print(json.dumps(out, indent=2))


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    asyncio.run(main(ap.parse_args()))


if __name__ == "__main__":
    cli()
