#!/usr/bin/env python3
"""Live-mode benchmark: `tailpage-exporter run` and mtail tailing the same rotated file, same run.

Phase 1 (sustained rate, --duration seconds): a writer appends a realistic JSON log
(bench/genlog.py's calm mix, in 1 MiB blocks of whole lines) as fast as it can, renaming the
file away every --rotate-mb MB (rename-and-create, like logrotate `rotate 1`: the older .1 is
deleted). The writer only waits when it is more than --max-lead-mb ahead of what the exporter has
counted, which bounds disk use without ever letting the exporter run dry, so the exporter works
flat out the whole time; mtail tails the same file and simply falls behind. Over the window after a
short warm-up, each tailer's sustained rate is the lines it counted on /metrics divided by the
window, its CPU% its user+system time over the window (100% = one core), and lines per CPU-second
the rate independent of how the shared cores were split; runqueue wait% is the time its threads
were ready to run but waited for a core (from /proc schedstat: high means the machine, not the
tailer, set the pace). RSS is the peak sampled. After the writer
stops, the exporter must count every line written (no line lost or doubled across the rotations).

Phase 2 (delay, --delay-seconds): the writer appends --rate lines/s in 20 ms batches while each
/metrics is scraped every 10 ms; the delay of a batch is from its write() to the first scrape
showing it. Reported: p50/p99/max.

Usage: .venv/bin/python bench/exporter_live.py [--duration 30] [--json OUT]
Needs: mtail (Debian package).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
BENCH = REPO / "bench"
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
        proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.proc: subprocess.Popen | None = proc
        self.ps = psutil.Process(proc.pid)
        self.peak_rss = 0

    def count(self) -> int | None:
        return count(self.url, self.pattern)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def runq_wait(self) -> float:
        """Seconds its threads spent runnable but waiting for a CPU (/proc schedstat): on a shared
        machine this tells a starved tailer from an idle one."""
        total = 0
        for task in Path(f"/proc/{self.ps.pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
        return total / 1e9

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proc = None


def wait_up(t: Tailer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if t.proc is None or t.proc.poll() is not None:
            raise SystemExit(f"{t.name} exited early; see its log")
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


class Sampler(threading.Thread):
    """Scrapes every tailer every `every` seconds, keeping a series per tailer."""

    def __init__(self, tailers: list[Tailer], every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.tailers, self.every = tailers, every
        # (time, lines counted, cpu seconds, runqueue wait seconds)
        self.series: dict[str, list[tuple[float, int, float, float]]] = {t.name: []
                                                                         for t in tailers}
        self.latest: dict[str, int] = {t.name: 0 for t in tailers}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for t in self.tailers:
                c = t.count()
                if c is not None:
                    self.latest[t.name] = c
                    self.series[t.name].append((time.monotonic(), c, t.cpu(), t.runq_wait()))
                t.sample_rss()
            self.halt.wait(self.every)

    def at(self, name: str, when: float) -> tuple[float, int, float, float]:
        """The first sample taken at or after `when` (the last one if none)."""
        series = self.series[name]
        return next((s for s in series if s[0] >= when), series[-1])


def sustained(log: Path, blocks: list[tuple[bytes, int]], tailers: list[Tailer], duration: float,
              warmup: float, rotate: int, lead_lines: int) -> dict:
    """Phase 1: write as fast as the exporter can follow, rename-and-create every `rotate` bytes."""
    sampler = Sampler(tailers)
    sampler.start()
    lead = tailers[0].name
    written = lines = rotations = waits = 0
    f = open(log, "ab", buffering=0)  # noqa: SIM115 - reopened at each rotation
    k = 0
    t0 = time.monotonic()
    t_end = t0 + duration
    while time.monotonic() < t_end:
        if lines - sampler.latest[lead] > lead_lines:
            waits += 1
            time.sleep(0.005)
            continue
        block, n = blocks[k % len(blocks)]
        k += 1
        if f.tell() + len(block) > rotate:
            f.close()
            os.replace(log, log.with_name(log.name + ".1"))  # the older .1 goes: like rotate 1
            f = open(log, "ab", buffering=0)  # noqa: SIM115
            rotations += 1
        f.write(block)
        written += len(block)
        lines += n
    f.close()
    stopped = time.monotonic()
    # Everything written must be counted, exactly once, by the exporter (mtail: whatever it got).
    drain_end = stopped + max(30.0, duration)
    while sampler.latest[lead] < lines and time.monotonic() < drain_end:
        time.sleep(0.1)
    time.sleep(1.0)
    sampler.halt.set()
    sampler.join()
    w0, w1 = t0 + warmup, stopped
    out: dict = {"written_lines": lines, "written_mb": round(written / 2**20),
                 "rotations": rotations, "writer_seconds": round(stopped - t0, 2),
                 "writer_waits_for_exporter": waits,
                 "window_seconds": round(w1 - w0, 2)}
    for t in tailers:
        a, b = sampler.at(t.name, w0), sampler.at(t.name, w1)
        span = max(b[0] - a[0], 1e-9)
        cpu = b[2] - a[2]
        final = sampler.series[t.name][-1][1]
        out[t.name] = {"lines_per_s": round((b[1] - a[1]) / span),
                       "cpu_percent": round(100 * cpu / span, 1),
                       "lines_per_cpu_s": round((b[1] - a[1]) / cpu) if cpu > 0 else None,
                       "runqueue_wait_percent": round(100 * (b[3] - a[3]) / span, 1),
                       "counted_after_writer_stopped": final,
                       "counted_all_exactly": final == lines}
    return out


def measure_delay(log: Path, blocks: list[tuple[bytes, int]], tailers: list[Tailer], rate: int,
                  seconds: float, rotate: int) -> dict:
    """Phase 2: batches every 20 ms, rename-and-create every `rotate` bytes; per tailer, the delay
    from a batch's write() to the first scrape showing it."""
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
    f = open(log, "ab", buffering=0)  # noqa: SIM115 - reopened at each rotation
    t0, i, total, rotations = time.monotonic(), 0, 0, 0
    while time.monotonic() - t0 < seconds:
        chunk = b"".join(lines[(i + k) % len(lines)] for k in range(per_batch))
        i += per_batch
        if f.tell() + len(chunk) > rotate:
            f.close()
            os.replace(log, log.with_name(log.name + ".1"))
            f = open(log, "ab", buffering=0)  # noqa: SIM115
            rotations += 1
        f.write(chunk)
        total += per_batch
        batches.append((time.monotonic(), total))
        time.sleep(max(0.0, t0 + len(batches) * 0.02 - time.monotonic()))
    f.close()
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join()
    out: dict = {"rotations": rotations}
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


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
                 platform.machine())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "mtail": subprocess.run(["mtail", "--version"], capture_output=True, text=True,
                                    check=False).stdout.split(" git")[0],
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30, help="phase 1 (sustained) seconds")
    ap.add_argument("--warmup", type=float, default=3, help="phase 1 seconds not measured")
    ap.add_argument("--rotate-mb", type=int, default=100)
    ap.add_argument("--max-lead-mb", type=int, default=64,
                    help="the writer waits when this far ahead of the exporter")
    ap.add_argument("--pool-lines", type=int, default=500_000)
    ap.add_argument("--rate", type=int, default=20_000, help="phase 2 lines/s")
    ap.add_argument("--delay-seconds", type=float, default=10)
    ap.add_argument("--delay-rotate-mb", type=int, default=10,
                    help="phase 2 rotates this often, so rotations fall inside the window")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    mtail = shutil.which("mtail")
    exporter = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
    if not mtail or not exporter:
        raise SystemExit("needs mtail (apt-get install mtail) and tailpage-exporter (pip -e .)")

    with tempfile.TemporaryDirectory(prefix="tailpage-bench-live-") as tmp:
        d = Path(tmp)
        pool = d / "pool.log"
        subprocess.run([sys.executable, str(BENCH / "genlog.py"), str(args.pool_lines), str(pool)],
                       check=True)
        blocks = load_pool(pool)
        avg_line = pool.stat().st_size / max(1, sum(n for _, n in blocks))
        pool.unlink()
        log = d / "app.log"
        log.touch()
        (d / "progs").mkdir()
        shutil.copy(BENCH / "calm.mtail", d / "progs")
        before = machine()

        def start(log: Path, tag: str) -> list[Tailer]:
            """Both tailers on `log`, each from a clean start (the file is empty)."""
            log.touch()
            ep, mp = free_port(), free_port()
            tailers = [
                Tailer("tailpage-exporter",
                       [exporter, "run", "--listen", f"127.0.0.1:{ep}", "--path", str(log),
                        "--checkpoint", str(d / f"ckpt-{tag}.json")],
                       f"http://127.0.0.1:{ep}/metrics", EXPORTER_TOTAL,
                       d / f"exporter-{tag}.out"),
                Tailer("mtail",
                       [mtail, "--progs", str(d / "progs"), "--logs", str(log), "--address",
                        "127.0.0.1", "--port", str(mp), "--logtostderr"],
                       f"http://127.0.0.1:{mp}/metrics", MTAIL_TOTAL, d / f"mtail-{tag}.out"),
            ]
            for t in tailers:
                wait_up(t, time.monotonic() + 20)
            time.sleep(1.0)
            return tailers

        tailers: list[Tailer] = []
        try:
            tailers = start(log, "sustained")
            phase1 = sustained(log, blocks, tailers, args.duration, args.warmup,
                               args.rotate_mb << 20, int((args.max_lead_mb << 20) / avg_line))
            rss = {t.name: round(t.peak_rss / 2**20, 1) for t in tailers}
            for t in tailers:
                t.stop()
            # Fresh processes on a fresh file: mtail is still far behind on phase 1's backlog.
            tailers = start(d / "delay.log", "delay")
            delay = measure_delay(d / "delay.log", blocks, tailers, args.rate,
                                  args.delay_seconds, args.delay_rotate_mb << 20)
        finally:
            for t in tailers:
                t.stop()
        result = {
            "command": " ".join(["bench/exporter_live.py", *sys.argv[1:]]),
            "machine": before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "phase1": {"rotate_mb": args.rotate_mb, "max_lead_mb": args.max_lead_mb,
                       "avg_line_bytes": round(avg_line), **phase1},
            "phase2": {"rate_lines_per_s": args.rate, "rotate_mb": args.delay_rotate_mb,
                       **delay},
            "peak_rss_mb_sustained": rss,
        }
        e, m = phase1["tailpage-exporter"], phase1["mtail"]
        if m["lines_per_s"]:
            result["speedup_vs_mtail"] = round(e["lines_per_s"] / m["lines_per_s"], 2)
        if m["lines_per_cpu_s"] and e["lines_per_cpu_s"]:
            result["speedup_per_cpu_s_vs_mtail"] = round(
                e["lines_per_cpu_s"] / m["lines_per_cpu_s"], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
