"""The end-to-end harness: real processes on loopback and the stand-ins they deliver to.

Everything here is plain helpers; conftest.py turns them into fixtures with finalizers.
Every process runs in its own session (process group) so a finalizer can kill it and its
children even when a test fails half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiosmtpd.smtp import SMTP

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RULES_GLOB = str(REPO / "rules" / "*.yml")
TOKEN = "e2e-bearer-token-7f3a"  # the receiver's webhook token in every e2e config
CHANNELS = ("pagerduty", "sms", "slack", "email")


def free_port() -> int:
    """A port the kernel just handed out; programs that cannot bind :0 themselves get it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.2,
               what: str = "") -> Any:
    """Poll pred until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last_exc, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}: {last_exc or ''}")


# --------------------------------------------------------------------------------------------
# HTTP (urllib: the tests must not depend on the code under test's client)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str, timeout: float = 10, headers: dict | None = None) -> Any:
    status, body = http("GET", url, headers=headers, timeout=timeout)
    if status != 200:
        raise ValueError(f"GET {url} -> {status} {body[:200]!r}")
    return json.loads(body)


def post_json(url: str, payload: Any, headers: dict | None = None, timeout: float = 10
              ) -> tuple[int, bytes]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return http("POST", url, json.dumps(payload).encode(), hdrs, timeout=timeout)


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text exposition -> {(name, labels): value} (via prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric_sum(metrics: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    status, body = http("GET", url)
    if status != 200:
        raise ValueError(f"scrape {url} -> {status}")
    return parse_metrics(body.decode())


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> Proc:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} already running"
        self.starts += 1
        logf = self.log.open("ab")
        logf.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
        logf.flush()
        self.popen = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.cwd, start_new_session=True,
        )
        logf.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill9(self) -> None:
        """SIGKILL the whole process group and reap it: the crash drills' hammer."""
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; always kills the group."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        return self.popen.returncode

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class ProcGroup:
    """Owns every process a fixture started; `close()` kills them all (also on failure)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []

    def add(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        p = Proc(name, argv, self.root / f"{name}.log", env=env, cwd=self.root)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop(grace=3)

    def dump_logs(self) -> str:
        return "\n".join(f"----- {p.name} (last lines) -----\n{p.tail()}" for p in self.procs)


def wait_ready(proc: Proc, url: str, timeout: float = 30) -> None:
    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            return http("GET", url, timeout=2)[0] == 200
        except (OSError, urllib.error.URLError):
            return False

    wait_until(ready, timeout, what=f"{proc.name} ready at {url}")


# --------------------------------------------------------------------------------------------
# Stand-ins for Slack, SMS, PagerDuty (apprise json://) and email (aiosmtpd)


@dataclass
class Note:
    """One notification as a channel received it."""
    channel: str
    title: str
    body: str
    at: float
    html: str = ""
    raw: Any = None

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.body}"


class Sinks:
    """A private event loop in a thread serving one HTTP stand-in per channel plus an SMTP server.

    Each HTTP channel has its own port so one can be made to fail (HTTP 500) or disappear
    (connection refused) while the others keep working.
    """

    def __init__(self, http_channels: Iterable[str] = ("pagerduty", "sms", "slack")) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="e2e-sinks", daemon=True)
        self.thread.start()
        self.notes: list[Note] = []
        self.lock = threading.Lock()
        self.mode: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self.hits: dict[str, int] = {}  # requests per channel, whatever the answer
        self._sites: dict[str, web.TCPSite] = {}
        self._runners: dict[str, web.AppRunner] = {}
        for ch in http_channels:
            self.mode[ch] = "ok"
            self.hits[ch] = 0
            self._call(self._start_http(ch))
        self.hits["email"] = 0
        self._smtp = self._call(self._start_smtp())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    async def _start_http(self, ch: str) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.hits[ch] += 1
            raw = await request.read()
            if self.mode[ch] == "fail500":
                return web.Response(status=500, text="stand-in is failing on purpose")
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"title": "", "message": raw.decode(errors="replace")}
            with self.lock:
                self.notes.append(Note(ch, str(doc.get("title", "")), str(doc.get("message", "")),
                                       time.time(), raw=doc))
            return web.Response(text="ok")

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.ports.get(ch, 0), reuse_address=True)
        await site.start()
        self.ports[ch] = site._server.sockets[0].getsockname()[1]
        self._runners[ch], self._sites[ch] = runner, site

    async def _stop_http(self, ch: str) -> None:
        await self._runners[ch].cleanup()  # closes the listening socket and open connections

    async def _start_smtp(self) -> asyncio.Server:
        sinks = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # aiosmtpd hook
                sinks.hits["email"] += 1
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                text = msg.get_body(("plain",))
                html = msg.get_body(("html",))
                with sinks.lock:
                    sinks.notes.append(Note(
                        "email", str(msg["subject"] or ""),
                        text.get_content() if text else "", time.time(),
                        html=html.get_content() if html else "", raw=envelope.rcpt_tos))
                return "250 OK"

        server = await self.loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", 0)
        self.ports["email"] = server.sockets[0].getsockname()[1]
        return server

    # -- control --------------------------------------------------------------------------

    def set_mode(self, ch: str, mode: str) -> None:
        """ok | fail500 | down (listening socket closed: connection refused)."""
        old = self.mode[ch]
        if mode == old:
            return
        if old == "down":
            self._call(self._start_http(ch))
        if mode == "down":
            self._call(self._stop_http(ch))
        self.mode[ch] = mode

    def urls(self) -> dict[str, str]:
        """apprise URLs for the receiver's `channels:`."""
        out = {ch: f"json://127.0.0.1:{self.ports[ch]}/{ch}" for ch in self.ports if ch != "email"}
        out["email"] = (f"mailto://127.0.0.1:{self.ports['email']}"
                        "?from=tailpage@example.com&to=oncall@example.com")
        return out

    def received(self, channel: str | None = None, containing: str | None = None) -> list[Note]:
        with self.lock:
            notes = list(self.notes)
        return [n for n in notes
                if (channel is None or n.channel == channel)
                and (containing is None or containing in n.text or containing in n.html)]

    def clear(self) -> None:
        with self.lock:
            self.notes.clear()

    def close(self) -> None:
        for ch in list(self._runners):
            if self.mode[ch] != "down":
                with contextlib.suppress(Exception):
                    self._call(self._stop_http(ch))
        self._smtp.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Configs and launchers for the four programs


def write_yaml(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def receiver_config(root: Path, sinks: Sinks, *, port: int, escalate_after: str = "1h",
                    extra_routes: list[dict] | None = None, delivery: dict | None = None,
                    db: str = "receiver.db") -> Path:
    """Routes as issue 4 shows them, with the escalation delay shortened for the tests.

    Generous rate limits: the drills count every single notification, so none may be folded
    into a digest.
    """
    urls = sinks.urls()
    channels = {ch: {"url": urls[ch], "kind": ch, "rate_limit": {"burst": 100000, "per": "1s"}}
                for ch in CHANNELS}
    routes = [*(extra_routes or []),
              {"match": {"severity": "critical"}, "channels": list(CHANNELS),
               "escalate": [{"after": escalate_after, "channels": ["sms", "email"]}]},
              {"match": {"severity": "high"}, "channels": ["slack", "email"]},
              {"match": {"severity": "medium"}, "channels": ["slack"]}]
    doc = {
        "listen": f"127.0.0.1:{port}",
        "store": f"sqlite:///{root / db}",
        "auth": {"bearer_token": TOKEN},
        "channels": channels,
        "routes": routes,
        "delivery": {"poll_interval": "200ms", "backoff_initial": "200ms", "backoff_max": "1s",
                     "lease": "5s", "timeout": "5s", **(delivery or {})},
        "escalation": {"poll_interval": "200ms"},
    }
    return write_yaml(root / "receiver.yml", doc)


@dataclass
class Receiver:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self.proc.start()
        wait_ready(self.proc, self.url + "/-/ready")
        return self

    def post(self, payload: Any, token: str | None = TOKEN, timeout: float = 10
             ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return post_json(self.url + "/alerts", payload, headers, timeout=timeout)

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        return scrape(self.url + "/metrics")

    def alerts(self) -> Any:
        return get_json(self.url + "/api/v1/alerts", headers={"Authorization": f"Bearer {TOKEN}"})

    def ack(self, fingerprint: str, who: str = "e2e-oncall") -> tuple[int, bytes]:
        return post_json(f"{self.url}/api/v1/alerts/{fingerprint}/ack", {"by": who},
                         {"Authorization": f"Bearer {TOKEN}"})


def start_receiver(group: ProcGroup, sinks: Sinks, name: str = "receiver", **cfg: Any) -> Receiver:
    root = group.root / name
    root.mkdir(exist_ok=True)
    port = free_port()
    conf = receiver_config(root, sinks, port=port, **cfg)
    proc = group.add(name, [str(BIN / "tailpage-receiver"), "run", "--config", str(conf),
                            "--listen", f"127.0.0.1:{port}"])
    return Receiver(proc, port).start()


@dataclass
class Exporter:
    proc: Proc
    port: int
    logfile: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Exporter:
        self.proc.start()
        wait_ready(self.proc, self.url + "/-/ready")
        return self

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        return scrape(self.url + "/metrics")


def start_exporter(group: ProcGroup, logfile: Path, name: str = "exporter",
                   fmt: str = "json", checkpoint_interval: str = "1s") -> Exporter:
    root = group.root / name
    root.mkdir(exist_ok=True)
    port = free_port()
    conf = write_yaml(root / "exporter.yml", {
        "listen": f"127.0.0.1:{port}",
        "inputs": [{"path": str(logfile), "format": fmt, "start_at": "beginning"}],
        "checkpoint": {"path": str(root / "checkpoints.json"), "interval": checkpoint_interval},
        "tail": {"poll_interval": "100ms", "partial_flush_timeout": "2s",
                 "rescan_interval": "500ms"},
    })
    proc = group.add(name, [str(BIN / "tailpage-exporter"), "run", "--config", str(conf),
                            "--listen", f"127.0.0.1:{port}"])
    return Exporter(proc, port, logfile).start()


@dataclass
class Prometheus:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr})
        doc = get_json(f"{self.url}/api/v1/query?{q}")
        return doc["data"]["result"]

    def alerts(self) -> list[dict]:
        return get_json(self.url + "/api/v1/alerts")["data"]["alerts"]


def start_prometheus(group: ProcGroup, exporter_port: int, am_ports: Iterable[int] = (),
                     name: str = "prometheus") -> Prometheus:
    """Debian's Prometheus, scraping every second and loading the repo's rules/*.yml unchanged."""
    root = group.root / name
    root.mkdir(exist_ok=True)
    port = free_port()
    doc: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [RULES_GLOB],
        "scrape_configs": [{
            "job_name": "app",
            "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"],
                                "labels": {"namespace": "e2e", "pod": "app-0"}}],
        }],
    }
    if am_ports:
        doc["alerting"] = {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{p}" for p in am_ports]}]}]}
    conf = write_yaml(root / "prometheus.yml", doc)
    proc = group.add(name, [
        "prometheus", f"--config.file={conf}", f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ])
    proc.start()
    wait_ready(proc, f"http://127.0.0.1:{port}/-/ready")
    return Prometheus(proc, port)


@dataclass
class Alertmanager:
    proc: Proc
    port: int
    cluster_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post_alerts(self, alerts: list[dict]) -> None:
        status, body = post_json(self.url + "/api/v2/alerts", alerts)
        assert status == 200, f"alertmanager refused alerts: {status} {body[:300]!r}"

    def status(self) -> Any:
        return get_json(self.url + "/api/v2/status")


def alertmanager_config(root: Path, receiver_port: int,
                        group_by: Iterable[str] = ("alertname", "namespace", "component")) -> Path:
    return write_yaml(root / "alertmanager.yml", {
        "route": {
            "receiver": "tailpage",
            "group_by": list(group_by),
            "group_wait": "1s", "group_interval": "1s", "repeat_interval": "24h",
        },
        "receivers": [{
            "name": "tailpage",
            "webhook_configs": [{
                "url": f"http://127.0.0.1:{receiver_port}/alerts",
                "send_resolved": True,
                "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}},
            }],
        }],
    })


def start_alertmanager(group: ProcGroup, receiver_port: int, name: str = "alertmanager",
                       cluster_port: int | None = None, peers: Iterable[int] = (),
                       extra: Iterable[str] = (),
                       group_by: Iterable[str] = ("alertname", "namespace", "component"),
                       ) -> Alertmanager:
    """Debian's Alertmanager 0.25; clustering off unless cluster_port is given (HA drill)."""
    root = group.root / name
    root.mkdir(exist_ok=True)
    port = free_port()
    conf = alertmanager_config(root, receiver_port, group_by)
    argv = ["prometheus-alertmanager", f"--config.file={conf}", f"--storage.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    if cluster_port is None:
        argv.append("--cluster.listen-address=")
    else:
        argv += [f"--cluster.listen-address=127.0.0.1:{cluster_port}",
                 f"--cluster.advertise-address=127.0.0.1:{cluster_port}"]
        argv += [f"--cluster.peer=127.0.0.1:{p}" for p in peers]
    argv += list(extra)
    proc = group.add(name, argv)
    proc.start()
    wait_ready(proc, f"http://127.0.0.1:{port}/-/ready")
    return Alertmanager(proc, port, cluster_port)


# --------------------------------------------------------------------------------------------
# Log writing


def log_line(level: str, message: str, component: str, **fields: Any) -> str:
    rec = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
           "level": level, "message": message, "component": component, **fields}
    return json.dumps(rec, separators=(",", ":")) + "\n"


def append(path: Path, data: str | bytes) -> None:
    mode = "ab"
    raw = data.encode() if isinstance(data, str) else data
    with path.open(mode) as f:
        f.write(raw)
        f.flush()


# --------------------------------------------------------------------------------------------
# Alert payloads in Alertmanager's webhook format (version 4), for drills that post directly


def am_alert(alertname: str, seq: int, severity: str, *, status: str = "firing",
             starts_at: str = "2026-11-23T10:00:00Z", **labels: str) -> dict:
    lab = {"alertname": alertname, "severity": severity, "seq": f"{seq:05d}", **labels}
    return {
        "status": status,
        "labels": lab,
        "annotations": {"summary": f"{alertname} drill alert #{seq:05d}",
                        "runbook_url": "https://example.com/runbook#drill"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-23T10:05:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": hashlib.sha256(json.dumps(lab, sort_keys=True).encode()).hexdigest()[:16],
    }


def webhook(alerts: list[dict], receiver: str = "tailpage") -> dict:
    name = alerts[0]["labels"]["alertname"]
    common = alerts[0]["labels"] if len(alerts) == 1 else {"alertname": name}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="' + name + '"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {"alertname": name},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": alerts,
    }


# --------------------------------------------------------------------------------------------
# Drill reports


@dataclass
class DrillReport:
    """What a drill wrote, what arrived, what arrived twice, what never arrived."""
    drill: str
    unit: str
    written: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"drill": self.drill, "unit": self.unit, "written": self.written,
                "delivered": self.delivered, "duplicated": self.duplicated, "lost": self.lost,
                "seconds": round(self.seconds, 1), "notes": self.notes}

    def line(self) -> str:
        return (f"{self.drill:<40} {self.unit:<32} written={self.written:<6} "
                f"delivered={self.delivered:<6} duplicated={self.duplicated:<4} "
                f"lost={self.lost:<4} "
                f"({self.seconds:.1f}s)")


REPORT_DIR = REPO / "test-output" / "e2e"
REPORTS_KEY = "tailpage_e2e_reports"  # config.stash-like attribute holding this run's reports


def save_report(config: Any, report: DrillReport) -> None:
    """Write test-output/e2e/<drill>.json and keep the report for the end-of-run summary."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / f"{report.drill}.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    reports = getattr(config, REPORTS_KEY, None)
    if reports is None:
        reports = []
        setattr(config, REPORTS_KEY, reports)
    reports.append(report)


def machine() -> dict[str, Any]:
    """What the figures were measured on (the README quotes it)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "nproc": os.cpu_count(),
            "cpu": model, "python": sys.version.split()[0],
            "load_1m_5m_15m": [round(x, 2) for x in os.getloadavg()]}


def count_by_key(keys: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in keys:
        out[k] = out.get(k, 0) + 1
    return out
