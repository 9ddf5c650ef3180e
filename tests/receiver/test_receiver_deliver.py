"""Delivery: retries, dead letters, rate limits with one digest, per-kind messages, real SMTP."""

from __future__ import annotations

import asyncio

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from rcv_helpers import (
    AUTH,
    Mailbox,
    base_config,
    eventually,
    free_port,
    gid,
    one_alert,
    payload,
    wait_for,
)

from receiver.render import SMS_MAX


async def test_channel_failing_then_recovering_is_retried(receiver, sink):
    sink.fail["slack"] = 3  # 500 three times, then fine
    client = await receiver(base_config(sink))
    assert (await client.post("/alerts", json=one_alert("aa01"), headers=AUTH)).status == 200
    await wait_for(lambda: len(sink.to("slack")) == 1, timeout=10, what="slack after retries")
    assert sink.fail["slack"] == 0
    assert len(sink.to("sms")) == len(sink.to("pagerduty")) == 1  # others unaffected

    async def settled():
        metrics = await (await client.get("/metrics")).text()
        assert 'notifications_total{channel="slack",result="failure"} 3.0' in metrics
        assert 'notifications_total{channel="slack",result="success"} 1.0' in metrics
        assert 'tailpage_receiver_dead_letters_total{channel="slack"} 0.0' in metrics
        alerts = (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]
        slack = next(d for d in alerts[0]["deliveries"] if d["channel"] == "slack")
        assert slack["state"] == "sent" and slack["attempts"] == 4

    await eventually(settled)


async def test_dead_letter_after_max_age(receiver, sink, caplog):
    sink.fail["sms"] = 10**6
    cfg = base_config(sink)
    cfg["delivery"]["max_age"] = "600ms"
    client = await receiver(cfg)
    assert (await client.post("/alerts", json=one_alert("dead1"), headers=AUTH)).status == 200

    async def one_dead_letter() -> None:
        r = await client.get("/api/v1/dead-letters", headers=AUTH)
        dead = (await r.json())["dead_letters"]
        assert len(dead) == 1, dead
        d = dead[0]
        assert d["channel"] == "sms" and d["attempts"] >= 2
        assert d["fingerprint"] == gid(one_alert("dead1"))  # the group's id
        assert d["alertname"] == "CriticalError"
        assert "500" in d["error"] or "Internal Server Error" in d["error"]

    await eventually(one_dead_letter)
    assert "DEAD LETTER" in caplog.text
    metrics = await (await client.get("/metrics")).text()
    assert 'tailpage_receiver_dead_letters_total{channel="sms"} 1.0' in metrics
    assert 'tailpage_receiver_queue_depth{channel="sms"} 0.0' in metrics
    assert len(sink.to("slack")) == 1


async def test_rate_limit_holds_back_into_one_digest(receiver, sink):
    cfg = base_config(sink)
    cfg["channels"]["sms"]["rate_limit"] = {"burst": 2, "per": "1s"}
    client = await receiver(cfg)
    # an alert storm: twelve groups of one alert at once
    posts = [
        client.post("/alerts", json=one_alert(f"storm{i:02d}"), headers=AUTH) for i in range(12)
    ]
    assert [r.status for r in await asyncio.gather(*posts)] == [200] * 12
    await wait_for(lambda: len(sink.to("slack")) == 12, what="unlimited slack")
    await wait_for(
        lambda: any("[DIGEST]" in b["message"] for b in sink.to("sms")),
        timeout=5,
        what="the digest",
    )
    sms = sink.to("sms")
    digests = [b for b in sms if "[DIGEST]" in b["message"]]
    singles = [b for b in sms if "[DIGEST]" not in b["message"]]
    assert len(singles) == 2 and len(digests) == 1  # burst, then ONE digest for the rest
    assert digests[0]["message"].startswith("[DIGEST] 10 held")
    assert len(digests[0]["message"]) <= SMS_MAX

    async def counted():
        metrics = await (await client.get("/metrics")).text()
        assert 'tailpage_receiver_rate_limited_total{channel="sms"} 10.0' in metrics

    await eventually(counted)


async def test_sms_is_short_and_pagerduty_dedups_on_fingerprint(receiver, sink):
    client = await receiver(base_config(sink))
    body = one_alert("pd01")
    body["alerts"][0]["annotations"]["summary"] = "x" * 400
    assert (await client.post("/alerts", json=body, headers=AUTH)).status == 200
    await wait_for(lambda: len(sink.to("pagerduty")) == 1 and len(sink.to("sms")) == 1)
    [sms] = sink.to("sms")
    assert len(sms["message"]) <= SMS_MAX and sms["message"].startswith(
        "[CRITICAL] CriticalError - "
    )
    [pd] = sink.to("pagerduty")
    assert pd["dedup_key"] == gid(body) and pd["event_action"] == "trigger"
    assert pd["severity"] == "critical"

    resolved = one_alert("pd01", status="resolved")
    assert (await client.post("/alerts", json=resolved, headers=AUTH)).status == 200
    await wait_for(lambda: len(sink.to("pagerduty")) == 2)
    pd2 = sink.to("pagerduty")[1]
    assert pd2["dedup_key"] == gid(body) and pd2["event_action"] == "resolve"
    assert pd2["title"].startswith("[RESOLVED] CriticalError")


async def test_email_has_text_and_html_parts_over_real_smtp(receiver, sink):
    box = Mailbox()
    port = free_port()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"pw")

    smtp = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    smtp.start()
    try:
        cfg = base_config(sink)
        cfg["channels"]["email"] = {
            "url": f"mailto://oncall:pw@127.0.0.1:{port}?from=tailpage@example.com"
            "&to=oncall@example.com"
        }
        cfg["routes"][0]["channels"].append("email")
        client = await receiver(cfg)
        body = payload("firing")  # one group of two alerts: one email
        body["alerts"][1]["labels"]["namespace"] = "<script>alert(1)</script>"
        body["commonLabels"].pop("namespace")  # as Alertmanager would compute it
        body["commonAnnotations"] = {"runbook_url": "https://runbooks.example/CriticalError"}
        assert (await client.post("/alerts", json=body, headers=AUTH)).status == 200
        await wait_for(lambda: len(box.messages) == 1, timeout=15, what="one email")
    finally:
        smtp.stop()
    assert logins and logins[0] == (b"oncall", b"pw")
    [msg] = box.messages
    assert msg["Subject"] == "[CRITICAL] CriticalError: 2 firing"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    # each alert by what tells it apart, with its summary
    assert "payments is logging critical errors" in text
    assert "checkout is logging critical errors" in text
    assert "component=payments" in text and "error_type=DatabaseError" in text
    assert "https://runbooks.example/CriticalError" in html
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_real_pagerduty_plugin_gets_fingerprint_as_dedup_key_and_resolve_action():
    """apprise's own pagerduty:// plugin (it only talks to events.pagerduty.com, so it is not
    sent to here) parses what the renderer adds to the channel URL: dedup key = fingerprint,
    action trigger/resolve, PagerDuty severity from ours unless the URL sets one."""
    import apprise

    from receiver.config import Channel
    from receiver.deliver import with_params
    from receiver.render import render
    from receiver.store import Delivery

    def plugin(url: str, kind: str, severity: str):
        ch = Channel("pd", url, "pagerduty")
        d = Delivery(
            id=1,
            channel="pd",
            kind=kind,
            step=0,
            attempts=0,
            created_at=0.0,
            fingerprint="4f1c2d3e4f5a6b7c",
            status="resolved" if kind == "resolved" else "firing",
            severity=severity,
            labels={"alertname": "CriticalError", "component": "payments"},
            annotations={"summary": "payments is failing"},
            starts_at="2026-01-01T12:00:00Z",
            generator_url=None,
            external_url=None,
        )
        n = render(d, ch)
        p = apprise.Apprise.instantiate(with_params(ch.url, n.url_params))
        assert type(p).__name__ == "NotifyPagerDuty"
        return p, n

    p, n = plugin("pagerduty://integration@apikey/tailpage/payments", "firing", "high")
    assert (p.dedup, p.action, p.severity) == ("4f1c2d3e4f5a6b7c", "trigger", "error")
    assert (p.integration_key, p.apikey, p.source) == ("integration", "apikey", "tailpage")
    assert n.title == "[HIGH] CriticalError — payments"
    p, _ = plugin("pagerduty://integration@apikey?severity=info", "resolved", "critical")
    assert (p.dedup, p.action, p.severity) == ("4f1c2d3e4f5a6b7c", "resolve", "info")


def test_retry_delay_doubles_with_jitter_up_to_the_cap():
    from dataclasses import replace

    from receiver.config import from_dict
    from receiver.deliver import retry_delay

    s = replace(from_dict({}).delivery, backoff_initial_s=2.0, backoff_max_s=300.0)
    assert [retry_delay(n, s, jitter=1.0) for n in (1, 2, 3, 4, 8, 9, 500)] == [
        2.0,
        4.0,
        8.0,
        16.0,
        256.0,
        300.0,
        300.0,
    ]
    delays = {retry_delay(3, s) for _ in range(200)}
    assert len(delays) > 100 and min(delays) >= 4.0 and max(delays) <= 8.0  # jittered
