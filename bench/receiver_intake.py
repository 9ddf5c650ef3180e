"""Receiver benchmark: webhook intake throughput and accept-to-delivery latency.

    .venv/bin/python bench/receiver_intake.py [--duration 5] [--concurrency 32] [--rate 100]

Same machine, same run, one load generator (aiohttp client on loopback):
1. a bare aiohttp handler that reads the body and answers 200 (the ceiling);
2. `tailpage-receiver run` with SQLite (WAL, synchronous=FULL: every 200 is on disk), each
   webhook a real Alertmanager payload with fresh fingerprints, routed to no channel (intake only);
3. the same with one json:// channel to a local sink, deliveries running alongside;
4. latency: 100 alerts/s (one alert per webhook) for --latency-seconds, time from the 200 to the
   sink receiving the notification; p50/p95/p99/max.
Targets (issue 4): (2) >= half of (1); p99 of (4) < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = json.loads((ROOT / "tests/receiver/payloads/firing.json").read_text())
EXE = Path(sys.executable).parent / "tailpage-receiver"
TOKEN = "bench-token"
BARE = """
import sys
from aiohttp import web
async def h(request):
    await request.read()
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_post("/alerts", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(i: int, alerts: int = 2) -> bytes:
    p = copy.deepcopy(PAYLOAD)
    p["alerts"] = [dict(a, fingerprint=f"b{i:08d}{k}") for k, a in enumerate(p["alerts"][:alerts])]
    return json.dumps(p).encode()


async def wait_ready(port: int, proc: subprocess.Popen, path: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.returncode}")
            try:
                async with s.request("GET" if path.startswith("/-/") else "POST", f"http://127.0.0.1:{port}{path}") as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def load(port: int, duration: float, concurrency: int, offset: int) -> tuple[int, int]:
    """Closed loop: `concurrency` clients post back to back for `duration` s. (ok, errors)"""
    url = f"http://127.0.0.1:{port}/alerts"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bodies = [body(offset + i) for i in range(20000)]
    ok = err = 0
    counter = iter(range(10**9))
    stop = time.perf_counter() + duration
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal ok, err
            while time.perf_counter() < stop:
                i = next(counter)
                async with s.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        err += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, err


def receiver_config(tmp: Path, sink_port: int | None) -> Path:
    cfg: dict = {
        "auth": {"bearer_token": TOKEN},
        "store": f"sqlite:///{tmp}/receiver.db",
        "channels": {},
        "routes": [],
    }
    if sink_port:
        cfg["channels"]["sink"] = {"url": f"json://127.0.0.1:{sink_port}/sink"}
        cfg["routes"] = [{"channels": ["sink"]}]
        cfg["delivery"] = {"poll_interval": "200ms"}
    p = tmp / "receiver.yml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def start_receiver(cfg: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), "--log-level", "WARNING", "run", "--config", str(cfg),
                             "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sink:
    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    async def handle(self, request: web.Request) -> web.Response:
        data = await request.json()
        fp = data["message"].rsplit("fingerprint ", 1)[1]
        self.seen.setdefault(fp, time.time())
        return web.Response(text="ok")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    args = ap.parse_args()

    sink = Sink()
    app = web.Application()
    app.router.add_post("/sink", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    results: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "duration_s": args.duration, "concurrency": args.concurrency,
        "alerts_per_webhook": len(PAYLOAD["alerts"]),
    }

    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE, str(port)])
    try:
        await wait_ready(port, bare, "/alerts")
        ok, err = await load(port, args.duration, args.concurrency, 0)
    finally:
        stop(bare)
    results["bare_webhooks_per_s"] = round(ok / args.duration, 1)

    for name, sp in (("receiver_intake_only", None), ("receiver_with_delivery", sink_port)):
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = start_receiver(receiver_config(Path(tmp), sp), port)
            try:
                await wait_ready(port, proc, "/-/ready")
                ok, err = await load(port, args.duration, args.concurrency, 10**6 if sp else 0)
            finally:
                stop(proc)
            results[f"{name}_webhooks_per_s"] = round(ok / args.duration, 1)
            results[f"{name}_errors"] = err
    results["ratio_intake_only_vs_bare"] = round(
        results["receiver_intake_only_webhooks_per_s"] / results["bare_webhooks_per_s"], 2)  # type: ignore[operator]
    results["ratio_with_delivery_vs_bare"] = round(
        results["receiver_with_delivery_webhooks_per_s"] / results["bare_webhooks_per_s"], 2)  # type: ignore[operator]

    # latency at a fixed rate: one alert per webhook, accept (the 200) -> sink
    sink.seen.clear()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_receiver(receiver_config(Path(tmp), sink_port), port)
        accepted: dict[str, float] = {}
        try:
            await wait_ready(port, proc, "/-/ready")
            n = int(args.rate * args.latency_seconds)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            async with aiohttp.ClientSession() as s:

                async def one(i: int) -> None:
                    b = body(2 * 10**6 + i, alerts=1)
                    async with s.post(f"http://127.0.0.1:{port}/alerts", data=b, headers=headers) as r:
                        if r.status == 200:
                            accepted[f"b{2 * 10**6 + i:08d}0"] = time.time()

                t0 = time.perf_counter()
                tasks = []
                for i in range(n):
                    delay = t0 + i / args.rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(i)))
                await asyncio.gather(*tasks)
            deadline = time.time() + 30
            while time.time() < deadline and not set(accepted) <= set(sink.seen):
                await asyncio.sleep(0.05)
        finally:
            stop(proc)
    lat = sorted(max(0.0, sink.seen[fp] - t) for fp, t in accepted.items() if fp in sink.seen)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [float("nan")] * 99
    results.update({
        "latency_rate_per_s": args.rate, "latency_alerts": len(accepted),
        "latency_delivered": len(lat),
        "latency_p50_ms": round(q[49] * 1000, 1), "latency_p95_ms": round(q[94] * 1000, 1),
        "latency_p99_ms": round(q[98] * 1000, 1), "latency_max_ms": round(lat[-1] * 1000, 1) if lat else None,
    })
    await runner.cleanup()
    print(json.dumps(results, indent=2))
    out = ROOT / "bench/out"
    out.mkdir(exist_ok=True)
    (out / "receiver_intake.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
