"""Expose stage (live mode): the aiohttp app serving /metrics, /-/healthy and /-/ready.

The line metrics come from the pipeline's collector; the tailer's own health (files, offsets,
rotations, checkpoints) from SelfCollector below, read straight from the tailer's plain state at
scrape time so there is nothing to keep in sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.tail import Tailer

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass
class State:
    """What the app object carries between requests; the only mutable state outside the tailer."""

    tailer: Tailer
    registry: CollectorRegistry
    config_loaded: bool = False
    scrape_duration: float = 0.0
    failed: str | None = None  # why the tailing task died, if it did: /-/healthy turns 503


# (counter name without _total, help, PathStats field)
PER_PATH_COUNTERS = (
    ("tailpage_exporter_lines_read", "Lines read per followed file.", "lines"),
    ("tailpage_exporter_bytes_read", "Bytes read per followed file.", "bytes"),
    ("tailpage_exporter_rotations", "Rename-and-create rotations seen per path.", "rotations"),
    ("tailpage_exporter_truncations", "Truncations (copytruncate) seen per path.", "truncations"),
)


class SelfCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        t = self.state.tailer
        stats = sorted(t.stats.items())
        for name, doc, attr in PER_PATH_COUNTERS:
            fam = CounterMetricFamily(name, doc, labels=["path"])
            for path, s in stats:
                fam.add_metric([path], getattr(s, attr))
            yield fam
        lag = GaugeMetricFamily("tailpage_exporter_lag_bytes",
                                "File size minus read offset per followed file.", labels=["path"])
        for path, n in sorted(t.lag().items()):
            lag.add_metric([path], n)
        watched = GaugeMetricFamily("tailpage_exporter_files_watched",
                                    "Files currently followed (including rotated ones draining).",
                                    value=len(t.files))
        writes = CounterMetricFamily("tailpage_exporter_checkpoint_writes",
                                     "Checkpoint writes by result.", labels=["result"])
        writes.add_metric(["success"], t.checkpoint_ok)
        writes.add_metric(["failure"], t.checkpoint_failed)
        age = GaugeMetricFamily(
            "tailpage_exporter_checkpoint_age_seconds",
            "Seconds since the last successful checkpoint write (NaN before the first).",
            value=time.time() - t.last_checkpoint if t.last_checkpoint else float("nan"))
        scrape = GaugeMetricFamily("tailpage_exporter_scrape_duration_seconds",
                                   "Time spent rendering the previous scrape.",
                                   value=self.state.scrape_duration)
        yield from (lag, watched, writes, age, scrape)


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def make_app(state: State, render: Callable[[CollectorRegistry, bool], bytes]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        om = wants_openmetrics(request.headers.get("Accept", ""))
        t0 = time.perf_counter()
        body = render(state.registry, om)
        state.scrape_duration = time.perf_counter() - t0
        state.tailer.mark_scraped()  # no await since render: the offsets match the counts
        resp = web.Response(body=body, headers={"Content-Type": OPENMETRICS if om else TEXT})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            resp.enable_compression()
        return resp

    async def healthy(request: web.Request) -> web.Response:
        if state.failed:
            return web.Response(status=503, text=f"unhealthy: {state.failed}\n")
        return web.Response(text="healthy\n")

    async def ready(request: web.Request) -> web.Response:
        if state.config_loaded and state.tailer.ready and not state.failed:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app
