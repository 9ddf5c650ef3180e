"""API and metrics: health, README metrics; ack records who; ack or resolve stop escalation."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rcv_helpers import base_config, eventually, one_alert, wait_for

README = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"  # the metrics reference


def readme_receiver_metrics() -> dict[str, str]:
    """name -> type, from the "## Receiver" table of the metrics reference."""
    section = README.read_text().split("\n## Receiver", 1)[1]
    section = section.split("\n#", 1)[0]
    return dict(re.findall(r"^\| `(tailpage_receiver_[a-z_]+)` \| (\w+) \|", section, re.M))


def exposed(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


async def test_health_ready_and_every_readme_metric_from_the_start(receiver, sink):
    documented = readme_receiver_metrics()
    assert len(documented) >= 9, documented
    cfg = base_config(sink)
    cfg["routes"][0]["escalate"] = [{"after": "1h", "channels": ["sms"]}]
    client = await receiver(cfg)
    r = await client.get("/-/healthy")
    assert r.status == 200 and (await r.text()).strip() == "OK"
    assert (await client.get("/-/ready")).status == 200
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = await r.text()
    families = exposed(text)
    for name, kind in documented.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        assert families.get(family) == kind, f"{name} ({kind}) not exposed before any alert"
    # series exist before the first alert, so rate() and absent() work from the start
    for sample in (
        'tailpage_receiver_alerts_received_total{severity="critical",status="firing"} 0.0',
        'tailpage_receiver_escalations_total{step="1"} 0.0',
        'tailpage_receiver_queue_depth{channel="sms"} 0.0',
        'tailpage_receiver_notification_latency_seconds_count{channel="pagerduty"} 0.0',
        'tailpage_receiver_rate_limited_total{channel="slack"} 0.0',
    ):
        assert sample in text, sample


def _escalating(sink) -> dict:
    cfg = base_config(sink, auth={"basic": {"username": "oncall-bot", "password": "pw"}})
    cfg["routes"] = [
        {
            "match": {"severity": "critical"},
            "channels": ["slack"],
            # long enough that the ack and the resolve surely land first on a loaded machine
            "escalate": [{"after": "2s", "channels": ["sms"]}],
        }
    ]
    return cfg


async def test_ack_records_who_and_ack_or_resolve_stop_escalation(receiver, sink):
    basic = {"Authorization": "Basic " + base64.b64encode(b"oncall-bot:pw").decode()}
    client = await receiver(_escalating(sink))
    for fp in ("acked", "resolved", "control"):
        assert (await client.post("/alerts", json=one_alert(fp), headers=basic)).status == 200
    # no `by`: the authenticated user is recorded
    r = await client.post("/api/v1/alerts/acked/ack", headers=basic)
    assert r.status == 200 and (await r.json())["by"] == "oncall-bot"
    # a second ack keeps the first acknowledger
    r = await client.post("/api/v1/alerts/acked/ack?by=carol", headers=basic)
    assert r.status == 200
    r = await client.post("/api/v1/alerts/acked/ack", json={"by": "<script>"}, headers=basic)
    assert r.status == 400
    r = await client.post("/api/v1/alerts/acked/ack", json={"by": 5}, headers=basic)
    assert r.status == 400 and "by:" in (await r.json())["error"]  # not a crash
    assert (await client.post("/api/v1/alerts/acked/ack", data=b"{", headers=basic)).status == 400
    resolved = one_alert("resolved", status="resolved")
    assert (await client.post("/alerts", json=resolved, headers=basic)).status == 200

    # the control alert escalates: by then the other two would have too
    await wait_for(lambda: len(sink.to("sms")) >= 1, timeout=10, what="control escalation")
    [sms] = sink.to("sms")
    assert "(escalation 1: not acknowledged)" in sms["message"]
    await wait_for(lambda: len(sink.to("slack")) == 4, what="3 firing + 1 resolved on slack")
    resolved_notice = [b for b in sink.to("slack") if b["title"].startswith("[RESOLVED]")]
    assert len(resolved_notice) == 1 and "fingerprint resolved" in resolved_notice[0]["message"]

    alerts = {
        a["fingerprint"]: a
        for a in (await (await client.get("/api/v1/alerts", headers=basic)).json())["alerts"]
    }
    assert set(alerts) == {"acked", "control"}
    assert alerts["acked"]["acked_by"] == "oncall-bot" and alerts["acked"]["acked_at"]
    assert alerts["acked"]["escalation"] == {
        "step": 0,
        "steps": 1,
        "next_at": None,
        "next_channels": [],
    }
    assert alerts["control"]["escalation"]["step"] == 1
    assert {(d["channel"], d["kind"]) for d in alerts["control"]["deliveries"]} == {
        ("slack", "firing"),
        ("sms", "escalation"),
    }
    r = await client.post("/api/v1/alerts/resolved/ack", headers=basic)
    assert r.status == 404  # no longer firing

    async def one_step():
        text = await (await client.get("/metrics")).text()
        assert 'tailpage_receiver_escalations_total{step="1"} 1.0' in text

    await eventually(one_step)
    assert len(sink.to("sms")) == 1


async def test_api_needs_auth_and_validates_parameters(receiver, sink):
    basic = {"Authorization": "Basic " + base64.b64encode(b"oncall-bot:pw").decode()}
    client = await receiver(_escalating(sink))
    for method, path in (
        ("GET", "/api/v1/alerts"),
        ("POST", "/api/v1/alerts/x/ack"),
        ("POST", "/api/v1/alerts/x/resolve"),
        ("GET", "/api/v1/history"),
        ("GET", "/api/v1/dead-letters"),
    ):
        r = await client.request(method, path)
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), path
    assert (await client.get("/api/v1/history?since=soon", headers=basic)).status == 400
    assert (await client.get("/api/v1/dead-letters?limit=x", headers=basic)).status == 400
    body = await (await client.get("/api/v1/dead-letters?limit=5", headers=basic)).json()
    assert body == {"dead_letters": []}
    # health, readiness and metrics stay open: probes and Prometheus carry no credentials
    for path in ("/-/healthy", "/-/ready", "/metrics"):
        assert (await client.get(path)).status == 200, path
