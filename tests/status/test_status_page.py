"""The status page in a real headless Chromium (Debian's) against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import time

import pytest
from playwright.async_api import Page, expect
from status_helpers import OUTPUT, TOKEN, Clock, alert, config, redated, webhook

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


def _escalated(sink, component: str) -> bool:
    return any(
        "(escalation 1: not acknowledged)" in b.get("title", "") and component in b["title"]
        for b in sink.to("sms")
    )


async def wait_until(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await _value(cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _value(v):
    return await v if asyncio.iscoroutine(v) else v


async def test_on_call_board_alerts_ack_resolve_history(page, receiver, sink):
    sink.fail["email"] = 10**6  # email keeps failing: a dead letter for the history
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
    clock = Clock()
    r = await receiver(cfg, clock=clock)

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
    await expect(cells.nth(6)).to_contain_text(re.compile(r"step 0/2; step 1 in 1[0-4]m"))
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
    await expect(hist.nth(6)).to_have_text("alice")  # resolved by hand: the person
    # Resolved by Alertmanager's own `resolved` webhook: said so, not a person's name.
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
    await expect(page.locator("#status")).to_have_text(re.compile(r"^\d+ firing · updated "))
    dead = page.locator('#dead tr[data-channel="email"]')
    await expect(dead).to_have_count(3)
    await expect(dead.filter(has_text="HighErrorRate").locator("td").nth(5)).to_contain_text(
        "error=500"
    )

    # Acknowledge stops escalation: 15 minutes later (the receiver's clock moved on) the other
    # critical alert, not acknowledged, escalates to sms and email; the acknowledged one does not.
    clock.offset = 15 * 60 + 5
    checkout = row(page, "alerts", CHECKOUT)
    await expect(checkout.locator("td").nth(6)).to_contain_text(
        "step 1/2; step 2 in", timeout=20_000
    )
    await expect(checkout.locator('li[data-channel="sms"]').nth(1)).to_have_text(
        "sms · step 1: sent"
    )
    await expect(cells.nth(6)).to_have_text("stopped at step 0/2 (acknowledged)")
    await wait_until(lambda: _escalated(sink, "checkout"), what="sms escalation of checkout")
    assert not _escalated(sink, "payments")
    assert (await r.alerts())[PAYMENTS]["escalation"]["step"] == 0

    # Never a channel URL or the token anywhere on the page.
    html = await page.content()
    for secret in (TOKEN, "json://", f"127.0.0.1:{sink.port}", f":{sink.port}/"):
        assert secret not in html, secret
    assert page.js_errors == []

    OUTPUT.mkdir(parents=True, exist_ok=True)
    shot = OUTPUT / "status-page.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


# Label and annotation values are attacker-controlled: each must reach the screen as text.
XSS_NAME = '<script>window.__pwned = "name"</script>'
XSS_COMPONENT = "<img src=x onerror=\"window.__pwned = 'component'\">"
XSS_SUMMARY = '<b>bold</b> & <iframe src="javascript:parent.__pwned = 1"></iframe>'


async def test_alert_values_are_shown_as_text_never_as_html(page, receiver, sink):
    sink.fail["slack"] = 10**6  # dead letters carry the alert name too
    cfg = config(sink, routes=[{"match": {"severity": "critical"}, "channels": ["slack"]}])
    cfg["delivery"]["max_age"] = "1s"
    r = await receiver(cfg)
    x1 = alert("x1", XSS_NAME, "critical", XSS_COMPONENT, XSS_SUMMARY,
               runbook_url="javascript:window.__pwned = 'runbook'")
    x1["generatorURL"] = "javascript:window.__pwned = 'source'"
    x2 = alert("x2", XSS_NAME, "critical", XSS_COMPONENT, XSS_SUMMARY, 600)
    await r.alertmanager_sends(webhook(x1, x2))
    await r.alertmanager_sends(
        webhook(alert("x2", XSS_NAME, "critical", XSS_COMPONENT, XSS_SUMMARY, 600,
                      status="resolved"), status="resolved")
    )
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))

    await login_with_token(page, r.url + "/?refresh=1", TOKEN, "bob")
    x = row(page, "alerts", "x1")
    await expect(x.locator("td").nth(1).locator("strong")).to_have_text(XSS_NAME)
    await expect(x.locator("td").nth(2)).to_have_text(XSS_COMPONENT)
    await expect(x.locator("td").nth(3)).to_have_text(XSS_SUMMARY)
    await expect(x.locator("a")).to_have_count(0)  # javascript: runbook and source: no links
    await expect(row(page, "history", "x2").locator("td").nth(1)).to_have_text(XSS_NAME)
    dead = page.locator('#dead tr[data-channel="slack"]')
    await expect(dead.first.locator("td").nth(2)).to_have_text(XSS_NAME, timeout=20_000)

    await x.get_by_role("button", name="Acknowledge").click()
    await expect(page.locator("#flash")).to_have_text(
        f"Acknowledged {XSS_NAME} ({XSS_COMPONENT}) as bob."
    )
    await expect(x.locator("td").nth(7)).to_contain_text("bob, ")

    # Nothing from the data became markup, ran, or tripped the CSP's Trusted Types.
    injected = page.locator("#board script, #board img, #board iframe, #board b, #board svg")
    await expect(injected).to_have_count(0)
    assert await page.evaluate("window.__pwned") is None
    assert dialogs == [] and page.js_errors == []
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "escaping.png"), full_page=True)


BASIC_USER, BASIC_PASSWORD = "alertmanager", "basic-pass-5c2d"  # the Helm chart's user name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_basic_login_auto_refresh_ack_link_and_no_secrets(page, receiver, sink):
    # A channel whose URL is full of secrets and whose server is down: its errors are shown.
    port = _closed_port()
    secrets = ("hookuser", "Pw-s3cr3t-7781", "T0SECRET99", "B0SECRET88", "xq-sEcReT-44")
    cfg = config(sink)
    cfg["auth"] = {"basic": {"username": BASIC_USER, "password": BASIC_PASSWORD}}
    cfg["channels"]["slack"] = {
        "url": f"json://{secrets[0]}:{secrets[1]}@127.0.0.1:{port}/hooks/{secrets[2]}/{secrets[3]}"
        f"?token={secrets[4]}"
    }
    cfg["delivery"]["max_age"] = "1s"
    basic = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    r = await receiver(cfg, headers={"Authorization": f"Basic {basic}"})

    # The API's 401 challenge says Basic: the form asks for a username and password.
    await page.goto(r.url + "/?refresh=1")
    await expect(page.locator("#username")).to_be_visible()
    await expect(page.locator("#token")).to_be_hidden()
    await page.fill("#username", BASIC_USER)
    await page.fill("#password", "wrong")
    await page.fill("#name", "carol")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_have_text("Wrong token or credentials.")
    # One shared credential: without a name nobody would know who acknowledged.
    await page.fill("#password", BASIC_PASSWORD)
    await page.fill("#name", "")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_contain_text("Enter your name")
    await page.fill("#name", "carol")
    await page.click("#login-submit")
    await expect(page.locator("#whoami")).to_have_text("acting as carol")
    await expect(page.locator("#no-alerts")).to_be_visible()
    assert await page.input_value("#password") == ""

    # Auto-refresh: what Alertmanager sends now appears without touching the page.
    fp = "4a5b6c7d8e9f0a1b"
    await r.alertmanager_sends(
        webhook(alert(fp, "LatencyHigh", "critical", "api", "p99 over 2s", 30))
    )
    linked = row(page, "alerts", fp)
    await expect(linked).to_have_count(1)
    await expect(page.locator('#counts [data-severity="critical"] .n')).to_have_text("1")
    await expect(linked.locator('li[data-channel="slack"]')).to_have_text(
        "slack: failed", timeout=20_000
    )
    await expect(page.locator('#dead tr[data-channel="slack"]')).to_have_count(1)

    # The "Acknowledge" link in a notification opens /#ack-<fingerprint>: it points at the
    # alert and focuses its button, but a link never acknowledges by itself.
    await page.goto(f"{r.url}/#ack-{fp}")
    await expect(linked).to_have_class(re.compile(r"\blinked\b"))
    ack = linked.get_by_role("button", name="Acknowledge")
    await expect(ack).to_be_focused()
    assert (await r.alerts())[fp]["acked_by"] is None
    await page.keyboard.press("Enter")
    await expect(page.locator("#flash")).to_have_text("Acknowledged LatencyHigh (api) as carol.")
    assert (await r.alerts())[fp]["acked_by"] == "carol"  # the person, not the basic user

    # No channel URL, no piece of it, no password: not on the page, not in what it reads.
    await expect(page.locator('#dead tr[data-channel="slack"] td').nth(5)).not_to_be_empty()
    html = await page.content()
    for path in ("/api/v1/alerts", "/api/v1/history?since=24h", "/api/v1/dead-letters"):
        status, data = await r.get(path)
        assert status == 200
        html += json.dumps(data)
    for secret in (*secrets, BASIC_PASSWORD, basic, "json://", f":{port}"):
        assert secret not in html, secret
    assert page.js_errors == []


async def test_without_auth_the_page_asks_who_is_acting(page, receiver, sink):
    cfg = config(sink)
    del cfg["auth"]
    r = await receiver(cfg, headers={})
    await r.alertmanager_sends(webhook(alert("n1", "QueueStuck", "high", "worker", "no progress")))
    await page.goto(r.url + "/")
    await expect(page.locator("#whoami")).to_have_text("receiver has no auth configured")
    await expect(page.locator("#logout")).to_be_hidden()
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept("dave")))
    await row(page, "alerts", "n1").get_by_role("button", name="Acknowledge").click()
    await expect(page.locator("#flash")).to_have_text("Acknowledged QueueStuck (worker) as dave.")
    await expect(page.locator("#whoami")).to_have_text(
        "acting as dave · receiver has no auth configured"
    )
    assert (await r.alerts())["n1"]["acked_by"] == "dave"
    assert page.js_errors == []


async def test_a_group_is_acknowledged_from_its_link_in_one_click(page, receiver, sink):
    """A group's message links to /#ack-group-<id>: its alerts are marked, the focused button
    acknowledges the whole group (each alert then shows who)."""
    r = await receiver(config(sink))
    crashes = [alert(f"g{i}", "PodCrash", "high", "web", f"web-{i} crashing") for i in range(3)]
    body = webhook(*crashes)
    body["groupKey"] = '{}:{alertname="PodCrash"}'
    body["commonLabels"] = {"alertname": "PodCrash", "severity": "high"}
    await r.sends_group(body)
    gid = next(iter((await r.alerts()).values()))["group"]
    await login_with_token(page, f"{r.url}/#ack-group-{gid}", TOKEN, "erin")
    for i in range(3):
        await expect(row(page, "alerts", f"g{i}")).to_have_class(re.compile(r"\blinked\b"))
    button = page.get_by_role("button", name="Ack group (3)").first
    await expect(button).to_be_focused()
    await button.click()
    await expect(page.locator("#flash")).to_have_text(
        "Acknowledged the group of 3 PodCrash alerts as erin."
    )
    alerts = await r.alerts()
    assert {alerts[f"g{i}"]["acked_by"] for i in range(3)} == {"erin"}
    assert page.js_errors == []
