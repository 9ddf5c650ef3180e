"""inotify for the tail stage: wake the tailer when a directory it depends on changes.

The kernel queues the events on one descriptor the event loop reads (no thread, no timer), so an
idle exporter does not wake at all. Events only wake the tailer early: what changed is found by its
own pass over the files, exactly as when it polls, so a missed or merged event costs latency, never
correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from exporter.checkpoint import TMP_PREFIX as CHECKPOINT_TMP_PREFIX

if TYPE_CHECKING:
    from inotify_simple import INotify

    from exporter.tail import Followed, Input, Tailer

log = logging.getLogger("exporter.tail")


def has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def watch_root(pattern: str) -> tuple[str, bool]:
    """The deepest directory a glob cannot leave, and whether matches may lie below its children."""
    parts = os.path.abspath(pattern).split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if has_magic(part):
            return os.sep.join(fixed) or os.sep, True
        fixed.append(part)
    return os.sep.join(fixed) or os.sep, False


def watch_dirs(inputs: Iterable[Input], files: Iterable[Followed]) -> set[str]:
    """Every directory whose changes may concern us: each glob's fixed root (and, for globs
    that may match below it, every directory under it), plus the real directory of each
    followed file (a symlinked log's writes happen there, not beside the link)."""
    dirs: set[str] = set()
    for inp in inputs:
        root, deep = watch_root(inp.path)
        if not os.path.isdir(root):
            continue
        dirs.add(root)
        if deep:
            dirs.update(d for d, _, _ in os.walk(root))
    for f in files:
        if f.detached_at is None:
            dirs.add(os.path.dirname(os.path.realpath(f.path)))
    return dirs


# inotify events that mean "look again" (IN_MODIFY: appended or truncated; the rest: a name
# appeared, went or moved, so the globs must be matched again).
IN_MODIFY = 0x2
IN_NAMES = 0x40 | 0x80 | 0x100 | 0x200  # MOVED_FROM, MOVED_TO, CREATE, DELETE
IN_SELF = 0x400 | 0x800  # DELETE_SELF, MOVE_SELF: a watched directory went
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
WATCH_MASK = IN_MODIFY | IN_NAMES | IN_SELF


class Watch:
    """inotify on the directories that matter, read by the event loop (no thread, no timer): it
    only wakes the tailer early. While it is off or incomplete the tailer polls every
    `poll_interval`; `WATCHFILES_FORCE_POLLING` (any value) turns it off, e.g. on network volumes
    where inotify sees no remote writes."""

    def __init__(self, tailer: Tailer, loop: asyncio.AbstractEventLoop) -> None:
        self.tailer, self.loop = tailer, loop
        self.wds: dict[int, str] = {}  # watch descriptor -> directory
        self.failed: set[str] = set()  # directories whose watch failed (logged once)
        self.ino: INotify | None = None
        self.forced = bool(os.environ.get("WATCHFILES_FORCE_POLLING"))
        self.unavailable: str | None = None  # why inotify could not be had (logged once)
        if self.forced:
            log.info("WATCHFILES_FORCE_POLLING set: polling every %ss",
                     tailer.settings.poll_interval)
            return
        self.sync()

    def _open(self) -> INotify | None:
        """The inotify instance, made now if need be (tried again at each sync until it works)."""
        if self.ino is not None or self.forced:
            return self.ino
        try:
            from inotify_simple import INotify

            self.ino = INotify(nonblocking=True)
        except (ImportError, OSError) as e:  # e.g. fs.inotify.max_user_instances reached
            if str(e) != self.unavailable:
                log.warning("inotify unavailable (%s); polling every %ss",
                            e, self.tailer.settings.poll_interval)
                self.unavailable = str(e)
            return None
        self.unavailable = None
        self.loop.add_reader(self.ino.fileno(), self._on_events)
        return self.ino

    def sync(self) -> None:
        """Watch the directories the tailer needs, drop the others; `watching` says whether all
        are watched (else the tailer keeps polling)."""
        ino = self._open()
        if ino is None:
            return
        t = self.tailer
        wanted = watch_dirs(t.inputs, t.files.values())
        have = set(self.wds.values())
        for d in sorted(wanted - have):
            try:
                self.wds[ino.add_watch(d, WATCH_MASK)] = d
                self.failed.discard(d)
            except OSError as e:  # ENOSPC: max_user_watches reached; EACCES
                if d not in self.failed:
                    log.warning("inotify watch on %s failed (%s); polling every %ss",
                                d, e, t.settings.poll_interval)
                    self.failed.add(d)
        for wd, d in list(self.wds.items()):
            if d not in wanted:
                del self.wds[wd]
                with contextlib.suppress(OSError):
                    ino.rm_watch(wd)
        watching = bool(wanted) and wanted <= set(self.wds.values())
        if watching and not t.watching:
            log.info("inotify watching %s", ", ".join(sorted(wanted)))
        t.watching = watching

    def _on_events(self) -> None:
        if self.ino is None:
            return
        try:
            events = self.ino.read(timeout=0)
        except OSError as e:
            log.warning("reading inotify events failed (%s); polling every %ss",
                        e, self.tailer.settings.poll_interval)
            self.close()
            self.tailer.watching = False
            return
        rescan = resync = woken = False
        for ev in events:
            if ev.mask & IN_IGNORED:  # the directory is gone (or unwatched)
                self.wds.pop(ev.wd, None)
            elif self._ours(ev.wd, ev.name):
                continue
            woken = True
            if ev.mask & (IN_NAMES | IN_SELF | IN_Q_OVERFLOW):
                rescan = True
            if ev.mask & (IN_SELF | IN_Q_OVERFLOW | IN_IGNORED) or (
                    ev.mask & IN_ISDIR and ev.mask & IN_NAMES):
                resync = True
        if resync:
            self.sync()
        if woken:
            self.tailer.wake(rescan)

    def _ours(self, wd: int, name: str) -> bool:
        """The event is about our own checkpoint (its temporary file or the rename that replaces
        it): no reason to look at the logs again when it shares their directory."""
        store = self.tailer.store
        if store is None or not name:
            return False
        directory, base = os.path.split(os.path.abspath(store.path))
        return self.wds.get(wd) == directory and (
            name == base or name.startswith(CHECKPOINT_TMP_PREFIX))

    def close(self) -> None:
        if self.ino is not None:
            self.loop.remove_reader(self.ino.fileno())
            self.ino.close()
            self.ino = None
        self.wds.clear()
