"""PostgreSQL test fixtures: one real server per session, one fresh database per test."""

from __future__ import annotations

import pg_harness
import pytest
from pg_harness import PgServer


@pytest.fixture(scope="session")
def pg_server():
    if not pg_harness.available():
        pytest.fail("PostgreSQL 15 (Debian package postgresql) is required for these tests")
    yield pg_harness.acquire()
    pg_harness.release()


@pytest.fixture
def pg_db(pg_server: PgServer):
    """A fresh database's name (dropped after the test)."""
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)
