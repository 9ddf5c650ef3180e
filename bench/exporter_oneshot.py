"""`tailpage-exporter oneshot` against `mtail --one_shot` over the same generated JSON log.

Usage: .venv/bin/python bench/exporter_oneshot.py [--mix calm storm errors] [--lines N] [--cpu K]
                                                   [--repeat R] [--keep DIR] [--envelope none|cri]

For each mix (default: all three) it writes N lines (default 400,000) with bench/genlog.py,
runs both programs one after the other (R times, alternating; medians reported) pinned to the
same single CPU (taskset), each under /usr/bin/time -v for wall and CPU time and peak RSS, with
mtail running bench/<mix>.mtail (the same counting in mtail's language), checks that their counts
agree (lines by level, errors by level/component/error_type, durations by component) and prints
one JSON object per mix. Exit 1 when the counts disagree for any mix. The targets (calm >= 8x
mtail's lines/s, storm >= 6x, errors >= 5x; peak RSS <= 45 MB) are reported, not asserted: the
machine may be shared.

--envelope cri wraps every generated line as Kubernetes stores container logs (CRI:
`<time> stdout F <line>`) and runs the exporter on that file; mtail still reads the plain file
(its program parses JSON lines), so the counts are still compared record for record.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
GENLOG = BENCH / "genlog.py"
EXPORTER = Path(sys.executable).parent / "tailpage-exporter"
TARGET_RATIO = {"calm": 8.0, "storm": 6.0, "errors": 5.0}  # x mtail's lines/s, same run
TARGET_RSS_MB = 45.0


def timed(cmd: list[str], out: Path, cpu: int | None) -> dict[str, float]:
    """Run cmd with stdout to `out`; wall seconds, CPU seconds and peak RSS from time -v."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
    with open(out, "wb") as fh:
        p = subprocess.run(["/usr/bin/time", "-v", *pin, *cmd], stdout=fh,
                           stderr=subprocess.PIPE, check=False)
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{err[-2000:]}")

    def field(name: str) -> str:
        m = re.search(rf"^\s*{re.escape(name)}: (.+)$", err, re.M)
        if m is None:
            raise SystemExit(f"no {name!r} in /usr/bin/time output:\n{err[-2000:]}")
        return m.group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    return {"wall_s": wall,
            "cpu_s": float(field("User time (seconds)")) + float(field("System time (seconds)")),
            "peak_rss_mb": int(field("Maximum resident set size (kbytes)")) / 1024}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median wall time (its own CPU time), and the highest peak RSS of all."""
    mid = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return mid | {"peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                  "wall_s_all": [round(r["wall_s"], 2) for r in runs]}


def families(path: Path) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for fam in text_string_to_metric_families(path.read_text()):
        for s in fam.samples:
            out[s.name].append(s)
    return out


def counts(path: Path, names: dict[str, str]) -> dict[str, dict[str, float]]:
    """Lines by level, errors by level/component/error_type, durations count by component."""
    fams = families(path)
    level_alias = {"warn": "warning"}  # mtail keeps the raw level, the exporter normalises
    lines: dict[str, float] = defaultdict(float)
    for s in fams[names["lines"]]:
        if s.value:
            lines[level_alias.get(s.labels["level"], s.labels["level"])] += s.value
    errors: dict[str, float] = defaultdict(float)
    for s in fams[names["errors"]]:
        lbl = s.labels
        errors[f'{lbl["level"]}/{lbl["component"]}/{lbl["error_type"]}'] += s.value
    durations = {s.labels["component"]: s.value for s in fams[names["durations"]]}
    return {"lines_by_level": dict(lines), "errors": dict(errors), "durations": durations}


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def mtail_version() -> str:
    p = subprocess.run(["mtail", "--version"], capture_output=True, text=True, check=False)
    return (p.stdout or p.stderr).splitlines()[0] if (p.stdout or p.stderr) else "?"


def wrap_cri(src: Path, dst: Path) -> None:
    """Each line of src as a whole-message CRI line, 1 ms apart, stdout and some stderr."""
    with open(src, "rb") as fin, open(dst, "wb") as out:
        for i, line in enumerate(fin):
            ms = i % 60_000
            stream = b"stderr" if i % 7 == 0 else b"stdout"
            out.write(b"2026-11-22T%02d:%02d:%02d.%03d000000Z %s F %s" % (
                i // 3_600_000 % 24, i // 60_000 % 60, ms // 1000, ms % 1000, stream, line))


def run_mix(mix: str, args: argparse.Namespace, tmp: Path) -> bool:
    """One mix: generate, time both programs, compare counts, print the report. True if agree."""
    mtail_prog = BENCH / f"{mix}.mtail"
    log = tmp / f"{mix}.log"
    subprocess.run([sys.executable, str(GENLOG), str(args.lines), str(log), "--mix", mix],
                   check=True)
    ours_log, ours_fmt = log, "json"
    if args.envelope == "cri":
        ours_log, ours_fmt = tmp / f"{mix}.cri.log", "cri"
        wrap_cri(log, ours_log)
    load_before = machine()["load_avg_1_5_15"]
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "mtail": []}
    ours_prom, mtail_prom = tmp / f"{mix}.exporter.prom", tmp / f"{mix}.mtail.prom"
    for _ in range(args.repeat):  # alternating, so a burst of load hits both alike
        runs["ours"].append(timed([str(EXPORTER), "oneshot", "--format", ours_fmt,
                                   str(ours_log)], ours_prom, args.cpu))
        runs["mtail"].append(timed(["mtail", "--one_shot", "--one_shot_format=prometheus",
                                    "--progs", str(mtail_prog), "--logs", str(log)],
                                   mtail_prom, args.cpu))
    ours, theirs = median(runs["ours"]), median(runs["mtail"])
    # each alternating pair's own ratio: the range over the runs
    each = [round(m["wall_s"] / o["wall_s"], 2) for o, m in zip(runs["ours"], runs["mtail"],
                                                                 strict=True)]
    each_cpu = [round(m["cpu_s"] / o["cpu_s"], 2) for o, m in zip(runs["ours"], runs["mtail"],
                                                                  strict=True)]
    a = counts(ours_prom, {"lines": "tailpage_log_lines_total",
                           "errors": "tailpage_errors_total",
                           "durations": "tailpage_request_duration_seconds_count"})
    b = counts(mtail_prom, {"lines": "log_lines_total", "errors": "errors_total",
                            "durations": "request_duration_seconds_count"})
    agree = {k: a[k] == b[k] for k in a}
    for k, ok in agree.items():
        if not ok:
            print(f"MISMATCH {mix} {k}:\n  exporter {a[k]}\n  mtail    {b[k]}", file=sys.stderr)
    n = args.lines
    for r in (ours, theirs):
        # wall time is what a user waits; CPU time is steadier when others share the machine
        r["lines_per_s"] = round(n / r["wall_s"])
        r["lines_per_cpu_s"] = round(n / r["cpu_s"])
        for k in ("wall_s", "cpu_s", "peak_rss_mb"):
            r[k] = round(r[k], 3)
    ratio = ours["lines_per_s"] / theirs["lines_per_s"]
    cpu_ratio = ours["lines_per_cpu_s"] / theirs["lines_per_cpu_s"]
    report = {
        "benchmark": "exporter_oneshot",
        "mix": mix,
        "lines": n,
        "error_lines": sum(v for k, v in a["lines_by_level"].items() if k in ("error", "fatal")),
        "log_bytes": log.stat().st_size,
        "envelope": args.envelope,
        "exporter_log_bytes": ours_log.stat().st_size,
        "pinned_cpu": args.cpu,
        "tailpage_exporter_oneshot": ours,
        "mtail_one_shot": theirs | {"version": mtail_version(), "program": f"bench/{mix}.mtail"},
        "speedup_vs_mtail": round(ratio, 2),
        "speedup_vs_mtail_cpu_time": round(cpu_ratio, 2),
        "speedup_each_run": each,
        "speedup_each_run_cpu_time": each_cpu,
        "targets": {f"speedup_ge_{TARGET_RATIO[mix]:g}x": ratio >= TARGET_RATIO[mix],
                    f"peak_rss_le_{TARGET_RSS_MB:g}mb": ours["peak_rss_mb"] <= TARGET_RSS_MB},
        "counts_agree": agree,
        "errors_series": len(a["errors"]),
        "machine": machine() | {"load_avg_before": load_before},
        "command": " ".join(["python", "bench/exporter_oneshot.py", f"--mix {mix}",
                             f"--lines {n}", f"--cpu {args.cpu}", f"--repeat {args.repeat}",
                             f"--envelope {args.envelope}"]),
    }
    print(json.dumps(report, indent=2), flush=True)
    return all(agree.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mix", nargs="+", choices=tuple(TARGET_RATIO), default=list(TARGET_RATIO),
                    help="genlog.py mixes to run, each against its bench/<mix>.mtail")
    ap.add_argument("--lines", type=int, default=400_000)
    ap.add_argument("--cpu", type=int, default=0, help="CPU both programs are pinned to")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the median is shown")
    ap.add_argument("--keep", metavar="DIR", help="write the logs and outputs here (kept)")
    ap.add_argument("--envelope", choices=("none", "cri"), default="none",
                    help="cri: the exporter reads the lines wrapped as CRI container logs")
    args = ap.parse_args()
    for need in (GENLOG, EXPORTER, *(BENCH / f"{m}.mtail" for m in args.mix)):
        if not need.exists():
            raise SystemExit(f"missing {need}")
    if not shutil.which("mtail"):
        raise SystemExit("mtail is not installed (Debian package mtail)")

    # timed as installed: pip compiles the bytecode at install time, while a checkout run with
    # PYTHONDONTWRITEBYTECODE set would compile the package anew at every start (~15 ms)
    compileall.compile_dir(str(ROOT / "exporter"), quiet=1)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tailpage-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        ok = [run_mix(mix, args, tmp) for mix in args.mix]
        return 0 if all(ok) else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
