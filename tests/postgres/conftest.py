"""PostgreSQL test fixtures: one real server per session, one fresh database per test."""

from __future__ import annotations

import pytest
from pg_harness import PgServer, available, start_server


@pytest.fixture(scope="session")
def pg_server():
    if not available():
        pytest.fail("PostgreSQL 15 (Debian package postgresql) is required for these tests")
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg_server: PgServer) -> str:
    """A fresh database's name."""
    return pg_server.create_database()
