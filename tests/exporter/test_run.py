"""The real `tailpage-exporter run` process: restarts after SIGTERM and SIGKILL compared with the
ground truth written, rotation in the middle of a stream, SIGHUP reload, bad config, latency."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

EXE = shutil.which("tailpage-exporter", path=os.path.dirname(sys.executable))
LEVELS = ["info", "debug", "warn", "error", "info", "info", "fatal"]


def line(i: int) -> str:
    rec = {"timestamp": f"2026-11-22T00:00:{i % 60:02d}Z", "level": LEVELS[i % len(LEVELS)],
           "message": f"request {i} completed", "component": "api"}
    if rec["level"] in ("error", "fatal"):
        rec.update(error_type="TimeoutError", message=f"upstream timeout after {i}ms")
    return json.dumps(rec) + "\n"


class Exporter:
    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp, self.config = tmp, config
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.err = self.tmp / f"exporter-{self.starts}.err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [EXE, "run", "--config", str(self.config), "--listen", "127.0.0.1:0"],
                stdout=err, stderr=err, start_new_session=True)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/metrics", self.err.read_text())
            if m:
                self.url = m.group(1)
                break
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.05)
        else:
            raise AssertionError("exporter did not start: " + self.err.read_text())
        while self.get("/-/ready")[0] != 200:
            assert time.monotonic() < end, self.err.read_text()
            time.sleep(0.05)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, text = self.get("/metrics")
        assert status == 200
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def by_level(self) -> dict[str, int]:
        return {dict(lbl)["level"]: int(v) for (name, lbl), v in self.metrics().items()
                if name == "tailpage_log_lines_total" and v}

    def lines(self) -> int:
        return sum(self.by_level().values())

    def wait_lines(self, n: int, timeout: float = 10, settle: float = 0.6) -> int:
        """Wait for exactly n counted lines, then make sure no more arrive (nothing doubled)."""
        end = time.monotonic() + timeout
        while self.lines() < n and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(settle)
        return self.lines()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def config_text(tmp_path: Path, logs: Path, interval: str) -> str:
    return f"""
inputs:
  - path: "{logs}/*.log"
checkpoint:
  path: "{tmp_path}/state/checkpoints.json"
  interval: {interval}
tail:
  poll_interval: 100ms
  partial_flush_timeout: 2s
  rescan_interval: 500ms
"""


@pytest.fixture
def exporter(request, tmp_path):
    """The process under test; `@pytest.mark.parametrize("exporter", [...], indirect=True)` sets
    the checkpoint interval (default 300ms)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(config_text(tmp_path, logs, getattr(request, "param", "300ms")))
    e = Exporter(tmp_path, cfg)
    e.logs = logs
    yield e
    e.kill()


def truth(*ranges: range) -> dict[str, int]:
    """Lines by level that the exporter must have counted for the lines numbered in `ranges`."""
    out: dict[str, int] = {}
    for r in ranges:
        for i in r:
            lvl = {"warn": "warning"}.get(LEVELS[i % len(LEVELS)], LEVELS[i % len(LEVELS)])
            out[lvl] = out.get(lvl, 0) + 1
    return out


def write(path: Path, start: int, n: int) -> int:
    with open(path, "a") as f:
        f.write("".join(line(i) for i in range(start, start + n)))
    return start + n


@pytest.mark.parametrize("exporter", ["1h"], indirect=True)  # only the shutdown checkpoint counts
def test_sigterm_restart_loses_and_doubles_nothing(exporter):
    app = exporter.logs / "app.log"
    i = write(app, 0, 50)  # existed before the first start: skipped (start_at: end)
    exporter.start()
    i = write(app, i, 300)
    assert exporter.wait_lines(300) == 300
    os.rename(app, exporter.logs / "app.log.1")  # rename-and-create in the middle of the stream
    write(exporter.logs / "app.log.1", i, 20)  # late lines to the renamed file still count
    i = write(app, i + 20, 200)
    assert exporter.wait_lines(520) == 520
    shutil.copy(app, exporter.logs / "app.log.2")  # copytruncate
    with open(app, "r+") as f:
        f.truncate(0)
    i = write(app, i, 100)
    assert exporter.wait_lines(620) == 620
    assert exporter.by_level() == truth(range(50, 670))
    m = exporter.metrics()
    p = (("path", str(app)),)
    assert m[("tailpage_exporter_rotations_total", p)] == 1
    assert m[("tailpage_exporter_truncations_total", p)] == 1
    half = line(i)
    with open(app, "a") as f:
        f.write(half[:25])  # a half-written line at shutdown
    time.sleep(0.3)
    assert exporter.stop() == 0
    assert "final checkpoint" in exporter.err.read_text()
    with open(app, "a") as f:
        f.write(half[25:])
    j = write(app, i + 1, 400)  # written while the exporter is down
    exporter.start()
    # the joined line + 400: nothing lost, nothing twice, no fragment of the split line
    assert exporter.wait_lines(401) == 401
    assert exporter.by_level() == truth(range(i, j))
    j = write(app, j, 10)
    assert exporter.wait_lines(411) == 411
    assert exporter.stop(signal.SIGINT) == 0


def test_sigkill_rereads_at_most_one_interval(exporter):
    app = exporter.logs / "app.log"
    app.touch()
    ckpt = exporter.tmp / "state" / "checkpoints.json"
    exporter.start()
    i = write(app, 0, 500)
    assert exporter.wait_lines(500) == 500
    seen = time.time()
    while not (ckpt.exists() and ckpt.stat().st_mtime > seen + 0.05):
        assert time.time() - seen < 5, "no periodic checkpoint"
        time.sleep(0.05)  # a checkpoint written after everything was read
    exporter.kill()
    i = write(app, i, 300)
    exporter.start()
    assert exporter.wait_lines(300) == 300
    assert exporter.by_level() == truth(range(500, 800))
    # now kill right after reading, most likely before the next checkpoint
    i = write(app, i, 200)
    assert exporter.wait_lines(500, settle=0) == 500
    exporter.kill()
    i = write(app, i, 100)
    exporter.start()
    got = exporter.wait_lines(100)
    assert 100 <= got <= 300, got  # at most the last interval's 200 lines read again


def test_replaced_file_is_new_and_deleted_files_are_released(exporter):
    a, b = exporter.logs / "a.log", exporter.logs / "b.log"
    a.touch()
    exporter.start()
    write(a, 0, 100)
    write(b, 0, 50)  # created after start: read from its beginning
    assert exporter.wait_lines(150) == 150
    assert exporter.stop() == 0
    a.unlink()
    write(a, 1000, 30)  # same name, new file: not confused with the checkpointed one
    exporter.start()
    assert exporter.wait_lines(30) == 30
    b.unlink()
    end = time.monotonic() + 5
    while exporter.metrics().get(("tailpage_exporter_files_watched", ())) != 1:
        assert time.monotonic() < end
        time.sleep(0.1)
    assert not any(str(b) in dict(lbl).get("path", "") for _, lbl in exporter.metrics())


def test_line_visible_on_metrics_within_a_second(exporter):
    app = exporter.logs / "app.log"
    app.touch()
    exporter.start()
    delays = []
    for k in range(5):
        write(app, k, 1)
        t0 = time.monotonic()
        while exporter.lines() < k + 1:
            assert time.monotonic() - t0 < 3
            time.sleep(0.01)
        delays.append(time.monotonic() - t0)
    assert max(delays) < 1.0, delays


def test_sighup_reload_keeps_counts_and_follows_new_globs(exporter):
    a = exporter.logs / "a.log"
    a.touch()
    other = exporter.tmp / "other"
    other.mkdir()
    exporter.start()
    write(a, 0, 40)
    assert exporter.wait_lines(40) == 40
    cfg = exporter.config.read_text()
    exporter.config.write_text("inputs: [oops\n")  # a broken edit: reload refused, still running
    exporter.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "config not reloaded" in exporter.err.read_text()
    assert str(exporter.config) in exporter.err.read_text()
    exporter.config.write_text(cfg.replace("inputs:\n", f'inputs:\n  - path: "{other}/*.log"\n'))
    exporter.proc.send_signal(signal.SIGHUP)
    end = time.monotonic() + 5
    while "config reloaded" not in exporter.err.read_text():
        assert time.monotonic() < end
        time.sleep(0.05)
    write(other / "x.log", 0, 7)
    write(a, 40, 3)
    assert exporter.wait_lines(50) == 50  # counts kept, offsets kept, the new glob followed


def test_bad_config_exits_2_naming_file_and_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tail:\n  poll_interval: 10 parsecs\n")
    r = subprocess.run([EXE, "run", "--config", str(cfg), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert str(cfg) in r.stderr and "tail.poll_interval" in r.stderr
