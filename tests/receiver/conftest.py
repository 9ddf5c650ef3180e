"""Receiver test fixtures: stores by backend, a recording HTTP sink for json:// channels."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rcv_helpers import Sink

from receiver import config as config_mod
from receiver.app import build_app
from receiver.store import Store
from receiver.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite"])
def backend(request) -> str:
    """The PostgreSQL store adds "postgresql" here; every test using make_store runs on both."""
    return request.param


@pytest.fixture
def make_store(backend, tmp_path) -> Callable[[], Store]:
    """A factory of (unopened) stores sharing one database: call twice to 'restart'."""
    if backend == "sqlite":
        db = tmp_path / "receiver.db"
        return lambda: SQLiteStore(str(db), timeout_s=0.5)
    raise NotImplementedError(backend)


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
