"""The status page in a real headless Chromium (Debian's) against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from playwright.async_api import Page, expect
from status_helpers import OUTPUT, TOKEN, alert, config, redated, webhook

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
expect.set_options(timeout=10_000)

PAYMENTS, CHECKOUT = "03d1aa525f37ffc6", "0cdfea5375881589"  # fingerprints of the captured payload


def row(page: Page, table: str, fp: str):
    return page.locator(f'#{table} tbody tr[data-fingerprint="{fp}"]')


async def login_with_token(page: Page, url: str, token: str, name: str) -> None:
    await page.goto(url)
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#token", token)
    await page.fill("#name", name)
    await page.click("#login-submit")


async def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_on_call_board_alerts_ack_resolve_history(page, receiver, sink):
    sink.failing.add("email")  # email keeps failing: a dead letter for the history
    cfg = config(
        sink,
        routes=[
            {
                "match": {"severity": "critical"},
                "channels": ["pagerduty", "sms", "slack"],
                "escalate": [
                    {"after": "15m", "channels": ["sms", "email"]},
                    {"after": "30m", "channels": ["pagerduty"]},
                ],
            },
            {"match": {"severity": "high"}, "channels": ["slack", "email"]},
            {"match": {"severity": "medium"}, "channels": ["slack"]},
        ],
    )
    cfg["delivery"]["max_age"] = "1s"  # give up on email fast
    r = await receiver(cfg)

    # Alertmanager's captured payload (two critical alerts), then more of other severities.
    await r.alertmanager_sends(redated("firing", 420))
    await r.alertmanager_sends(
        webhook(
            alert("b1", "HighErrorRate", "high", "search", "search error ratio 4.2% over 5m", 1500),
            alert("m1", "NewErrorFingerprint", "warning", "inventory",
                  "new error: KeyError in reserve_stock", 300),
            alert("l1", "ErrorBudgetBurn", "info", "reports",
                  "slow burn of the error budget", 5000),
            alert("r1", "DiskErrors", "high", "storage", "I/O errors on /var", 4000),
        )
    )
    await r.alertmanager_sends(
        webhook(alert("r1", "DiskErrors", "high", "storage", "I/O errors on /var", 4000,
                      status="resolved"), status="resolved")
    )

    # A wrong token sees nothing and is not kept.
    await login_with_token(page, r.url + "/?refresh=1", "not-the-token", "alice")
    await expect(page.locator("#login-error")).to_have_text("Wrong token or credentials.")
    await expect(page.locator("#board")).to_be_hidden()
    assert "CriticalError" not in await page.content()
    assert await page.evaluate("sessionStorage.length") == 0

    await page.fill("#token", TOKEN)
    await page.click("#login-submit")
    await expect(page.locator("#board")).to_be_visible()
    await expect(page.locator("#whoami")).to_have_text("acting as alice")
    assert await page.input_value("#token") == ""  # the secret left the form

    # Counts by severity and the list, most severe first.
    for sev, n in (("critical", "2"), ("high", "1"), ("medium", "1"), ("low", "1")):
        await expect(page.locator(f'#counts [data-severity="{sev}"] .n')).to_have_text(n)
    pay = row(page, "alerts", PAYMENTS)
    cells = pay.locator("td")
    await expect(cells.nth(0)).to_have_text("critical")
    await expect(cells.nth(1)).to_contain_text("CriticalError")
    await expect(cells.nth(2)).to_have_text("payments")
    await expect(cells.nth(3)).to_contain_text("payments is logging critical errors")
    await expect(pay.get_by_role("link", name="runbook")).to_have_attribute(
        "href", "https://runbooks.example/CriticalError"
    )
    await expect(cells.nth(4)).to_contain_text(" ago")
    for ch in ("pagerduty", "sms", "slack"):  # delivered through the real outbox and apprise
        await expect(pay.locator(f'li[data-channel="{ch}"]')).to_have_text(f"{ch}: sent")
    await expect(cells.nth(6)).to_contain_text("step 0/2; step 1 in 14m")
    await expect(cells.nth(6)).to_contain_text("→ sms, email")
    order = await page.locator("#alerts tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.fingerprint)"
    )
    assert order[:2] == [CHECKOUT, PAYMENTS] or order[:2] == [PAYMENTS, CHECKOUT]
    assert order[2:] == ["b1", "m1", "l1"]
    hi = row(page, "alerts", "b1")
    await expect(hi.locator('li[data-channel="slack"]')).to_have_text("slack: sent")
    await expect(hi.locator('li[data-channel="email"]')).to_have_text("email: failed")

    # Acknowledge: recorded with who and when, escalation stopped.
    await pay.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator("#flash")).to_have_text(
        "Acknowledged CriticalError (payments) as alice."
    )
    await expect(cells.nth(7)).to_contain_text("alice, ")
    await expect(cells.nth(6)).to_have_text("stopped at step 0/2 (acknowledged)")
    a = (await r.alerts())[PAYMENTS]
    assert a["acked_by"] == "alice" and abs(a["acked_at"] - time.time()) < 30
    assert a["escalation"]["next_at"] is None

    # Resolve (manual) after confirming: leaves the list, lands in the history.
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await row(page, "alerts", "m1").get_by_role("button", name="Resolve").click()
    await expect(row(page, "alerts", "m1")).to_have_count(0)
    await expect(page.locator('#counts [data-severity="medium"] .n')).to_have_text("0")
    hist = row(page, "history", "m1").locator("td")
    await expect(hist.nth(1)).to_have_text("NewErrorFingerprint")
    await expect(hist.nth(4)).to_have_text("not acknowledged")
    await expect(hist.nth(5)).to_have_text(re.compile(r"^\d+s$"))  # seconds after it came in
    await expect(hist.nth(6)).to_have_text("alice")
    await expect(row(page, "history", "r1").locator("td").nth(6)).to_have_text("Alertmanager")
    assert "m1" not in await r.alerts()

    # Dismissing the confirmation resolves nothing.
    page.once("dialog", lambda d: asyncio.ensure_future(d.dismiss()))
    await row(page, "alerts", "l1").get_by_role("button", name="Resolve").click()
    await page.click("#refresh")
    await expect(row(page, "alerts", "l1")).to_have_count(1)

    # Per-channel delivery failures: email gave up on all three of its notices (b1 and r1
    # firing, r1 resolved), each after failed attempts; the rest were sent at once.
    email = page.locator('#channels tr[data-channel="email"] td')
    await expect(email.nth(3)).to_have_text("3")
    assert int(await email.nth(2).text_content()) >= 3
    slack = page.locator('#channels tr[data-channel="slack"] td')
    await expect(slack.nth(2)).to_have_text("0")
    await expect(slack.nth(3)).to_have_text("0")
    dead = page.locator('#dead tr[data-channel="email"]')
    await expect(dead).to_have_count(3)
    await expect(dead.filter(has_text="HighErrorRate").locator("td").nth(5)).to_contain_text(
        "error=500"
    )

    # Never a channel URL or the token anywhere on the page.
    html = await page.content()
    for secret in (TOKEN, "json://", f"127.0.0.1:{sink.port}", f":{sink.port}/"):
        assert secret not in html, secret
    assert page.js_errors == []

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "status-page.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
