"""The page over plain HTTP: headers, assets, and no data without credentials."""

from __future__ import annotations

import aiohttp
import pytest
from status_helpers import TOKEN, alert, config, webhook

from receiver.status import CSP

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as r:
        return r.status, dict(r.headers), await r.text()


async def test_page_and_assets_are_served_with_a_strict_policy(receiver, sink):
    r = await receiver(config(sink))
    await r.alertmanager_sends(
        webhook(alert("aaaa000011112222", "SecretAlertName", "critical", "billing", "x"))
    )

    status, headers, body = await fetch(r.url + "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CSP
    for directive in (
        "default-src 'none'",
        "script-src 'self'",
        "require-trusted-types-for 'script'",
        "frame-ancestors 'none'",
    ):
        assert directive in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    # The page is a shell: the alert data only comes from the authenticated API.
    assert "SecretAlertName" not in body and TOKEN not in body
    assert '<script src="/status/app.js" defer></script>' in body
    assert "<script>" not in body and " style=" not in body  # nothing inline for the CSP to allow

    for path, ctype in (
        ("/status/app.js", "text/javascript"),
        ("/status/style.css", "text/css"),
        ("/status/favicon.svg", "image/svg+xml"),
    ):
        status, headers, asset = await fetch(r.url + path)
        assert status == 200 and headers["Content-Type"].startswith(ctype), path
        assert asset.strip()
        assert headers["X-Content-Type-Options"] == "nosniff"

    # Only the listed files exist: no directory route to wander through.
    for path in ("/status/", "/status/page.py", "/status/../app.py", "/status/%2e%2e/app.py"):
        status, _, _ = await fetch(r.url + path)
        assert status == 404, path


async def test_the_api_the_page_reads_refuses_a_wrong_token(receiver, sink):
    r = await receiver(config(sink))
    await r.alertmanager_sends(
        webhook(alert("aaaa000011112222", "SecretAlertName", "critical", "billing", "x"))
    )
    for path in ("/api/v1/alerts", "/api/v1/history?since=24h", "/api/v1/dead-letters"):
        status, data = await r.get(path, headers={"Authorization": "Bearer wrong"})
        assert status == 401 and "SecretAlertName" not in str(data), path
    status, data = await r.get("/api/v1/alerts")
    assert status == 200 and data["counts"] == {"critical": 1}
