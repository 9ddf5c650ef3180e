"""Receiver test fixtures: stores by backend, a recording HTTP sink for json:// channels."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rcv_helpers import Sink

# the PostgreSQL harness lives with the PostgreSQL tests; one server serves both folders
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "postgres"))
import pg_harness

from receiver import config as config_mod
from receiver.app import build_app
from receiver.store import Store
from receiver.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    """Every test using make_store (or `receiver`) runs on both stores."""
    return request.param


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg_harness.PgServer]:
    """A real PostgreSQL server (initdb, pg_ctl, loopback), started only when a test needs it."""
    yield from pg_harness.serve()


@pytest.fixture
def make_store(backend, tmp_path, request) -> Callable[[], Store]:
    """A factory of (unopened) stores sharing one database: call twice to 'restart'."""
    if backend == "sqlite":
        db = tmp_path / "receiver.db"
        return lambda: SQLiteStore(str(db), timeout_s=0.5)
    from receiver.store.postgresql import PostgreSQLStore

    server: pg_harness.PgServer = request.getfixturevalue("pg_server")
    name = server.create_database()  # a fresh database per test: tests stay independent
    request.addfinalizer(lambda: server.drop_database(name))
    # 5 s, not 0.5 s: it also bounds the wait for a pooled connection on a loaded machine
    return lambda: PostgreSQLStore(server.dsn(name), timeout_s=5.0)


@pytest.fixture
async def store(make_store):
    """One opened store; closed after the test."""
    s = make_store()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def sink():
    s = Sink()
    await s.start()
    yield s
    await s.runner.cleanup()


@pytest.fixture
def receiver(aiohttp_client, make_store):
    """Start a receiver app (real HTTP on loopback) from a config dict; returns its client."""

    async def start(cfg: dict, workers: bool = True):
        c = config_mod.from_dict(cfg, "test.yml")
        app = build_app(c, store=make_store(), workers=workers)
        return await aiohttp_client(app)

    return start
