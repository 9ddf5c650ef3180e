"""Checkpoint store: atomic replacement, corrupt files, identity by inode + fingerprint."""

from __future__ import annotations

import json
import os

import pytest

from exporter.checkpoint import FINGERPRINT_BYTES, CheckpointStore, Entry, fingerprint_fd, matches


def entry_for(path, offset: int) -> Entry:
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        n, digest = fingerprint_fd(fd)
    finally:
        os.close(fd)
    return Entry(path=str(path), dev=st.st_dev, ino=st.st_ino, offset=offset, fp_len=n,
                 fingerprint=digest)


def test_round_trip_and_no_temp_left(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"x" * 5000)
    store = CheckpointStore(str(tmp_path / "sub" / "ckpt.json"))  # directory created on demand
    assert store.load() is None  # first start
    e = entry_for(log, 4000)
    assert e.fp_len == FINGERPRINT_BYTES
    store.save([e])
    store.save([e])  # replacing works too
    assert store.load() == [e]
    assert os.listdir(tmp_path / "sub") == ["ckpt.json"]


def test_corrupt_checkpoint_is_set_aside(tmp_path, caplog):
    path = tmp_path / "ckpt.json"
    path.write_text('{"version": 1, "files": [{"path": "x"')  # torn write from another tool
    store = CheckpointStore(str(path))
    assert store.load() is None
    assert "unreadable" in caplog.text
    assert (tmp_path / "ckpt.json.corrupt").exists() and not path.exists()
    path.write_text(json.dumps({"version": 99, "files": []}))
    assert store.load() is None


def test_save_failure_raises_and_keeps_old(tmp_path):
    path = tmp_path / "ckpt.json"
    store = CheckpointStore(str(path))
    log = tmp_path / "a.log"
    log.write_bytes(b"hello\n")
    e = entry_for(log, 6)
    store.save([e])
    bad = CheckpointStore(str(tmp_path / "ckpt.json" / "inner.json"))  # parent is a file
    with pytest.raises(OSError):
        bad.save([e])
    assert store.load() == [e]


def test_matching_by_inode_and_fingerprint(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"short\n")  # shorter than FINGERPRINT_BYTES: fingerprint covers 6 bytes
    e = entry_for(log, 6)
    assert e.fp_len == 6
    with open(log, "ab") as f:
        f.write(b"grown afterwards\n")
    fd = os.open(log, os.O_RDONLY)
    st = os.fstat(fd)
    try:
        assert matches(e, fd, st.st_dev, st.st_ino)  # grown file still matches
        assert not matches(e, fd, st.st_dev, st.st_ino + 1)
        os.pwrite(fd_w := os.open(log, os.O_WRONLY), b"SHORT", 0)  # same inode, new content
        os.close(fd_w)
        assert not matches(e, fd, st.st_dev, st.st_ino)
    finally:
        os.close(fd)
