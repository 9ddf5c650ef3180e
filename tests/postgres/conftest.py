"""PostgreSQL test fixtures: one real server per session, one fresh database per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pg_harness
import pytest
from pg_harness import PgServer

# the receiver tests' helpers (rcv_helpers) serve these tests too
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "receiver"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield from pg_harness.serve()


@pytest.fixture
def pg_db(pg_server: PgServer):
    """A fresh database's name (dropped after the test)."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)
