"""Tail stage: find log files by glob, follow them through rotation and truncation, feed the bytes.

Each followed file is held open by descriptor and identified by (dev, inode), never by name, so:
- rename-and-create: the name now points at another inode; the old descriptor is read to its end,
  kept a grace period (the app may still write to it until it reopens), then released, while the
  new file at the name is read from its beginning;
- copytruncate: the open file became shorter than what was read (or, caught at the next rescan,
  its first bytes changed), so it is read again from 0;
- deleted: the name is gone; the rest is read, then the file is released and its series dropped.

Reads use os.pread at an explicit offset; the tailer owns the offsets, the pipeline's Source only
sees bytes. A checkpoint entry's offset is `offset - source.pending`, so a half-fed line is read
again, whole, after a restart. Once /metrics has been scraped, checkpoints hold the entries as of
the last scrape instead of the read position: counts made after it live only in this process's
memory, so the next process must read those lines again for Prometheus ever to see them.

inotify (exporter/watch.py) wakes the loop when a watched directory changes; while every directory
that matters is watched, the loop otherwise sleeps until a timer is due (rescan, checkpoint, a
partial line's flush), so an idle sidecar does not wake in between. Without inotify (unavailable,
out of watches, or WATCHFILES_FORCE_POLLING set) a poll every `poll_interval` does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from exporter.checkpoint import (
    FINGERPRINT_BYTES,
    CheckpointStore,
    Entry,
    fingerprint_fd,
    matches,
    same_head,
)
from exporter.watch import Watch

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # one pread; a few ms of pipeline work, so scrapes are never kept waiting long
PASS_BUDGET = 4 * CHUNK  # per file per pass, so one busy file does not starve the others
TAIL_SCAN = 64 * 1024  # how far back from the end to look for a newline when starting at "end"


class Source(Protocol):
    """The pipeline's per-file line splitter: bytes in; `pending` is the unterminated tail held."""

    def feed(self, data: bytes) -> None: ...
    @property
    def pending(self) -> int: ...
    def flush(self) -> None: ...


class Opener(Protocol):
    def open(self, path: str, offset: int = 0) -> Source: ...


# No defaults here: the config schema declares them (run.load fills these from the config).
@dataclass(frozen=True)
class Input:
    path: str  # glob
    start_at: str  # "end" or "beginning": where to start a file that existed before its glob did


@dataclass(frozen=True)
class Settings:
    """Seconds."""

    poll_interval: float
    partial_flush_timeout: float
    rescan_interval: float
    checkpoint_interval: float


@dataclass
class PathStats:
    """Self-metric counters per `path` label; dropped when no followed file carries the label."""

    lines: int = 0
    bytes: int = 0
    rotations: int = 0
    truncations: int = 0


@dataclass
class Followed:
    path: str  # absolute path the file was last seen at; also its `path` label
    fd: int
    dev: int
    ino: int
    source: Source
    offset: int  # bytes fed to the source
    size: int = 0  # size at the last fstat
    last_growth: float = 0.0
    detached_at: float | None = None  # when the name stopped leading to this file
    rotation_counted: bool = False
    fp: tuple[int, str] = (0, "")  # (length, sha256) of the first bytes, refreshed while short
    flushed: bool = True  # no partial flush due until new bytes arrive


class Tailer:
    def __init__(
        self,
        inputs: Iterable[Input],
        settings: Settings,
        pipeline: Opener,
        store: CheckpointStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inputs = list(inputs)
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.clock = clock
        self.files: dict[tuple[int, int], Followed] = {}
        self.stats: dict[str, PathStats] = {}
        self.ready = False  # first scan done
        self.checkpoint_ok = 0
        self.checkpoint_failed = 0
        self.last_checkpoint: float | None = None  # wall-clock time of the last successful write
        self.watching = False  # inotify active (else polling only)
        self._saved: list[Entry] | None = None
        self._first_start = True
        self._added: list[Input] = []  # inputs new in a SIGHUP reload, until the next scan
        self._rescan = True
        self._wake = asyncio.Event()
        self._stop = False
        # entries as of the last /metrics render (see the module docstring); None until scraped
        self._scraped: list[Entry] | None = None

    # ---- configuration ------------------------------------------------------------------------

    def reconfigure(self, inputs: Iterable[Input], settings: Settings) -> None:
        """SIGHUP: new globs and intervals; followed files, offsets and counters are kept.

        Files that already exist when a new glob is added start where its `start_at` says, as
        they would have at a first start; files appearing later are read from their beginning.
        """
        old = {os.path.abspath(i.path) for i in self.inputs}
        self.inputs = list(inputs)
        self._added = [i for i in self.inputs if os.path.abspath(i.path) not in old]
        self.settings = settings
        self._rescan = True
        self._wake.set()

    # ---- discovery ----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the checkpoint and do the first scan (after which the exporter is ready)."""
        if self.store is not None:
            self._saved = self.store.load()
        self._first_start = self._saved is None
        self.scan(initial=True)
        if self._saved:
            self._recover_rotated(self._saved)
        self._saved = None
        self.ready = True

    def _start_for(self, path: str, inputs: list[Input]) -> str | None:
        """start_at of the first of `inputs` matching path; None when none does."""
        for inp in inputs:
            if fnmatch.fnmatch(path, os.path.abspath(inp.path)):
                return inp.start_at
        return None

    def scan(self, initial: bool = False) -> None:
        self._rescan = False
        added, self._added = self._added, []
        by_id: dict[tuple[int, int], str] = {}
        for inp in self.inputs:
            for p in glob.glob(os.path.abspath(inp.path), recursive=True):
                try:
                    st = os.stat(p)
                except OSError:
                    continue  # vanished between glob and stat
                if stat.S_ISREG(st.st_mode):
                    by_id[(st.st_dev, st.st_ino)] = p
        now = self.clock()
        for key, f in self.files.items():
            p = by_id.get(key)
            if p is None:
                if f.detached_at is None:
                    f.detached_at = now  # deleted, rotated away or no longer matched by the config
            elif p != f.path or f.detached_at is not None:
                self._relabel(f, p)  # renamed to a name that still matches: keep following
                f.detached_at = None
            if p is not None:
                self._check_head(f)
        for key, p in by_id.items():
            if key not in self.files:
                # Where to start a file we do not follow yet: per its input's start_at if it was
                # there before its input was (first start, or a glob added by SIGHUP), else at 0.
                start = None
                if initial and self._first_start:
                    start = self._start_for(p, self.inputs)
                elif added:
                    start = self._start_for(p, added)
                self._open(p, start)

    def _open(self, path: str, start_at: str | None) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            log.warning("cannot open %s: %s", path, e)
            return
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in self.files:  # replaced between stat and open: next scan
            os.close(fd)
            return
        offset = 0
        resumed = False
        if self._saved:  # only during start()'s scan: resume where the checkpoint says
            for e in self._saved:
                if matches(e, fd, st.st_dev, st.st_ino):
                    self._saved.remove(e)
                    resumed = True
                    offset = e.offset
                    if offset > st.st_size:  # truncated while we were down
                        offset = 0
                        self._stats(path).truncations += 1
                    break
        if not resumed and start_at == "end":
            offset = line_start_before(fd, st.st_size)
        # Otherwise the file is new to us (created after start, or while we were down): read all.
        for other in self.files.values():
            if other.path == path and other.detached_at is not None:
                self._count_rotation(other)  # its name now leads to this file
        self._follow(path, fd, st, offset)
        log.info("following %s from offset %d", path, offset)

    def _follow(self, path: str, fd: int, st: os.stat_result, offset: int,
                detached: bool = False) -> Followed:
        now = self.clock()
        f = Followed(path=path, fd=fd, dev=st.st_dev, ino=st.st_ino,
                     source=self.pipeline.open(path, offset), offset=offset, size=st.st_size,
                     last_growth=now, detached_at=now if detached else None,
                     fp=fingerprint_fd(fd))
        self.files[(f.dev, f.ino)] = f
        self._stats(path)
        return f

    def _count_rotation(self, f: Followed) -> None:
        """Once per file: the moment its name is seen leading to another file."""
        if not f.rotation_counted:
            f.rotation_counted = True
            self._stats(f.path).rotations += 1

    def _recover_rotated(self, leftovers: list[Entry]) -> None:
        """Files rotated away while the exporter was down: finish them from their checkpoint.

        The renamed file usually sits in the same directory under another name (app.log.1).
        """
        for e in leftovers:
            directory = os.path.dirname(e.path)
            try:
                candidates = [d.path for d in os.scandir(directory)
                              if d.inode() == e.ino and d.is_file(follow_symlinks=False)]
            except OSError:
                continue
            for p in candidates:
                try:
                    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) in self.files or not matches(e, fd, st.st_dev, st.st_ino):
                    os.close(fd)
                    continue
                f = self._follow(e.path, fd, st, min(e.offset, st.st_size), detached=True)
                self._count_rotation(f)
                log.info("finishing %s (rotated to %s while stopped) from offset %d",
                         e.path, p, f.offset)
                break

    def _relabel(self, f: Followed, path: str) -> None:
        old = f.path
        f.path = path
        self._stats(path)
        self._drop_label_if_unused(old)

    def _stats(self, path: str) -> PathStats:
        s = self.stats.get(path)
        if s is None:
            s = self.stats[path] = PathStats()
        return s

    def _drop_label_if_unused(self, path: str) -> None:
        if not any(f.path == path for f in self.files.values()):
            self.stats.pop(path, None)

    # ---- reading ------------------------------------------------------------------------------

    def _check_identity(self, f: Followed, now: float) -> None:
        """Notice that the name now leads elsewhere (rename-and-create) or nowhere (deleted)."""
        try:
            st = os.stat(f.path)
            same = (st.st_dev, st.st_ino) == (f.dev, f.ino)
        except OSError:
            same = False
            st = None
        if same:
            return
        f.detached_at = now
        self._rescan = True  # pick up the file that replaced it without waiting for the rescan
        if st is not None:
            self._count_rotation(f)

    def _check_head(self, f: Followed) -> None:
        """Catch a copytruncate that was refilled past our offset between two polls."""
        n, digest = f.fp
        if n and not same_head(f.fd, n, digest):
            self._truncated(f, "first bytes changed")

    def _truncated(self, f: Followed, why: str) -> None:
        log.info("%s truncated (%s); reading again from 0", f.path, why)
        # The held-back partial line belonged to the old content: emit it rather than glue it to
        # the new content, so the checkpoint offset (offset - pending) stays meaningful.
        f.source.flush()
        f.offset = 0
        f.flushed = True
        f.fp = fingerprint_fd(f.fd)
        self._stats(f.path).truncations += 1

    def _read(self, f: Followed, now: float) -> bool:
        """Read up to the pass budget; True when more is waiting."""
        size = os.fstat(f.fd).st_size
        if size < f.offset:
            self._truncated(f, f"size {size} < offset {f.offset}")
        elif size != f.size:
            # Grown since the last look: a copytruncate refilled past our offset between two
            # looks shows only in the first bytes. One 1 KiB pread + sha256 per growth is cheap.
            self._check_head(f)
        f.size = size
        stats = self._stats(f.path)
        budget = PASS_BUDGET
        while f.offset < size and budget > 0:
            data = os.pread(f.fd, min(CHUNK, size - f.offset, budget), f.offset)
            if not data:
                break
            f.offset += len(data)
            budget -= len(data)
            stats.bytes += len(data)
            stats.lines += data.count(b"\n")
            f.last_growth = now
            f.flushed = False
            f.source.feed(data)
        if f.fp[0] < FINGERPRINT_BYTES and f.offset > f.fp[0]:
            f.fp = fingerprint_fd(f.fd)
        return f.offset < size

    def poll(self) -> bool:
        """One pass over all files: identity checks, reads, partial flushes, releases.

        Returns True when some file has more to read right away.
        """
        now = self.clock()
        if self._rescan:  # asked for (timer, inotify create/move/delete, reload): globs first
            self.scan()
        for f in list(self.files.values()):
            if f.detached_at is None:
                self._check_identity(f, now)
        if self._rescan:  # a name now leads elsewhere: open its new file in this same pass
            self.scan()
        more = False
        for key, f in list(self.files.items()):
            try:
                more |= self._read(f, now)
            except OSError as e:  # e.g. EIO on a broken volume: release rather than spin
                log.error("reading %s failed: %s; releasing it", f.path, e)
                self._release(key, f)
                continue
            if f.detached_at is not None:
                quiet_since = max(f.detached_at, f.last_growth)
                if f.offset >= f.size and now - quiet_since >= self.settings.rescan_interval:
                    self._release(key, f)
                    continue
            if (not f.flushed and now - f.last_growth >= self.settings.partial_flush_timeout):
                f.flushed = True
                if f.source.pending:
                    f.source.flush()
        return more

    def _release(self, key: tuple[int, int], f: Followed) -> None:
        f.source.flush()
        with contextlib.suppress(OSError):
            os.close(f.fd)
        del self.files[key]
        self._drop_label_if_unused(f.path)
        log.info("released %s (read to offset %d)", f.path, f.offset)

    # ---- checkpoints --------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        out = []
        for f in self.files.values():
            n, digest = f.fp
            out.append(Entry(path=f.path, dev=f.dev, ino=f.ino,
                             offset=max(0, f.offset - f.source.pending), fp_len=n,
                             fingerprint=digest))
        return out

    def mark_scraped(self) -> None:
        """Called right after a /metrics render, on the loop: every count so far was served."""
        self._scraped = self.entries()

    async def write_checkpoint(self) -> None:
        if self.store is None:
            return
        # Snapshot on the loop (the fsyncs run in a thread): the last scrape's entries once there
        # has been one, else the read position.
        entries = self._scraped if self._scraped is not None else self.entries()
        try:
            await asyncio.to_thread(self.store.save, entries)
        except OSError as e:
            self.checkpoint_failed += 1
            log.error("writing checkpoint %s failed: %s", self.store.path, e)
            return
        self.checkpoint_ok += 1
        self.last_checkpoint = time.time()

    def lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files.values():
            try:
                size = os.fstat(f.fd).st_size
            except OSError:
                size = f.size
            out[f.path] = out.get(f.path, 0) + max(0, size - f.offset)
        return out

    # ---- loop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def wake(self, rescan: bool = False) -> None:
        """Look again now (inotify saw a change); with rescan, match the globs again first."""
        self._rescan |= rescan
        self._wake.set()

    async def run(self) -> None:
        """Follow until stop(); then a final read-free checkpoint is the caller's job (close())."""
        if not self.ready:
            self.start()
        # At once: a kill -9 before the first interval must not turn the next start into a
        # "first start" that skips to the end of files it has already half read.
        await self.write_checkpoint()
        watch = Watch(self, asyncio.get_running_loop())
        try:
            next_rescan = self.clock() + self.settings.rescan_interval
            next_checkpoint = self.clock() + self.settings.checkpoint_interval
            while not self._stop:
                now = self.clock()
                if now >= next_rescan:
                    self._rescan = True
                    next_rescan = now + self.settings.rescan_interval
                scanning = self._rescan
                more = self.poll()
                if scanning:
                    watch.sync()  # directories (or followed files' real directories) new or gone
                if now >= next_checkpoint:
                    await self.write_checkpoint()
                    next_checkpoint = self.clock() + self.settings.checkpoint_interval
                if more:
                    await asyncio.sleep(0)  # let scrapes and signals in between chunks
                    continue
                self._wake.clear()
                if self.watching:  # inotify wakes us on writes: sleep until a timer is due
                    due = min(next_rescan, next_checkpoint, self._next_timer())
                    timeout = max(0.001, due - self.clock())
                else:
                    timeout = self.settings.poll_interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            watch.close()

    def _next_timer(self) -> float:
        """When a partial line is due to be flushed or a detached file to be released."""
        s, due = self.settings, float("inf")
        for f in self.files.values():
            if not f.flushed:
                due = min(due, f.last_growth + s.partial_flush_timeout)
            if f.detached_at is not None:
                due = min(due, max(f.detached_at, f.last_growth) + s.rescan_interval)
        return due

    async def close(self) -> None:
        """Shutdown: write the final checkpoint, then close every file (nothing more is read)."""
        await self.write_checkpoint()
        for f in self.files.values():
            with contextlib.suppress(OSError):
                os.close(f.fd)
        self.files.clear()



def line_start_before(fd: int, size: int) -> int:
    """Offset just after the last newline before `size` (start at the end, but with whole lines)."""
    if size == 0:
        return 0
    start = max(0, size - TAIL_SCAN)
    tail = os.pread(fd, size - start, start)
    i = tail.rfind(b"\n")
    if i < 0:
        return size if start > 0 else 0  # one huge unfinished line: skip it rather than read 64k+
    return start + i + 1
