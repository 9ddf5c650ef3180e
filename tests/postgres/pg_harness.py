"""A real PostgreSQL 15 server for tests: initdb + pg_ctl, loopback, free port, temp data dir.

Runs as the current user, or, when that is root (CI), as the `postgres` system user (created
by Debian's postgresql package; a system user `tailpage-pg` is created when it is missing) through
runuser with a data dir that user owns: initdb refuses to run as root. fsync is off because the
tests are about processes dying, not machines; PostgreSQL's own durability is not under test.
One server per pytest process, shared by tests/postgres and tests/receiver (acquire/release).
(A unique module name: test dirs have no __init__.py.)
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


def _pg_bin() -> Path:
    """TAILPAGE_PG_BIN, else Debian's 15 (what CI installs), else the newest installed."""
    if os.environ.get("TAILPAGE_PG_BIN"):
        return Path(os.environ["TAILPAGE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    preferred = Path("/usr/lib/postgresql/15/bin")
    if (preferred / "initdb").exists() or not found:
        return preferred
    return found[-1].parent


PG_BIN = _pg_bin()
USER = "tailpage"


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or _service_user() is not None)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _service_user() -> str | None:
    """As root: the unprivileged user to run the server as."""
    for name in ("postgres", "tailpage-pg"):
        if _has_user(name):
            return name
    r = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "tailpage-pg"],
        capture_output=True,
        check=False,
    )
    return "tailpage-pg" if r.returncode == 0 else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        self._user = _service_user() if os.geteuid() == 0 else None
        # as root, under /tmp: a TMPDIR inside root's home is not reachable by the server's user
        self.root = Path(
            tempfile.mkdtemp(prefix="tailpage-pg-", dir="/tmp" if self._user else None)
        )
        self.data = self.root / "data"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._n = itertools.count(1)
        self._undropped: list[str] = []

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user:
            pw = pwd.getpwnam(self._user)
            for p in (self.root, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        r = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr[-2000:]}")
        for _ in range(5):  # the free port can be taken between probe and bind: try another
            self.port = _free_port()
            r = self._pg_ctl_start()
            if r.returncode == 0:
                return
        raise RuntimeError(f"pg_ctl start failed: {r.stderr[-1000:]}\n{self.log()[-2000:]}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        opts = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data} -c fsync=off "
            "-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB"
        )
        log = str(self.root / "server.log")
        return self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "30", "-o", opts, "start"
        )

    def pause(self) -> None:
        """Stop the server as a crash or failover would: every client connection is cut."""
        r = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {r.stderr[-1000:]}")

    def resume(self) -> None:
        """Start it again on the same port (after crash recovery)."""
        r = self._pg_ctl_start()
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr[-1000:]}\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text()
        except OSError:
            return ""

    def dsn(self, db: str = "postgres", password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{USER}:{pw}@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        """A fresh, empty database; its name."""
        name = f"t{os.getpid()}_{next(self._n)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            self._drop_leftovers(conn)
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: no injection
        return name

    def drop_database(self, name: str) -> None:
        """Drop it now, or with the next create_database while a client is still connected
        (a test's app may close its pool after this runs): disk stays small over a long run."""
        self._undropped.append(name)
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            self._drop_leftovers(conn)

    def _drop_leftovers(self, conn: psycopg.Connection) -> None:
        for name in list(self._undropped):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            except psycopg.errors.ObjectInUse:
                continue
            self._undropped.remove(name)

    def sql(self, db: str, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            cur = conn.execute(query, params or None)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


def start_server() -> PgServer:
    server = PgServer()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


_shared: PgServer | None = None
_users = 0


def acquire() -> PgServer:
    """The server of this pytest process, started on first use (session fixtures call this)."""
    global _shared, _users
    if _shared is None:
        _shared = start_server()
        # pg_ctl daemonizes the server: stop it even when the session is cut short, and turn a
        # SIGTERM (`timeout pytest ...`) into an exit that runs teardown instead of an orphan
        atexit.register(_shared.stop)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    _users += 1
    return _shared


def release() -> None:
    """Stops the shared server when its last session fixture is done with it."""
    global _shared, _users
    _users -= 1
    if _users == 0 and _shared is not None:
        _shared.stop()
        _shared = None


def serve() -> Iterator[PgServer]:
    """The body of each suite's session fixture `pg_server`: the shared server, or a failure
    (not a skip) where PostgreSQL is missing, since CI installs it and must run these tests."""
    if not available():
        pytest.fail("PostgreSQL 15 (Debian package postgresql) is required for these tests")
    yield acquire()
    release()


def wait_closed(server: PgServer, db: str, timeout: float = 10.0) -> None:
    """Wait until no client is connected to db (the receivers under test closed their pools)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.sql(
            "postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname=%s", (db,)
        )
        if rows[0][0] == 0:
            return
        time.sleep(0.05)
