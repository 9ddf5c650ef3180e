"""The live HTTP server over real sockets: health, readiness, self-metrics as scraped, OpenMetrics,
gzip, HEAD and 404, and a clean close."""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import socket
import time
import urllib.error
import urllib.request

import pytest
from exporter_helpers import RecordingPipeline, samples, until
from prometheus_client.registry import CollectorRegistry

from exporter.checkpoint import CheckpointStore
from exporter.expose import render
from exporter.server import OPENMETRICS, MetricsServer, SelfCollector, State
from exporter.tail import Input, Settings, Tailer

# never flush the held-back partial line: the checkpoint assertion needs it still pending
SETTINGS = Settings(poll_interval=0.05, partial_flush_timeout=3600.0, rescan_interval=0.3,
                    checkpoint_interval=0.2)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    async def text(self) -> str:
        return self.body.decode()


class Client:
    """urllib against the real socket, from a thread so the loop under test keeps running."""

    def __init__(self, server: MetricsServer) -> None:
        self.base = f"http://127.0.0.1:{server.address[1]}"

    async def get(self, path: str, headers: dict[str, str] | None = None,
                  method: str = "GET") -> Response:
        def fetch() -> Response:
            req = urllib.request.Request(self.base + path, headers=headers or {}, method=method)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return Response(r.status, dict(r.headers), r.read())
            except urllib.error.HTTPError as e:
                return Response(e.code, dict(e.headers), e.read())

        return await asyncio.to_thread(fetch)


def serve(state: State) -> tuple[MetricsServer, Client]:
    server = MetricsServer(state, render, "127.0.0.1", 0)
    return server, Client(server)


async def test_health_ready_and_self_metrics(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    a = logs / "a.log"
    a.write_text("existing\n")  # first start: begins at the end
    tailer = Tailer([Input(str(logs / "*.log"), "end")], SETTINGS, RecordingPipeline(),
                    CheckpointStore(str(tmp_path / "ckpt.json")))
    registry = CollectorRegistry(auto_describe=False)
    state = State(tailer=tailer, registry=registry)
    registry.register(SelfCollector(state))
    server, client = serve(state)

    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 503  # no config / first scan yet
    tailer.start()
    state.config_loaded = True
    assert (await client.get("/-/ready")).status == 200

    started = time.time()
    task = asyncio.create_task(tailer.run())
    try:
        with open(a, "a") as f:
            f.write("one\ntwo\nthr")  # a partial third line: read, but not yet a line
        b = logs / "b.log"
        b.write_text("b1\n")
        await until(lambda: sum(s.lines for s in tailer.stats.values()) == 3, "3 lines read")
        await until(lambda: tailer.checkpoint_ok >= 2, "a periodic checkpoint")
        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        m = samples(await resp.text())
        pa, pb = (("path", str(a)),), (("path", str(b)),)
        assert m[("tailpage_exporter_lines_read_total", pa)] == 2
        assert m[("tailpage_exporter_bytes_read_total", pa)] == len("one\ntwo\nthr")
        assert m[("tailpage_exporter_lines_read_total", pb)] == 1
        assert m[("tailpage_exporter_lag_bytes", pa)] == 0
        assert m[("tailpage_exporter_files_watched", ())] == 2
        assert m[("tailpage_exporter_checkpoint_writes_total", (("result", "success"),))] >= 2
        assert m[("tailpage_exporter_checkpoint_writes_total", (("result", "failure"),))] == 0
        assert 0 <= m[("tailpage_exporter_checkpoint_age_seconds", ())] <= time.time() - started
        assert m[("tailpage_exporter_rotations_total", pa)] == 0
        assert m[("tailpage_exporter_truncations_total", pa)] == 0
        # the checkpoint keeps a's offset before the held-back "thr"
        saved = {e.path: e.offset for e in CheckpointStore(str(tmp_path / "ckpt.json")).load()}
        assert saved[str(a)] == len("existing\none\ntwo\n")

        resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert resp.headers["Content-Type"] == OPENMETRICS
        body = await resp.text()
        assert body.endswith("# EOF\n")
        m = samples(await (await client.get("/metrics")).text())
        assert m[("tailpage_exporter_scrape_duration_seconds", ())] > 0

        # a deleted file is released after the grace period and its series go away
        os.unlink(b)
        await until(lambda: len(tailer.files) == 1, "deleted file released")
        text = await (await client.get("/metrics")).text()
        assert str(b) not in text and str(a) in text

        gz = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        assert gz.headers["Content-Encoding"] == "gzip"
        assert str(a) in gzip.decompress(gz.body).decode()
        head = await client.get("/metrics", method="HEAD")
        assert head.status == 200 and head.body == b"" and int(head.headers["Content-Length"]) > 0
        assert (await client.get("/nope")).status == 404

        state.failed = "RuntimeError"
        assert (await client.get("/-/healthy")).status == 503
        assert (await client.get("/-/ready")).status == 503
    finally:
        tailer.stop()
        await task
        await tailer.close()
        await asyncio.to_thread(server.close)
    with pytest.raises(OSError):  # closed: nobody listens on the port any more
        await client.get("/-/healthy")


async def test_checkpoint_failures_are_counted(tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    tailer = Tailer([Input(str(tmp_path / "*.log"), "end")], SETTINGS, RecordingPipeline(),
                    CheckpointStore(str(tmp_path / "blocker" / "ckpt.json")))
    registry = CollectorRegistry(auto_describe=False)
    state = State(tailer=tailer, registry=registry, config_loaded=True)
    registry.register(SelfCollector(state))
    server, client = serve(state)
    tailer.start()
    await tailer.write_checkpoint()
    try:
        m = samples(await (await client.get("/metrics")).text())
    finally:
        await asyncio.to_thread(server.close)
    assert m[("tailpage_exporter_checkpoint_writes_total", (("result", "failure"),))] == 1
    assert m[("tailpage_exporter_checkpoint_writes_total", (("result", "success"),))] == 0
    assert math.isnan(m[("tailpage_exporter_checkpoint_age_seconds", ())])  # never written


async def test_no_host_listens_on_every_interface(tmp_path):
    """`listen: ":PORT"`: one socket for IPv4 and (where the host has it) IPv6."""
    tailer = Tailer([Input(str(tmp_path / "*.log"), "end")], SETTINGS, RecordingPipeline())
    state = State(tailer=tailer, registry=CollectorRegistry(auto_describe=False))
    server = MetricsServer(state, render, None, 0)
    port = server.address[1]
    hosts = ["127.0.0.1"] + (["[::1]"] if socket.has_ipv6 and server.address[0] == "::" else [])

    def get(host: str) -> int:
        with urllib.request.urlopen(f"http://{host}:{port}/-/healthy", timeout=10) as r:
            return r.status

    try:
        for host in hosts:
            assert await asyncio.to_thread(get, host) == 200, host
    finally:
        await asyncio.to_thread(server.close)
