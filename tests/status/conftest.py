"""Status page fixtures: one headless Chromium per module, a fresh receiver and sink per test."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest_asyncio

# one Sink and the captured payloads for both folders: they live with the receiver tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "receiver"))
from rcv_helpers import Sink
from status_helpers import CHROMIUM_ARGS, TOKEN, start_receiver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser):
    """A fresh browser context per test: its own sessionStorage, nothing shared."""
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-GB")
    p = await ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.js_errors = errors  # type: ignore[attr-defined]
    yield p
    await ctx.close()


@pytest_asyncio.fixture(loop_scope="module")
async def sink():
    s = await Sink().start()
    yield s
    await s.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def receiver(tmp_path):
    """start(cfg, headers, clock) -> a running receiver with the status page on a loopback port."""
    started = []

    async def start(cfg: dict, headers: dict[str, str] | None = None, clock=time.time):
        r = await start_receiver(
            cfg, tmp_path / f"receiver{len(started)}.db",
            headers if headers is not None else {"Authorization": f"Bearer {TOKEN}"},
            clock,
        )
        started.append(r)
        return r

    yield start
    for r in started:
        await r.runner.cleanup()

