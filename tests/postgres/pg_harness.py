"""A real PostgreSQL 15 server for tests: initdb + pg_ctl, loopback, free port, temp data dir.

Runs as the current user, or, when that is root (CI), as the `postgres` system user through
runuser with a data dir that user owns: initdb refuses to run as root. fsync is off because the
tests are about processes dying, not machines; PostgreSQL's own durability is not under test.
(A unique module name: test dirs have no __init__.py.)
"""

from __future__ import annotations

import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

PG_BIN = Path(os.environ.get("TAILPAGE_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "tailpage"


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or _has_user("postgres"))


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tailpage-pg-"))
        self.data = self.root / "data"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._as_root = os.geteuid() == 0
        self._n = itertools.count(1)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            pw = pwd.getpwnam("postgres")
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
            opts = (
                f"-c port={self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.data} -c fsync=off "
                "-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB"
            )
            r = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                "30",
                "-o",
                opts,
                "start",
            )
            if r.returncode == 0:
                return
        raise RuntimeError(f"pg_ctl start failed: {r.stderr[-1000:]}\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if self.data.exists():
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
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: no injection
        return name

    def sql(self, db: str, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


def start_server() -> PgServer:
    server = PgServer()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


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
