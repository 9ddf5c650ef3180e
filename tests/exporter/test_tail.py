"""Tail stage against real files: start positions, partial lines, rotation, truncation, deletion,
many files, checkpoint resume. The pipeline here is a tiny line recorder (a real Source that splits
lines), so what is asserted is exactly which bytes the tailer fed, once each."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest
from exporter_helpers import RecordingPipeline, until

from exporter.checkpoint import CheckpointStore
from exporter.tail import PASS_BUDGET, Input, Settings, Tailer, line_start_before
from exporter.watch import watch_root


class Clock:
    """Time moves only when a test says so: grace periods and flush timeouts without waiting."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


SETTINGS = Settings(poll_interval=0.05, partial_flush_timeout=2.0, rescan_interval=3.0,
                    checkpoint_interval=1.0)


def append(path, *lines: str, end: str = "\n") -> None:
    with open(path, "a") as f:
        f.write("".join(ln + end for ln in lines))


def make(tmp_path, start_at="end", store=None, pattern="*.log"):
    pipe, clock = RecordingPipeline(), Clock()
    t = Tailer([Input(str(tmp_path / pattern), start_at)], SETTINGS, pipe, store, clock)
    return t, pipe, clock


def started(tmp_path, name: str = "app.log"):
    """An empty log file that existed at the first start, and a started tailer following it."""
    log = tmp_path / name
    log.touch()
    t, pipe, clock = make(tmp_path)
    t.start()
    return log, t, pipe, clock


def drain(t: Tailer) -> None:
    while t.poll():
        pass


def test_start_positions_and_split_line(tmp_path):
    old = tmp_path / "old.log"
    append(old, "before-1", "before-2")
    append(old, "half-written", end="")  # unfinished last line: read whole once completed
    t, pipe, _clock = make(tmp_path)
    t.start()
    assert t.ready
    drain(t)
    assert pipe.texts() == []
    append(old, " now-complete", "after-1")
    new = tmp_path / "new.log"  # created after start: read from its beginning
    append(new, "new-1")
    t._rescan = True
    drain(t)
    assert sorted(pipe.texts()) == [b"after-1", b"half-written now-complete", b"new-1"]
    # a line split across two writes is one line
    append(new, '{"a":', end="")
    drain(t)
    append(new, '1}')
    drain(t)
    assert pipe.texts()[-1] == b'{"a":1}'
    assert t.stats[str(old)].lines == 2 and t.stats[str(new)].lines == 2


def test_partial_line_flushed_after_timeout(tmp_path):
    f, t, pipe, clock = started(tmp_path)
    append(f, "no newline yet", end="")
    drain(t)
    clock.t += SETTINGS.partial_flush_timeout - 0.1
    drain(t)
    assert pipe.texts() == []
    assert t.entries()[0].offset == 0  # checkpoint stays before the held-back bytes
    clock.t += 0.2
    drain(t)
    assert pipe.texts() == [b"no newline yet"]
    assert t.entries()[0].offset == len(b"no newline yet")


def test_start_at_beginning(tmp_path):
    append(tmp_path / "a.log", "x", "y")
    t, pipe, _ = make(tmp_path, start_at="beginning")
    t.start()
    drain(t)
    assert pipe.texts() == [b"x", b"y"]


def test_rename_and_create_rotation(tmp_path):
    log, t, pipe, clock = started(tmp_path)
    append(log, *[f"a{i}" for i in range(100)])
    drain(t)
    # the app writes more, then logrotate renames; the app keeps writing to the old inode a bit
    append(log, *[f"b{i}" for i in range(50)])
    os.rename(log, tmp_path / "app.log.1")
    append(tmp_path / "app.log.1", "late-to-old")
    append(log, *[f"c{i}" for i in range(30)])  # the app reopened: new file, same name
    drain(t)
    expected = [f"a{i}" for i in range(100)] + [f"b{i}" for i in range(50)] + ["late-to-old"] + [
        f"c{i}" for i in range(30)]
    assert sorted(pipe.texts()) == sorted(e.encode() for e in expected)
    assert t.stats[str(log)].rotations == 1
    assert len(t.files) == 2  # the old one drains for a grace period
    clock.t += SETTINGS.rescan_interval + 0.1
    drain(t)
    assert len(t.files) == 1 and t.stats[str(log)].lines == len(expected)


def test_copytruncate(tmp_path):
    log, t, pipe, _clock = started(tmp_path)
    append(log, *[f"a{i}" for i in range(100)])
    drain(t)
    shutil.copy(log, tmp_path / "app.log.1")
    with open(log, "r+") as f:
        f.truncate(0)
    append(log, "after-1", "after-2")
    drain(t)
    assert pipe.texts()[-2:] == [b"after-1", b"after-2"]
    assert len(pipe.texts()) == 102
    assert t.stats[str(log)].truncations == 1


def test_truncated_and_refilled_past_offset_is_caught_by_head_check(tmp_path):
    log, t, pipe, _clock = started(tmp_path)
    append(log, "first-line-of-old-content")
    drain(t)
    with open(log, "r+") as f:
        f.truncate(0)
    append(log, *[f"refilled-{i:04d}" for i in range(10)])  # longer than before: size > offset
    drain(t)  # no rescan needed: growth makes the read compare the file's first bytes
    assert pipe.texts()[1:] == [f"refilled-{i:04d}".encode() for i in range(10)]
    assert t.stats[str(log)].truncations == 1


def test_deleted_while_open_is_read_to_end_then_released(tmp_path):
    log, t, pipe, clock = started(tmp_path, "gone.log")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"one\ntwo\n")
    os.unlink(log)
    os.write(fd, b"three\n")  # still written through the writer's descriptor
    drain(t)
    assert pipe.texts() == [b"one", b"two", b"three"]
    clock.t += SETTINGS.rescan_interval + 0.1
    drain(t)
    os.close(fd)
    assert t.files == {} and t.stats == {}  # series of released files are dropped


def test_renamed_to_a_name_that_still_matches(tmp_path):
    log, t, pipe, _clock = started(tmp_path)
    append(log, "x")
    drain(t)
    os.rename(log, tmp_path / "app-1.log")
    append(tmp_path / "app-1.log", "y")
    drain(t)
    assert pipe.texts() == [b"x", b"y"]  # same inode followed once, under its new name
    assert list(t.stats) == [str(tmp_path / "app-1.log")] and len(t.files) == 1


def test_many_files(tmp_path):
    t, pipe, _clock = make(tmp_path, pattern="*/*.log")
    for d in range(5):
        (tmp_path / f"d{d}").mkdir()
    t.start()
    for d in range(5):
        for i in range(40):
            append(tmp_path / f"d{d}" / f"f{i}.log", *[f"{d}-{i}-{k}" for k in range(25)])
    t._rescan = True
    drain(t)
    assert len(pipe.lines) == 5 * 40 * 25 and len(set(pipe.lines)) == 5 * 40 * 25
    assert len(t.files) == 200


def test_checkpoint_resume_replace_and_rotate_while_down(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    store = CheckpointStore(str(tmp_path / "state" / "ckpt.json"))
    a, b, c = logs / "a.log", logs / "b.log", logs / "c.log"
    for p in (a, b, c):
        append(p, "old-" + p.name)
    t1, pipe1, _ = make(logs, store=store)
    t1.start()
    append(a, "a1", "partial", end="")  # "a1partial": held back, so re-read whole after restart
    append(b, "b1")
    append(c, "c1")
    drain(t1)
    store.save(t1.entries())
    assert pipe1.texts() == [b"b1", b"c1"]  # sorted order of files; a's line is still partial
    for f in list(t1.files.values()):
        os.close(f.fd)
    # while the exporter is down: a grows, b is replaced under its name, c is rotated away
    append(a, "-done")
    b.unlink()
    append(b, "new-b")
    os.rename(c, logs / "c.log.1")
    append(logs / "c.log.1", "c2")
    append(c, "new-c")
    t2, pipe2, _ = make(logs, store=store)
    t2.start()
    drain(t2)
    assert sorted(pipe2.texts()) == sorted([b"a1partial-done", b"new-b", b"c2", b"new-c"])
    assert t2.stats[str(c)].rotations == 1


def test_start_at_end_backs_up_to_the_start_of_the_unfinished_line(tmp_path):
    p = tmp_path / "x.log"
    p.write_bytes(b"l1\nl2\nhalf")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert line_start_before(fd, 11) == 6
        assert line_start_before(fd, 2) == 0  # no newline before: the whole file is one line
        assert line_start_before(fd, 0) == 0
    finally:
        os.close(fd)


def test_watch_root_is_the_deepest_fixed_directory():
    assert watch_root("/var/log/app/*.log") == ("/var/log/app", False)
    assert watch_root("/var/log/pods/*/*/0.log") == ("/var/log/pods", True)


def test_glob_added_by_reload_starts_existing_files_at_end(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    append(tmp_path / "b" / "old.log", "b-before-reload")
    append(tmp_path / "c" / "old.log", "c-before-reload")
    pipe, clock = RecordingPipeline(), Clock()
    t = Tailer([Input(str(tmp_path / "a" / "*.log"), "end")], SETTINGS, pipe, None, clock)
    t.start()
    append(tmp_path / "a" / "x.log", "a-1")
    t._rescan = True
    drain(t)
    t.reconfigure([Input(str(tmp_path / "a" / "*.log"), "end"),
                   Input(str(tmp_path / "b" / "*.log"), "end"),
                   Input(str(tmp_path / "c" / "*.log"), "beginning")], SETTINGS)
    drain(t)
    append(tmp_path / "b" / "old.log", "b-after-reload")
    append(tmp_path / "b" / "new.log", "b-new")  # created after the reload: from its beginning
    append(tmp_path / "a" / "x.log", "a-2")
    t._rescan = True
    drain(t)
    assert sorted(pipe.texts()) == [b"a-1", b"a-2", b"b-after-reload", b"b-new",
                                    b"c-before-reload"]


def test_lag_is_size_minus_offset_while_behind(tmp_path):
    log, t, pipe, _clock = started(tmp_path, "big.log")
    line = "x" * 99
    n = (3 * PASS_BUDGET) // 100
    append(log, *[line] * n)
    assert t.poll() is True  # one pass reads at most PASS_BUDGET per file
    assert t.lag() == {str(log): n * 100 - PASS_BUDGET}
    drain(t)
    assert t.lag() == {str(log): 0} and len(pipe.lines) == n


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
async def test_inotify_wakes_the_loop_and_polling_is_the_fallback(tmp_path, monkeypatch, polling):
    """With inotify the poll and rescan intervals are an hour, so only the watch can deliver the
    lines (appended ones and a new file's); with inotify off, the poll does. How fast is the
    benchmark's business (bench/exporter_live.py); here a generous bound only catches a hang."""
    if polling:
        monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
    log = tmp_path / "app.log"
    log.touch()
    slow = 3600.0
    settings = Settings(poll_interval=0.1 if polling else slow,
                        rescan_interval=0.3 if polling else slow,
                        partial_flush_timeout=slow, checkpoint_interval=slow)
    pipe = RecordingPipeline()
    t = Tailer([Input(str(tmp_path / "*.log"), "end")], settings, pipe)
    task = asyncio.create_task(t.run())
    try:
        await until(lambda: t.ready, "first scan")  # the file's (empty) end is the start
        if not polling:
            await until(lambda: t.watching, "inotify watches in place")
        for i in range(3):
            append(log, f"line-{i}")
            await until(lambda i=i: len(pipe.lines) > i, f"line-{i} read: {pipe.texts()}")
        append(tmp_path / "new.log", "in-new-file")  # a new file is found without a rescan
        await until(lambda: len(pipe.lines) == 4, f"new file read: {pipe.texts()}")
    finally:
        t.stop()
        await task
        await t.close()
    assert pipe.texts() == [b"line-0", b"line-1", b"line-2", b"in-new-file"]
    assert t.watching is not polling


async def test_inotify_follows_a_symlinked_log_in_its_real_directory(tmp_path):
    """/var/log/containers/*.log are links into /var/log/pods: the writes happen beside the
    target, so that directory is watched too (every interval is an hour: only inotify can bring
    the lines)."""
    real, links = tmp_path / "pods", tmp_path / "containers"
    real.mkdir()
    links.mkdir()
    target = real / "0.log"
    target.touch()
    (links / "app.log").symlink_to(target)
    slow = 3600.0
    settings = Settings(poll_interval=slow, rescan_interval=slow, partial_flush_timeout=slow,
                        checkpoint_interval=slow)
    pipe = RecordingPipeline()
    t = Tailer([Input(str(links / "*.log"), "end")], settings, pipe)
    task = asyncio.create_task(t.run())
    try:
        await until(lambda: t.watching, "inotify watches in place")
        for i in range(3):
            append(target, f"line-{i}")
            await until(lambda i=i: len(pipe.lines) > i, f"line-{i} read: {pipe.texts()}")
    finally:
        t.stop()
        await task
        await t.close()
    assert pipe.texts() == [b"line-0", b"line-1", b"line-2"]
