#!/usr/bin/env python3
"""Live-mode benchmark: `tailpage-exporter run` and mtail tailing the same rotated file, same run.

Phase 1 (throughput): a writer appends a realistic JSON log (shared/bench/genlog.py) as fast as it
can, renaming the file away every --rotate-mb MB (rename-and-create, like logrotate without
copytruncate), until --total-mb MB are written. Both tailers start behind and stay busy; their
sustained rate is lines counted on /metrics divided by the time to count them (bounded by
--seconds). CPU% is their user+system time over that window; RSS is the peak sampled.

Phase 2 (delay): the writer appends --rate lines/s in 20 ms batches for --delay-seconds while each
/metrics is scraped every 10 ms; the delay of a batch is from its write() to the first scrape
showing it. Reported: p50/p99/max.

Usage: .venv/bin/python bench/exporter_live.py [--seconds 40] [--total-mb 600] [--json OUT]
Needs: mtail (Debian package), shared/ beside the repository (<repo>/../shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "bench"
EXPORTER_TOTAL = re.compile(rb"^tailpage_log_lines_total\{[^}]*\} ([0-9.e+]+)$", re.M)
MTAIL_TOTAL = re.compile(rb"^log_lines_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count(url: str, pattern: re.Pattern[bytes]) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read()
    except OSError:
        return None
    return int(sum(float(v) for v in pattern.findall(body)))


class Tailer:
    def __init__(self, name: str, argv: list[str], url: str, pattern: re.Pattern[bytes],
                 log_path: Path) -> None:
        self.name, self.url, self.pattern = name, url, pattern
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0

    def count(self) -> int | None:
        return count(self.url, self.pattern)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_up(t: Tailer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if t.proc.poll() is not None:
            raise SystemExit(f"{t.name} exited with {t.proc.returncode}; see its log")
        if t.count() is not None:
            return
        time.sleep(0.1)
    raise SystemExit(f"{t.name} did not answer on {t.url}")


def load_pool(path: Path, chunk: int = 1 << 20) -> list[tuple[bytes, int]]:
    """The generated log cut into ~1 MiB blocks of whole lines, with their line counts."""
    data = path.read_bytes()
    blocks, i = [], 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + chunk) + 1 or len(data)
        blocks.append((data[i:j], data.count(b"\n", i, j)))
        i = j
    return blocks


def flood(log: Path, blocks: list[tuple[bytes, int]], total: int, rotate: int) -> int:
    """Phase 1 writer: as fast as possible, rename-and-create every `rotate` bytes."""
    written = lines = 0
    f = open(log, "ab", buffering=0)  # noqa: SIM115 - reopened at each rotation
    k = 0
    while written < total:
        block, n = blocks[k % len(blocks)]
        k += 1
        if f.tell() + len(block) > rotate:
            f.close()
            os.replace(log, log.with_name(log.name + ".1"))  # the older .1 goes: like rotate 1
            f = open(log, "ab", buffering=0)  # noqa: SIM115
        f.write(block)
        written += len(block)
        lines += n
    f.close()
    return lines


def settle(tailers: list[Tailer], target: int, start: float, deadline: float) -> dict:
    """Sample counts until each tailer has counted `target` lines or stops moving or time is up."""
    done: dict[str, tuple[float, int]] = {}
    last: dict[str, tuple[float, int]] = {}
    cpu0 = {t.name: t.cpu() for t in tailers}
    cpu_end: dict[str, float] = {}
    while len(done) < len(tailers) and time.monotonic() < deadline:
        time.sleep(0.25)
        now = time.monotonic()
        for t in tailers:
            if t.name in done:
                continue
            t.sample_rss()
            c = t.count() or 0
            prev = last.get(t.name)
            if prev is None or c != prev[1]:
                last[t.name] = (now, c)
            if c >= target or (c > 0 and now - last[t.name][0] > 3.0):
                done[t.name] = last[t.name]  # time the count last moved
                cpu_end[t.name] = t.cpu()
    out = {}
    for t in tailers:
        at, c = done.get(t.name) or last.get(t.name) or (time.monotonic(), 0)
        cpu1 = cpu_end.get(t.name, t.cpu())
        busy = max(at - start, 1e-9)
        out[t.name] = {"lines": c, "seconds": round(busy, 2),
                       "lines_per_s": round(c / busy),
                       "cpu_percent": round(100 * (cpu1 - cpu0[t.name]) / busy, 1),
                       "complete": c >= target}
    return out


def measure_delay(log: Path, blocks: list[tuple[bytes, int]], tailers: list[Tailer], rate: int,
                  seconds: float) -> dict:
    """Phase 2: batches every 20 ms; per tailer, delay from write to first scrape showing it."""
    lines = [ln + b"\n" for block, _ in blocks[:5] for ln in block.split(b"\n") if ln]
    per_batch = max(1, rate // 50)
    base = {t.name: t.count() or 0 for t in tailers}
    batches: list[tuple[float, int]] = []  # (time written, cumulative lines)
    seen: dict[str, list[tuple[float, int]]] = {t.name: [] for t in tailers}
    stop = threading.Event()

    def probe(t: Tailer) -> None:
        while not stop.is_set():
            c = t.count()
            if c is not None:
                seen[t.name].append((time.monotonic(), c - base[t.name]))
            time.sleep(0.01)

    threads = [threading.Thread(target=probe, args=(t,), daemon=True) for t in tailers]
    for th in threads:
        th.start()
    with open(log, "ab", buffering=0) as f:
        t0, i, total = time.monotonic(), 0, 0
        while time.monotonic() - t0 < seconds:
            chunk = b"".join(lines[(i + k) % len(lines)] for k in range(per_batch))
            i += per_batch
            f.write(chunk)
            total += per_batch
            batches.append((time.monotonic(), total))
            time.sleep(max(0.0, t0 + len(batches) * 0.02 - time.monotonic()))
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join()
    out = {}
    for t in tailers:
        obs = seen[t.name]
        delays, j = [], 0
        for wrote_at, cum in batches:
            while j < len(obs) and (obs[j][1] < cum or obs[j][0] < wrote_at):
                j += 1
            if j == len(obs):
                break
            delays.append(obs[j][0] - wrote_at)
        delays.sort()
        if not delays:
            out[t.name] = {"batches_seen": 0}
            continue
        out[t.name] = {"batches": len(batches), "batches_seen": len(delays),
                       "p50_ms": quantile_ms(delays, 0.50), "p99_ms": quantile_ms(delays, 0.99),
                       "max_ms": round(delays[-1] * 1000, 1)}
    return out


def quantile_ms(sorted_delays: list[float], p: float) -> float:
    i = min(len(sorted_delays) - 1, int(p * len(sorted_delays)))
    return round(sorted_delays[i] * 1000, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=40, help="phase 1 time limit")
    ap.add_argument("--total-mb", type=int, default=600)
    ap.add_argument("--rotate-mb", type=int, default=100)
    ap.add_argument("--pool-lines", type=int, default=500_000)
    ap.add_argument("--rate", type=int, default=5000, help="phase 2 lines/s")
    ap.add_argument("--delay-seconds", type=float, default=10)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    mtail = shutil.which("mtail")
    exporter = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
    if not mtail or not exporter:
        raise SystemExit("needs mtail (apt-get install mtail) and tailpage-exporter (pip -e .)")

    with tempfile.TemporaryDirectory(prefix="tailpage-bench-live-") as tmp:
        d = Path(tmp)
        pool = d / "pool.log"
        subprocess.run([sys.executable, str(SHARED / "genlog.py"), str(args.pool_lines), str(pool)],
                       check=True)
        blocks = load_pool(pool)
        pool.unlink()
        log = d / "app.log"
        log.touch()
        (d / "progs").mkdir()
        shutil.copy(SHARED / "errors.mtail", d / "progs")
        ep, mp = free_port(), free_port()
        tailers = [
            Tailer("tailpage-exporter",
                   [exporter, "run", "--listen", f"127.0.0.1:{ep}", "--path", str(log),
                    "--checkpoint", str(d / "ckpt.json")],
                   f"http://127.0.0.1:{ep}/metrics", EXPORTER_TOTAL, d / "exporter.out"),
            Tailer("mtail",
                   [mtail, "--progs", str(d / "progs"), "--logs", str(log), "--address",
                    "127.0.0.1", "--port", str(mp), "--logtostderr"],
                   f"http://127.0.0.1:{mp}/metrics", MTAIL_TOTAL, d / "mtail.out"),
        ]
        try:
            for t in tailers:
                wait_up(t, time.monotonic() + 20)
            time.sleep(1.0)
            start = time.monotonic()
            written = flood(log, blocks, args.total_mb << 20, args.rotate_mb << 20)
            wrote_in = time.monotonic() - start
            phase1 = settle(tailers, written, start, start + args.seconds)
            delay = measure_delay(log, blocks, tailers, args.rate, args.delay_seconds)
            for t in tailers:
                t.sample_rss()
        finally:
            for t in tailers:
                t.stop()
        result = {
            "machine": f"{os.cpu_count()} cores, {platform_name()}",
            "phase1": {"written_lines": written, "written_mb": args.total_mb,
                       "rotate_mb": args.rotate_mb, "writer_seconds": round(wrote_in, 2),
                       **phase1},
            "phase2": {"rate_lines_per_s": args.rate, **delay},
            "peak_rss_mb": {t.name: round(t.peak_rss / 2**20, 1) for t in tailers},
        }
        e, m = phase1["tailpage-exporter"], phase1["mtail"]
        if m["lines_per_s"]:
            result["speedup_vs_mtail"] = round(e["lines_per_s"] / m["lines_per_s"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


def platform_name() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
