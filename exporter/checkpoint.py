"""Checkpoint store: where each tailed file was read up to, kept across restarts.

One JSON document, replaced atomically (temp file in the same directory, fsync, rename, fsync of
the directory) so a crash at any moment leaves either the old or the new checkpoint, never a torn
one. Entries are matched to files by (dev, inode) *and* a fingerprint of the file's first bytes:
the inode alone is not enough because filesystems reuse inode numbers for a file replaced under the
same name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

# sha256 of the first FINGERPRINT_BYTES bytes (or of the whole file while it is shorter; the length
# used is stored with the hash so a grown file still matches its earlier, shorter fingerprint).
FINGERPRINT_BYTES = 1024
VERSION = 1
TMP_PREFIX = ".checkpoint-"  # the temporary file a save writes, then renames over the checkpoint


@dataclass(frozen=True)
class Entry:
    path: str  # where the file was last seen (informative: matching is by dev/inode + fingerprint)
    dev: int
    ino: int
    offset: int  # first byte not yet turned into a record: resume here
    fp_len: int  # how many leading bytes the fingerprint covers
    fingerprint: str  # sha256 hex of those bytes


def fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def fingerprint_fd(fd: int, limit: int = FINGERPRINT_BYTES) -> tuple[int, str]:
    """(length, sha256 hex) of the first `limit` bytes of an open file; its offset is untouched."""
    head = os.pread(fd, limit, 0)
    return len(head), fingerprint(head)


def same_head(fd: int, fp_len: int, digest: str) -> bool:
    """True when the open file still starts with the bytes fingerprinted as (fp_len, digest)."""
    head = os.pread(fd, fp_len, 0)
    return len(head) == fp_len and fingerprint(head) == digest


def matches(entry: Entry, fd: int, dev: int, ino: int) -> bool:
    """True when the open file is the one the entry was written for."""
    return (entry.dev, entry.ino) == (dev, ino) and same_head(fd, entry.fp_len, entry.fingerprint)


class CheckpointStore:
    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> list[Entry] | None:
        """The saved entries; None when there is no checkpoint yet (a first start).

        An unreadable or corrupt checkpoint is logged, kept aside as <path>.corrupt for inspection,
        and treated as a first start: the exporter must come up rather than crash-loop.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            if doc.get("version") != VERSION:
                raise ValueError(f"unsupported checkpoint version {doc.get('version')!r}")
            return [Entry(**e) for e in doc["files"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.error("checkpoint %s unreadable (%s); starting as on a first start", self.path, e)
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path + ".corrupt")
            return None

    def save(self, entries: list[Entry]) -> None:
        """Write all entries atomically. Raises OSError on failure (the caller counts it)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        body = json.dumps(
            {"version": VERSION, "files": [asdict(e) for e in entries]}, indent=1
        ).encode()
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # The rename is only durable once the directory entry is on disk.
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
