"""Drills on the exporter side: SIGKILL and restart mid-stream with a rotation, garbage in the log.

The crash drill counts like Prometheus does. The exporter keeps its counters in memory, so
each process (incarnation) starts from zero; what Prometheus learned about a series is the sum,
over incarnations, of the last value it scraped from each. Lines carry their segment (100 lines
each) in `component`, so a segment counted more than 50 times was partly read twice and one
counted fewer times lost lines (a segment both losing and re-reading lines would hide the loss;
segments are 1/6 s of writing, finer than the re-read window).

The exporter checkpoints the offsets of the last scrape, so a restart reads again exactly what
Prometheus had not yet seen: nothing is lost, and what is counted twice is bounded by one
checkpoint interval plus one scrape interval per kill.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import urllib.parse

import pytest
from e2e_harness import (
    append,
    get_json,
    log_line,
    metric_sum,
    start_exporter,
    start_prometheus,
    wait_until,
)

pytestmark = pytest.mark.slow

SEGMENT = 50
SEGMENTS = 60
RATE = 300  # lines/s written
CHECKPOINT_S = 1.0
SCRAPE_S = 1.0  # start_prometheus scrapes every second


def test_exporter_sigkill_twice_and_rotation_mid_stream(group, drill, tmp_path) -> None:
    report = drill("exporter-sigkill-rotation", "log lines")
    log = tmp_path / "app.log"
    log.touch()
    exp = start_exporter(group, log, checkpoint_interval=f"{CHECKPOINT_S:g}s")
    prom = start_prometheus(group, exp.port)
    wait_until(lambda: prom.query('up{job="app"} == 1'), 15, what="Prometheus scraping")

    total = SEGMENT * SEGMENTS
    written = 0
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal written
        try:
            batch = 10
            for i in range(0, total, batch):
                if stop.is_set():
                    return
                chunk = "".join(
                    log_line("error", f"drill step {n} failed", f"seg{n // SEGMENT:02d}",
                             error_type="DrillError") for n in range(i, i + batch))
                append(log, chunk)
                written = i + batch
                time.sleep(batch / RATE)
        except BaseException as exc:  # surfaced by the test thread
            errors.append(exc)

    t0 = time.monotonic()
    kills: list[float] = []  # wall times: samples up to a kill came from the process killed
    w = threading.Thread(target=writer, name="drill-writer")
    w.start()
    try:
        events = []
        wait_until(lambda: written >= total * 0.3, 30, interval=0.02)
        exp.proc.kill9()
        kills.append(time.time())
        events.append(("SIGKILL", written))
        exp.start()
        wait_until(lambda: written >= total * 0.5, 30, interval=0.02)
        os.rename(log, tmp_path / "app.log.1")  # rename-and-create, as logrotate does
        log.touch()
        events.append(("rotate", written))
        wait_until(lambda: written >= total * 0.75, 30, interval=0.02)
        exp.proc.kill9()
        kills.append(time.time())
        events.append(("SIGKILL", written))
        exp.start()
    finally:
        w.join(timeout=60)
        stop.set()
    assert not errors, errors
    report.written = written

    # Caught up: nothing left to read, and Prometheus has scraped that state twice.
    def caught_up():
        m = exp.metrics()
        return (metric_sum(m, "tailpage_exporter_lag_bytes") == 0
                and metric_sum(m, "tailpage_errors_total", error_type="DrillError") > 0)

    wait_until(caught_up, 30, what="the exporter caught up")

    def scraped_final():  # Prometheus holds the last incarnation's final counts
        total = metric_sum(exp.metrics(), "tailpage_errors_total", error_type="DrillError")
        res = prom.query('sum(tailpage_errors_total{error_type="DrillError"})')
        return res and float(res[0]["value"][1]) == total

    wait_until(scraped_final, 30, interval=0.5, what="Prometheus scraped the final counts")
    time.sleep(0.2)
    edges = [0.0, *kills, time.time()]
    incarnations = list(itertools.pairwise(edges))

    counted = prometheus_counts(prom, incarnations)
    per_seg = {f"seg{s:02d}": counted.get(f"seg{s:02d}", 0) for s in range(SEGMENTS)}
    report.delivered = int(sum(min(v, SEGMENT) for v in per_seg.values()))
    report.duplicated = int(sum(max(0, v - SEGMENT) for v in per_seg.values()))
    report.lost = int(sum(max(0, SEGMENT - v) for v in per_seg.values()))
    m = exp.metrics()
    res = prom.query("max(max_over_time(tailpage_exporter_rotations_total[10m]))")
    rotations = float(res[0]["value"][1]) if res else 0.0
    report.notes.update({
        "events_at_line": events,
        "segments_off": {k: v for k, v in per_seg.items() if v != SEGMENT},
        "rotations_seen": rotations,
        "lag_bytes_after": metric_sum(m, "tailpage_exporter_lag_bytes"),
        "write_rate_lines_per_s": RATE, "checkpoint_interval_s": CHECKPOINT_S,
        "method": "sum over exporter incarnations of the last value Prometheus scraped",
    })
    report.seconds = time.monotonic() - t0
    print(report.line(), report.notes["segments_off"])
    assert rotations >= 1, "the exporter should have seen the rotation"
    assert report.lost == 0, f"lines never counted: {report.as_dict()}"
    # Per SIGKILL at most one checkpoint interval plus one scrape interval is read again (the
    # writer never goes faster than RATE); x2 for checkpoints and scrapes late on a loaded machine.
    bound = 2 * len(kills) * RATE * (CHECKPOINT_S + SCRAPE_S)
    assert report.duplicated <= bound, f"more than one interval re-read: {report.as_dict()}"


def prometheus_counts(prom, incarnations) -> dict[str, float]:
    """component -> sum over incarnations of the last sample scraped during that incarnation."""
    q = urllib.parse.urlencode({"query": 'tailpage_errors_total{error_type="DrillError"}[10m]'})
    result = get_json(f"{prom.url}/api/v1/query?{q}")["data"]["result"]
    out: dict[str, float] = {}
    for series in result:
        comp = series["metric"]["component"]
        for start, end in incarnations:
            inside = [float(v) for t, v in series["values"] if start < float(t) <= end]
            if inside:
                out[comp] = out.get(comp, 0.0) + inside[-1]
    return out


def test_garbage_in_the_log_is_counted_and_skipped(group, drill, tmp_path) -> None:
    """Binary bytes, a 10 MB line, invalid UTF-8: each counted in
    tailpage_exporter_parse_failures_total; the exporter keeps running and counts the good
    lines that follow, exactly."""
    report = drill("log-garbage", "good log lines")
    log = tmp_path / "app.log"
    log.touch()
    exp = start_exporter(group, log)
    good = 200
    before = exp.metrics()
    f0 = metric_sum(before, "tailpage_exporter_parse_failures_total")
    w0 = metric_sum(before, "tailpage_log_lines_total", level="warning")
    t0 = time.monotonic()
    append(log, os.urandom(64 * 1024).replace(b"\n", b"") + b"\n")  # binary
    append(log, b'{"level":"error","message":"' + b"A" * (10 * 1024 * 1024) + b'"}\n')  # 10 MB
    append(log, b'{"level":"error","message":"bad \xff\xfe\xc3\x28 bytes"}\n')  # invalid UTF-8
    append(log, b"\x00\x01\x02\x03garbage\x7f\n")
    append(log, "".join(log_line("warning", f"after the garbage {i}", "api") for i in range(good)))
    report.written = good

    def counted():
        m = exp.metrics()
        return metric_sum(m, "tailpage_log_lines_total", level="warning") - w0 >= good and m

    m = wait_until(counted, 30, what="the good lines after the garbage counted")
    time.sleep(1)
    m = exp.metrics()
    got = metric_sum(m, "tailpage_log_lines_total", level="warning") - w0
    failures = {dict(ls).get("reason"): v for (n, ls), v in m.items()
                if n == "tailpage_exporter_parse_failures_total" and v}
    report.delivered = int(min(got, good))
    report.duplicated = int(max(0, got - good))
    report.lost = int(max(0, good - got))
    report.seconds = time.monotonic() - t0
    report.notes["parse_failures_by_reason"] = failures
    print(report.line(), failures)
    assert exp.proc.alive(), "the exporter died on garbage"
    assert got == good
    assert metric_sum(m, "tailpage_exporter_parse_failures_total") - f0 >= 4, failures
    assert metric_sum(m, "tailpage_exporter_parse_failures_total", reason="too_long") >= 1
    # no garbage became an error series
    assert metric_sum(m, "tailpage_errors_total") == 0
