"""Receiver benchmark: one Alertmanager group of 10,000 alerts in one webhook (issue 14).

    .venv/bin/python bench/receiver_big_webhook.py [--alerts 10000] [--dir ./var]

1. Where the time and memory go, in this process, stage by stage: gunzip, orjson, fastjsonschema,
   routing + building the store's rows, SQLite store.ingest (a fresh file, synchronous=FULL);
   with --postgres also PostgreSQL store.ingest of the same rows, new and then duplicates.
2. A real `tailpage-receiver run` with the embedded defaults (no --config: SQLite in ./var, the
   console channel, the default max_body_bytes), fresh per variant: the accept time of the
   webhook (POST to 200, client side) and the process's peak RSS (VmHWM) before and after it.
   Variants: plain JSON; the same gzip-compressed; the plain one again (all duplicates);
   with --postgres, plain and duplicate on a local PostgreSQL (tests/postgres/pg_harness).
Alertmanager's webhook timeout is its group_interval (default 5m, never under 10 s): the accept
time must stay well inside 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "tailpage-receiver"


def big_webhook(n: int, prefix: str = "big", status: str = "firing") -> dict[str, Any]:
    """An Alertmanager v4 webhook of `n` alerts with typical Kubernetes labels (12) and
    annotations (summary, description, runbook_url): ~1.1 KB of JSON per alert."""
    alerts = []
    for i in range(n):
        pod = f"checkout-7d9f8b6c4-{i:05d}"
        alerts.append(
            {
                "status": status,
                "labels": {
                    "alertname": "KubePodCrashLooping",
                    "severity": "critical",
                    "namespace": "shop",
                    "cluster": "prod-eu-west-1",
                    "region": "eu-west-1",
                    "job": "kube-state-metrics",
                    "instance": f"10.12.{i // 250 % 256}.{i % 250}:8080",
                    "pod": pod,
                    "container": "checkout",
                    "service": "kube-state-metrics",
                    "team": "payments",
                    "prometheus": "monitoring/k8s",
                },
                "annotations": {
                    "summary": f"Pod shop/{pod} is crash looping",
                    "description": (
                        f"Pod shop/{pod} (container checkout) is in waiting state (reason: "
                        "CrashLoopBackOff) and has restarted 12 times in the last 15 minutes. "
                        "Check its logs and recent deploys."
                    ),
                    "runbook_url": "https://runbooks.example.com/kubernetes/kubepodcrashlooping",
                },
                "startsAt": "2026-01-01T12:00:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": (
                    "http://prometheus-k8s-0.prometheus-operated.monitoring.svc:9090/graph?"
                    "g0.expr=max_over_time%28kube_pod_container_status_waiting_reason%7Breason"
                    "%3D%22CrashLoopBackOff%22%2Cjob%3D%22kube-state-metrics%22%7D%5B5m%5D%29"
                    "+%3E%3D+1&g0.tab=1"
                ),
                "fingerprint": f"{prefix}{i:012x}",
            }
        )
    return {
        "receiver": "tailpage",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {"alertname": "KubePodCrashLooping", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="KubePodCrashLooping"}',
        "truncatedAlerts": 0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak_rss() -> int:
    """Reset this process's VmHWM to its VmRSS (Linux: clear_refs 5); the current RSS, KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_kib(os.getpid())["VmRSS"]


# -- 1. stages, in process ----------------------------------------------------------------------


def stages(body: bytes, directory: Path, postgres_dsn: str | None) -> dict[str, Any]:
    from receiver import config as config_mod
    from receiver.intake import _validate, build_group
    from receiver.store import IncomingGroup
    from receiver.store.postgresql import PostgreSQLStore
    from receiver.store.sqlite import SQLiteStore

    cfg = config_mod.no_config_defaults()
    packed = gzip.compress(body, 6)
    out: dict[str, Any] = {}

    def build(data: dict[str, Any]) -> IncomingGroup:
        return build_group(cfg, data)  # what intake.handle_alerts does with a webhook

    def step(name: str, fn: Callable[[], Any]) -> Any:
        # resident memory, not tracemalloc: orjson's parser reserves a large buffer it touches
        # only in part, and tracemalloc counts all of it (and slows the stage several times)
        before = reset_peak_rss()
        t = time.perf_counter()
        result = fn()
        out[f"{name}_ms"] = round((time.perf_counter() - t) * 1000, 1)
        peak = rss_kib(os.getpid())["VmHWM"]
        out[f"{name}_peak_rss_growth_mib"] = round((peak - before) / 1024, 1)
        return result

    step("gunzip", lambda: gzip.decompress(packed))
    data = step("orjson", lambda: orjson.loads(body))
    step("validate", lambda: _validate(data))
    alerts = step("route_and_build", lambda: build(data))

    async def ingest() -> None:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            store = SQLiteStore(f"{tmp}/r.db")
            await store.open()
            before = reset_peak_rss()
            t = time.perf_counter()
            res = await store.ingest(alerts, time.time())
            out["store_ingest_ms"] = round((time.perf_counter() - t) * 1000, 1)
            peak = rss_kib(os.getpid())["VmHWM"]
            out["store_ingest_peak_rss_growth_mib"] = round((peak - before) / 1024, 1)
            out["store_ingest_accepted"] = len(res.accepted)
            await store.close()

    async def ingest_postgresql(dsn: str) -> None:
        store = PostgreSQLStore(dsn)
        await store.open()
        t = time.perf_counter()
        res = await store.ingest(alerts, time.time())
        out["postgresql_store_ingest_ms"] = round((time.perf_counter() - t) * 1000, 1)
        t = time.perf_counter()
        dup = await store.ingest(alerts, time.time())
        out["postgresql_store_ingest_duplicates_ms"] = round((time.perf_counter() - t) * 1000, 1)
        assert len(res.accepted) == len(dup.duplicates) == len(alerts.alerts)
        await store.close()

    asyncio.run(ingest())
    if postgres_dsn:
        asyncio.run(ingest_postgresql(postgres_dsn))
    out["note"] = "*_peak_rss_growth_mib: the stage's peak resident set over the one before it"
    return out


# -- 2. a real receiver process -------------------------------------------------------------------


async def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, float, str]:
    url = f"http://127.0.0.1:{port}/alerts"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        t = time.perf_counter()
        async with s.post(url, data=body, headers=headers) as r:
            text = await r.text()
        return r.status, time.perf_counter() - t, text


async def wait_ready(port: int, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"receiver exited: {proc.returncode}")
            try:
                async with s.get(f"http://127.0.0.1:{port}/-/ready") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("receiver did not start")


def start_receiver(cwd: Path, port: int, store: str | None) -> subprocess.Popen:
    """`tailpage-receiver run` with no --config (the embedded defaults), or with the embedded
    defaults' channel and route on another store."""
    cmd = [str(EXE), "--log-level", "WARNING", "run", "--listen", f"127.0.0.1:{port}"]
    if store:
        cfg = {
            "store": store,
            "channels": {"console": {"url": "console://"}},
            "routes": [{"channels": ["console"]}],
        }
        (cwd / "receiver.yml").write_text(json.dumps(cfg))  # JSON is YAML
        cmd += ["--config", str(cwd / "receiver.yml")]
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.DEVNULL,  # the console channel prints every alert
        stderr=subprocess.DEVNULL,
    )


async def process_run(
    body: bytes, variants: list[str], directory: Path, store: str | None = None
) -> dict[str, Any]:
    """One fresh receiver (embedded defaults, cwd a temporary directory); `variants` posted in
    order: plain | gzip | duplicate (plain again)."""
    packed = gzip.compress(body, 6)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        port = free_port()
        proc = start_receiver(Path(tmp), port, store)
        try:
            await wait_ready(port, proc)
            out["rss_before_mib"] = round(rss_kib(proc.pid)["VmRSS"] / 1024, 1)
            for v in variants:
                headers = {"Content-Type": "application/json"}
                data = body
                if v == "gzip":
                    headers["Content-Encoding"] = "gzip"
                    data = packed
                status, seconds, text = await post(port, data, headers)
                mem = rss_kib(proc.pid)
                out[v] = {
                    "status": status,
                    "answer": json.loads(text) if status == 200 else text[:200],
                    "bytes_sent": len(data),
                    "accept_s": round(seconds, 3),
                    "peak_rss_mib": round(mem["VmHWM"] / 1024, 1),
                }
        finally:
            proc.terminate()
            proc.wait(60)
        out["exit_status"] = proc.returncode
    return out


def run(n: int, directory: Path, server: Any) -> dict[str, Any]:
    plain = json.dumps(big_webhook(n)).encode()
    results: dict[str, Any] = {
        "machine": machine(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "alerts": n,
        "body_mib": round(len(plain) / 2**20, 2),
        "bytes_per_alert": len(plain) // n,
        "gzip_mib": round(len(gzip.compress(plain, 6)) / 2**20, 2),
        "stages_in_process": stages(
            plain, directory, server.dsn(server.create_database()) if server else None
        ),
    }
    fresh = json.dumps(big_webhook(n, prefix="gz")).encode()
    results["receiver_plain_then_duplicate"] = asyncio.run(
        process_run(plain, ["plain", "duplicate"], directory)
    )
    results["receiver_gzip"] = asyncio.run(process_run(fresh, ["gzip"], directory))
    if server is not None:
        dsn = server.dsn(server.create_database())
        pg_body = json.dumps(big_webhook(n, prefix="pg")).encode()
        results["receiver_postgresql_plain_then_duplicate"] = asyncio.run(
            process_run(pg_body, ["plain", "duplicate"], directory, dsn)
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=10_000)
    ap.add_argument("--dir", default=str(ROOT / "var"), help="SQLite files go here (real disk)")
    ap.add_argument("--postgres", action="store_true", help="also a receiver on PostgreSQL 15")
    args = ap.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    server = None
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests" / "postgres"))
        import pg_harness

        server = pg_harness.start_server()  # initdb on loopback, fsync=off (as in the tests)
    try:
        results = run(args.alerts, directory, server)
    finally:
        if server is not None:
            server.stop()
    results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    out = ROOT / "bench/out"
    out.mkdir(exist_ok=True)
    (out / "receiver_big_webhook.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
