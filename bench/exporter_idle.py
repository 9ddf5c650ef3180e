#!/usr/bin/env python3
"""Idle cost of the sidecar: `tailpage-exporter run` and mtail following one quiet file, same run.

Both start on a fresh file; a few lines are written and each must count them on /metrics; then
nothing is written. After --settle seconds, each process is sampled for --window seconds (both at
the same time, so the shared machine's noise hits both alike):
- RSS: /proc/<pid>/status VmRSS (and its RssAnon/RssFile split: Python heap vs mapped code), the
  mean of one sample a second;
- CPU: /proc/<pid>/stat utime+stime over the window (clock ticks: 10 ms resolution, so a 10 s
  window resolves 0.1% of a core), and the same from the threads' /proc/<pid>/task/*/schedstat run
  time (nanoseconds), which resolves the small figures; % of one core;
- wake-ups: voluntary+nonvoluntary context switches of all threads per second (an idle process
  that blocks on inotify and its sockets barely wakes; one that polls wakes at its poll rate).
--scrape N scrapes each /metrics every N seconds during the window, as Prometheus would (default
0: none, the quietest case). --importtime also prints the exporter's slowest top-level imports
(python -X importtime) from a separate start. Last (--delays N), N single lines are
appended from idle and the delay until each process's /metrics counts them is reported.
--rss-ladder shows where the resident memory goes: VmRSS after each module `run` imports, in its
order (a child Python of this virtualenv).

Usage: .venv/bin/python bench/exporter_idle.py [--window 10] [--settle 5] [--json OUT]
Needs: mtail (Debian package) and tailpage-exporter (pip install -e .).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
LINES = b"".join(b'{"level":"%s","message":"request %d done","component":"api"}\n'
                 % (lvl, i) for i, lvl in enumerate([b"info", b"warn", b"error", b"info"] * 3))
MTAIL_PROG = """counter log_lines_total by level
/"level":"(?P<level>[a-z]+)"/ {
  log_lines_total[$level]++
}
"""
COUNTED = {"tailpage-exporter": re.compile(rb"^tailpage_log_lines_total\{[^}]*\} ([0-9.e+]+)$",
                                           re.M),
           "mtail": re.compile(rb"^log_lines_total\{[^}]*\} ([0-9.e+]+)$", re.M)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read()
    except OSError:
        return None


def status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile in kB."""
    out = {}
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = ln.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            out[key] = int(rest.split()[0])
    return out


def cpu(pid: int) -> tuple[float, float, int]:
    """(utime+stime seconds from /proc/pid/stat, run seconds summed over threads' schedstat,
    context switches summed over threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    run_ns, switches = 0, 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns += int((task / "schedstat").read_text().split()[0])
            for ln in (task / "status").read_text().splitlines():
                if ln.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(ln.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between listing and reading
    return ticks / TICK, run_ns / 1e9, switches


class Proc:
    def __init__(self, name: str, argv: list[str], url: str, out: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.url = name, url
        self.out = open(out, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def counted(self) -> int | None:
        body = scrape(self.url)
        if body is None:
            return None
        return int(sum(float(v) for v in COUNTED[self.name].findall(body)))

    def wait_counted(self, n: int, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while self.counted() != n:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{self.name} did not count {n} lines; see {self.out.name}")
            time.sleep(0.1)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.out.close()
        return code


def measure(procs: list[Proc], window: float, scrape_every: float) -> dict[str, dict]:
    t0 = time.monotonic()
    c0 = {p.name: cpu(p.proc.pid) for p in procs}
    rss: dict[str, list[dict[str, int]]] = {p.name: [] for p in procs}
    next_scrape = t0 + scrape_every if scrape_every else float("inf")
    while (now := time.monotonic()) < t0 + window:
        for p in procs:
            rss[p.name].append(status(p.proc.pid))
        if now >= next_scrape:
            for p in procs:
                scrape(p.url)
            next_scrape += scrape_every
        time.sleep(min(1.0, max(0.0, t0 + window - time.monotonic())))
    span = time.monotonic() - t0
    out = {}
    for p in procs:
        a, b = c0[p.name], cpu(p.proc.pid)
        samples = rss[p.name]
        out[p.name] = {
            "rss_mb": round(sum(s["VmRSS"] for s in samples) / len(samples) / 1024, 1),
            "rss_anon_mb": round(sum(s["RssAnon"] for s in samples) / len(samples) / 1024, 1),
            "rss_file_mb": round(sum(s["RssFile"] for s in samples) / len(samples) / 1024, 1),
            "threads": samples[-1]["Threads"],
            "cpu_percent_stat": round(100 * (b[0] - a[0]) / span, 2),
            "cpu_percent_schedstat": round(100 * (b[1] - a[1]) / span, 3),
            "wakeups_per_s": round((b[2] - a[2]) / span, 1),
        }
    return out


def delays(procs: list[Proc], log: Path, n: int) -> dict[str, dict[str, float]]:
    """From an idle start, n times: append one line, then scrape every 5 ms until each process
    counts it. The write-to-/metrics delay shows that sleeping while idle costs no latency."""
    out: dict[str, list[float]] = {p.name: [] for p in procs}
    for _ in range(n):
        time.sleep(0.5)  # idle again
        before = {p.name: p.counted() for p in procs}
        t0 = time.monotonic()
        with open(log, "ab") as f:
            f.write(LINES.splitlines(keepends=True)[0])
        waiting = list(procs)
        while waiting and time.monotonic() - t0 < 10:
            for p in list(waiting):
                if (c := p.counted()) is not None and c > (before[p.name] or 0):
                    out[p.name].append(time.monotonic() - t0)
                    waiting.remove(p)
            time.sleep(0.005)
    return {name: {"p50_ms": round(1000 * sorted(d)[len(d) // 2], 1),
                   "max_ms": round(1000 * max(d), 1), "seen": len(d)}
            for name, d in out.items() if d}


# The modules `run` loads, in the order it loads them; then what each dependency it no longer loads
# would add on top of them.
LADDER = ["argparse", "logging", "exporter.config", "asyncio", "prometheus_client", "msgspec",
          "exporter.pipeline", "exporter.tail", "inotify_simple", "exporter.server", "exporter.run"]
DROPPED = ["aiohttp.web", "jsonschema", "watchfiles"]
LADDER_CODE = """import sys
def rss():
    for ln in open('/proc/self/status'):
        if ln.startswith('VmRSS'):
            return int(ln.split()[1])
out = [('python', rss())]
for m in sys.argv[1:]:
    __import__(m)
    out.append((m, rss()))
print(out)
"""


def rss_ladder(python: str) -> dict[str, dict[str, float]]:
    """VmRSS (MB) after each import in `run`'s order, and what each dropped dependency would add
    on top of all of them."""
    def run(mods: list[str]) -> list[tuple[str, int]]:
        r = subprocess.run([python, "-c", LADDER_CODE, *mods], capture_output=True, text=True,
                           check=True)
        return eval(r.stdout)  # noqa: S307 - our own child's repr of a list of tuples

    ladder = run(LADDER)
    dropped = {m: round((run([*LADDER, m])[-1][1] - ladder[-1][1]) / 1024, 1) for m in DROPPED}
    return {"cumulative_mb": {m: round(kb / 1024, 1) for m, kb in ladder},
            "dropped_would_add_mb": dropped}


def importtime(exporter: list[str], log: Path, d: Path) -> list[tuple[int, str]]:
    """Cumulative microseconds of the exporter's top-level imports, slowest first."""
    port = free_port()
    p = Proc("tailpage-exporter", [*exporter, "run", "--listen", f"127.0.0.1:{port}",
                                   "--path", str(log), "--checkpoint", str(d / "ckpt-imp.json")],
             f"http://127.0.0.1:{port}/metrics", d / "importtime.err",
             env={"PYTHONPROFILEIMPORTTIME": "1"})
    end = time.monotonic() + 30
    while p.counted() is None and time.monotonic() < end:
        time.sleep(0.1)
    p.stop()
    rows = []
    for ln in (d / "importtime.err").read_text().splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", ln)
        if m and len(m.group(2)) <= 2:  # top level and the first level below it
            rows.append((int(m.group(1)), m.group(2) + m.group(3)))
    return sorted(rows, reverse=True)[:20]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=10.0, help="seconds sampled")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before sampling")
    ap.add_argument("--scrape", type=float, default=0.0, help="scrape every N s (0: never)")
    ap.add_argument("--delays", type=int, default=10, help="single-line delays measured after")
    ap.add_argument("--importtime", action="store_true", help="also profile the imports")
    ap.add_argument("--exporter", metavar="CMD",
                    help="command that starts the exporter, e.g. to compare another checkout: "
                         "'env PYTHONPATH=/tmp/old .venv/bin/python -m exporter.cli' "
                         "(default: tailpage-exporter beside this Python)")
    ap.add_argument("--rss-ladder", action="store_true",
                    help="also show resident memory after each module `run` imports")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = ap.parse_args()
    installed = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
    exporter = shlex.split(args.exporter) if args.exporter else [installed] if installed else []
    mtail = shutil.which("mtail")
    if not exporter or not mtail:
        raise SystemExit("needs mtail (apt-get install mtail) and tailpage-exporter (pip -e .)")
    result: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": next((ln.split(":", 1)[1].strip() for ln in
                                 Path("/proc/cpuinfo").read_text().splitlines()
                                 if ln.startswith("model name")), platform.machine()),
                    "cores": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
        "exporter": args.exporter or "tailpage-exporter",
        "window_s": args.window, "settle_s": args.settle, "scrape_every_s": args.scrape,
    }
    with tempfile.TemporaryDirectory(prefix="exporter-idle-") as tmp:
        d = Path(tmp)
        (d / "progs").mkdir()
        (d / "progs" / "lines.mtail").write_text(MTAIL_PROG)
        log = d / "app.log"
        log.write_bytes(LINES)  # there before the start: exporter starts at its end, like mtail
        ep, mp = free_port(), free_port()
        procs = [
            Proc("tailpage-exporter", [*exporter, "run", "--listen", f"127.0.0.1:{ep}", "--path",
                                       str(log), "--checkpoint", str(d / "ckpt.json")],
                 f"http://127.0.0.1:{ep}/metrics", d / "exporter.out"),
            Proc("mtail", [mtail, "--progs", str(d / "progs"), "--logs", str(log), "--address",
                           "127.0.0.1", "--port", str(mp), "--logtostderr"],
                 f"http://127.0.0.1:{mp}/metrics", d / "mtail.out"),
        ]
        try:
            for p in procs:
                p.wait_counted(0)
            time.sleep(1.0)  # both following the file before the lines are written
            with open(log, "ab") as f:
                f.write(LINES)
            for p in procs:
                p.wait_counted(LINES.count(b"\n"))
            time.sleep(args.settle)
            result.update(measure(procs, args.window, args.scrape))
            if args.delays:
                result["write_to_metrics_delay"] = delays(procs, log, args.delays)
        finally:
            codes = {p.name: p.stop() for p in procs}
        result["exit_codes_on_sigterm"] = codes
        if args.importtime:
            result["exporter_imports_ms"] = {name: round(us / 1000, 1)
                                             for us, name in importtime(exporter, log, d)}
    if args.rss_ladder:
        result["rss_ladder"] = rss_ladder(sys.executable)
    result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
