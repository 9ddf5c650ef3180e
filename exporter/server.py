"""Expose stage (live mode): the HTTP server for /metrics, /-/healthy and /-/ready.

The line metrics come from the pipeline's collector; the tailer's own health (files, offsets,
rotations, checkpoints) from SelfCollector below, read straight from the tailer's plain state at
scrape time so there is nothing to keep in sync.

The server is the standard library's (already loaded by prometheus_client, so it costs no memory
aiohttp would: see docs/exporter-sidecar.md): one thread accepts, a thread per connection parses
the request, and every answer is computed on the event loop (`respond`), so a scrape never sees
the aggregate half-updated and `mark_scraped` records exactly the offsets the rendered counts
cover.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.tail import Tailer

log = logging.getLogger(__name__)

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PLAIN = "text/plain; charset=utf-8"
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request (slow or stuck clients)
ANSWER_TIMEOUT = 30.0  # seconds a request waits for the loop before a 503


@dataclass
class State:
    """What the server carries between requests; the only mutable state outside the tailer."""

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


def path_label(path: str) -> str:
    """A path as a label value: a file name that is not UTF-8 (held as surrogates, which no
    exposition can encode) with its bad bytes as `\\xff`; "replace" would give two such names
    one series."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class SelfCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        t = self.state.tailer
        stats = sorted(t.stats.items())
        for name, doc, attr in PER_PATH_COUNTERS:
            fam = CounterMetricFamily(name, doc, labels=["path"])
            for path, s in stats:
                fam.add_metric([path_label(path)], getattr(s, attr))
            yield fam
        lag = GaugeMetricFamily("tailpage_exporter_lag_bytes",
                                "File size minus read offset per followed file.", labels=["path"])
        for path, n in sorted(t.lag().items()):
            lag.add_metric([path_label(path)], n)
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


Answer = tuple[int, str, bytes]  # status, content type, body
Render = Callable[[CollectorRegistry, bool], bytes]


def respond(state: State, render: Render, path: str, accept: str) -> Answer:
    """The answer to GET `path`. Runs on the event loop, never in the server's threads."""
    if path == "/metrics":
        om = wants_openmetrics(accept)
        t0 = time.perf_counter()
        body = render(state.registry, om)
        state.scrape_duration = time.perf_counter() - t0
        state.tailer.mark_scraped()  # same loop step as render: the offsets match the counts
        return 200, OPENMETRICS if om else TEXT, body
    if path == "/-/healthy":
        if state.failed:
            return 503, PLAIN, f"unhealthy: {state.failed}\n".encode()
        return 200, PLAIN, b"healthy\n"
    if path == "/-/ready":
        if state.config_loaded and state.tailer.ready and not state.failed:
            return 200, PLAIN, b"ready\n"
        return 503, PLAIN, b"not ready\n"
    return 404, PLAIN, b"not found\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        srv = self.server
        path = self.path.partition("?")[0]
        accept = self.headers.get("Accept", "")
        fut: Future[Answer] = Future()

        def on_loop() -> None:
            try:
                fut.set_result(srv.answer(path, accept))
            except Exception as e:  # a bug in a collector: a 500, and the loop lives on
                log.exception("answering %s failed", path)
                fut.set_exception(e)

        try:
            srv.loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # the loop is closed: we are exiting
            fut.set_result((503, PLAIN, b"shutting down\n"))
        try:
            status, ctype, body = fut.result(ANSWER_TIMEOUT)
        except TimeoutError:
            status, ctype, body = 503, PLAIN, b"overloaded: no answer in time\n"
        except Exception:
            status, ctype, body = 500, PLAIN, b"internal error (see the exporter's log)\n"
        if status == 200 and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            encoding = "gzip"
        else:
            encoding = None
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # no access log: Prometheus and the kubelet's probes would fill it

    def log_error(self, format: str, *args: object) -> None:
        log.debug("http: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not hold up the exit

    def __init__(self, host: str | None, port: int, loop: asyncio.AbstractEventLoop,
                 answer: Callable[[str, str], Answer]) -> None:
        # No host: every interface, IPv4 and IPv6 on one socket where the host has IPv6.
        self.dual = host is None and socket.has_ipv6
        if self.dual or (host and ":" in host):
            self.address_family = socket.AF_INET6
        self.loop, self.answer = loop, answer
        super().__init__(("::" if self.dual else host or "", port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # e.g. the client hung up before its answer was written: not worth a traceback
        log.debug("http: connection from %s failed", client_address, exc_info=True)

    def server_bind(self) -> None:
        if self.dual:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class MetricsServer:
    """Serves the State over HTTP in a thread that blocks in accept() while nobody connects."""

    def __init__(self, state: State, render: Render, host: str | None, port: int) -> None:
        def answer(path: str, accept: str) -> Answer:
            return respond(state, render, path, accept)

        loop = asyncio.get_running_loop()
        try:  # binds now: OSError when it cannot
            self._server = _Server(host, port, loop, answer)
        except OSError:
            if host is not None or not socket.has_ipv6:
                raise
            self._server = _Server("0.0.0.0", port, loop, answer)  # IPv6 disabled on this host
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _serve(self) -> None:
        # handle_request() blocks in select() with no timeout: no wake-up while idle.
        while not self._stopping:
            self._server.handle_request()

    def close(self) -> None:
        """Stop accepting (requests being answered finish on their own threads) and unbind."""
        self._stopping = True
        # wakes the select() of the accepting thread; accept() then fails and it returns
        with contextlib.suppress(OSError):
            self._server.socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._server.server_close()
