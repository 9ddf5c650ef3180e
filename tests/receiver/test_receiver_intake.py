"""Intake: real Alertmanager payloads in; every bad input answered with the right status."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import zlib

from rcv_helpers import AUTH, TOKEN, base_config, one_alert, payload, wait_for

from receiver import config as config_mod
from receiver.app import build_app
from receiver.store.sqlite import SQLiteStore


async def test_real_payload_is_stored_and_routed(receiver, sink):
    client = await receiver(base_config(sink))
    r = await client.post("/alerts", json=payload("firing"), headers=AUTH)
    assert r.status == 200, await r.text()
    assert await r.json() == {"accepted": 2, "duplicates": 0}
    # one Alertmanager group of two critical alerts -> pagerduty, sms, slack: once each
    await wait_for(lambda: len(sink.got) == 3, what="3 notifications")
    assert len(sink.to("pagerduty")) == len(sink.to("sms")) == len(sink.to("slack")) == 1
    [slack] = sink.to("slack")
    assert slack["title"] == "[CRITICAL] CriticalError — shop: 2 firing"
    assert "component=checkout" in slack["message"] and "component=payments" in slack["message"]
    r = await client.get("/api/v1/alerts", headers=AUTH)
    body = await r.json()
    assert body["counts"] == {"critical": 2}
    assert {d["channel"] for a in body["alerts"] for d in a["deliveries"]} == {
        "pagerduty",
        "sms",
        "slack",
    }
    metrics = await (await client.get("/metrics")).text()
    assert (
        'tailpage_receiver_alerts_received_total{severity="critical",status="firing"} 2.0'
        in metrics
    )


async def test_ha_duplicates_notify_once_per_channel(receiver, sink):
    client = await receiver(base_config(sink))
    for _ in range(3):  # Alertmanager retries and its HA peer sends the same group
        assert (await client.post("/alerts", json=payload("firing"), headers=AUTH)).status == 200
    await wait_for(lambda: len(sink.got) == 3, what="3 notifications")
    r = await client.post("/alerts", json=payload("firing"), headers=AUTH)
    assert await r.json() == {"accepted": 0, "duplicates": 2}
    metrics = await (await client.get("/metrics")).text()
    assert "tailpage_receiver_duplicates_total 6.0" in metrics
    assert len(sink.got) == 3


async def test_auth_bearer_and_basic(receiver, sink):
    client = await receiver(base_config(sink))
    body = payload("firing")
    assert (await client.post("/alerts", json=body)).status == 401
    r = await client.post("/alerts", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in await r.text()
    assert (await client.get("/api/v1/alerts")).status == 401

    cfg = base_config(sink, auth={"basic": {"username": "am", "password": "pw"}})
    client = await receiver(cfg)
    good = "Basic " + base64.b64encode(b"am:pw").decode()
    bad = "Basic " + base64.b64encode(b"am:nope").decode()
    assert (await client.post("/alerts", json=body, headers={"Authorization": bad})).status == 401
    assert (
        await client.post("/alerts", json=body, headers={"Authorization": "Basic !!"})
    ).status == 401
    assert (await client.post("/alerts", json=body, headers={"Authorization": good})).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'tailpage_receiver_webhooks_rejected_total{reason="auth"} 2.0' in metrics


async def test_too_large_invalid_json_and_schema(receiver, sink):
    client = await receiver(base_config(sink, max_body_bytes=2048))
    big = payload("firing")
    big["commonAnnotations"] = {"x": "y" * 5000}
    r = await client.post("/alerts", json=big, headers=AUTH)
    assert r.status == 413

    r = await client.post("/alerts", data=b'{"version": "4", ', headers=AUTH)
    assert r.status == 400
    assert "invalid JSON" in (await r.json())["error"]

    bad = payload("firing")
    del bad["alerts"][1]["fingerprint"]
    r = await client.post("/alerts", json=bad, headers=AUTH)
    assert r.status == 400
    err = (await r.json())["error"]
    assert "alerts[1]" in err and "fingerprint" in err

    bad = payload("firing")
    bad["alerts"][0]["status"] = "exploded"
    r = await client.post("/alerts", json=bad, headers=AUTH)
    assert r.status == 400 and "alerts[0].status" in (await r.json())["error"]

    r = await client.post("/alerts", data=b"[1, 2]", headers=AUTH)
    assert r.status == 400
    metrics = await (await client.get("/metrics")).text()
    for reason, n in (("too_large", 1), ("invalid_json", 1), ("schema", 3)):
        assert f'tailpage_receiver_webhooks_rejected_total{{reason="{reason}"}} {n}.0' in metrics
    # nothing half-stored
    assert (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"] == []


async def test_503_when_the_store_cannot_commit(aiohttp_client, sink, tmp_path):
    """SQLite only: another process holding the write lock is how SQLite fails to commit
    (the PostgreSQL suite makes its database unwritable its own way)."""
    cfg = config_mod.from_dict(base_config(sink), "test.yml")
    app = build_app(cfg, store=SQLiteStore(str(tmp_path / "receiver.db"), timeout_s=0.5))
    client = await aiohttp_client(app)
    assert (await client.get("/-/ready")).status == 200
    # another process holds the write lock: the commit cannot happen within store_timeout
    blocker = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        r = await client.post("/alerts", json=one_alert("f00d"), headers=AUTH)
        assert r.status == 503
        assert r.headers["Retry-After"]
        assert (await client.get("/-/ready")).status == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # Alertmanager's retry then succeeds, and the alert is delivered once
    r = await client.post("/alerts", json=one_alert("f00d"), headers=AUTH)
    assert r.status == 200
    await wait_for(lambda: len(sink.to("slack")) == 1, what="delivery after recovery")
    metrics = await (await client.get("/metrics")).text()
    assert 'tailpage_receiver_webhooks_rejected_total{reason="store"} 1.0' in metrics
    assert "tailpage_receiver_alerts_received_total" in metrics


async def test_secrets_never_leave(receiver, sink, caplog):
    cfg = base_config(sink)
    cfg["channels"]["slack"]["url"] = sink.url("slack") + "?token=ZZTOPSECRETZZ"
    sink.fail["slack"] = 1
    client = await receiver(cfg)
    assert (await client.post("/alerts", json=one_alert("beef"), headers=AUTH)).status == 200
    await wait_for(lambda: len(sink.to("slack")) == 1, what="retry to succeed")
    outputs = [
        await (await client.get("/metrics")).text(),
        json.dumps(await (await client.get("/api/v1/alerts", headers=AUTH)).json()),
        json.dumps(await (await client.get("/api/v1/history", headers=AUTH)).json()),
        caplog.text,
    ]
    for out in outputs:
        assert "ZZTOPSECRETZZ" not in out and TOKEN not in out


def _bad_bodies() -> list[tuple[str, bytes, int, str, str]]:
    """(case, body, status, reason label, text in the error)."""

    def edit(fn) -> bytes:
        body = payload("firing")
        fn(body)
        return json.dumps(body).encode()

    return [
        ("empty body", b"", 400, "invalid_json", "invalid JSON"),
        ("not UTF-8", b"\xff\xfe{", 400, "invalid_json", "invalid JSON"),
        ("version 3", edit(lambda b: b.update(version="3")), 400, "schema", "version"),
        ("alerts not a list", edit(lambda b: b.update(alerts={})), 400, "schema", "alerts"),
        ("no alerts key", edit(lambda b: b.pop("alerts")), 400, "schema", "alerts"),
        (
            "label value not a string",
            edit(lambda b: b["alerts"][0]["labels"].update(severity=5)),
            400,
            "schema",
            "alerts[0].labels.severity",
        ),
        (
            "fingerprint with a slash",
            edit(lambda b: b["alerts"][0].update(fingerprint="../etc")),
            400,
            "schema",
            "alerts[0].fingerprint",
        ),
        (
            "startsAt missing",
            edit(lambda b: b["alerts"][1].pop("startsAt")),
            400,
            "schema",
            "alerts[1]",
        ),
        ("status unknown", edit(lambda b: b.update(status="pending")), 400, "schema", "status"),
    ]


async def test_every_bad_input_gets_400_with_the_reason(receiver, sink):
    client = await receiver(base_config(sink))
    counts: dict[str, int] = {}
    for case, body, status, reason, text in _bad_bodies():
        r = await client.post(
            "/alerts", data=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert r.status == status, case
        assert text in (await r.json())["error"], case
        counts[reason] = counts.get(reason, 0) + 1
    metrics = await (await client.get("/metrics")).text()
    for reason, n in counts.items():
        assert f'tailpage_receiver_webhooks_rejected_total{{reason="{reason}"}} {n}.0' in metrics
    assert (await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"] == []
    assert sink.got == []


def test_the_fast_validator_agrees_with_jsonschema():
    """Intake compiles webhook.schema.json with fastjsonschema (speed); jsonschema is the
    reference implementation: both accept the real payloads and reject the same bad inputs."""
    import fastjsonschema
    import jsonschema

    from receiver.intake import WEBHOOK_SCHEMA, _validate

    jsonschema.Draft7Validator.check_schema(WEBHOOK_SCHEMA)
    reference = jsonschema.Draft7Validator(WEBHOOK_SCHEMA)
    for name in ("firing", "resolved"):
        reference.validate(payload(name))
        _validate(payload(name))
    for case, body, _, reason, _ in _bad_bodies():
        if reason != "schema":
            continue
        data = json.loads(body)
        assert not reference.is_valid(data), case
        try:
            _validate(data)
        except fastjsonschema.JsonSchemaException:
            continue
        raise AssertionError(f"fastjsonschema accepted: {case}")


async def test_chunked_body_over_the_limit_is_413(receiver, sink):
    """No Content-Length (chunked): the limit applies while reading."""
    client = await receiver(base_config(sink, max_body_bytes=4096))

    async def chunks():
        for _ in range(10):
            yield b" " * 1024  # JSON whitespace: only the size is wrong

    r = await client.post("/alerts", data=chunks(), headers=AUTH)
    assert r.status == 413
    assert "4096" in (await r.json())["error"]
    body = json.dumps(payload("firing")).encode()

    async def small():
        yield body

    r = await client.post("/alerts", data=small(), headers=AUTH)
    assert r.status == 200, await r.text()


async def test_content_encoding_decoded_or_refused_with_the_reason(receiver, sink):
    """gzip and deflate (zlib or raw) are decoded; a corrupt, truncated or unknown encoding is a
    400 that says why (it was a 500 with a traceback), counted as reason="encoding"."""
    client = await receiver(base_config(sink, max_body_bytes=64 * 1024))
    body = json.dumps(payload("firing")).encode()
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    ok = [("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))]
    ok += [("deflate", raw_deflate), ("identity", body), ("GZip", gzip.compress(body))]
    for i, (encoding, data) in enumerate(ok):
        r = await client.post("/alerts", data=data, headers={**AUTH, "Content-Encoding": encoding})
        assert r.status == 200, (encoding, await r.text())
        assert (await r.json())["accepted" if i == 0 else "duplicates"] == 2, encoding

    packed = gzip.compress(body)
    bad = [
        ("gzip", body, "not valid gzip"),  # not compressed at all
        ("gzip", packed[:-30], "truncated"),
        ("gzip", packed[:40] + b"\x00" * 40 + packed[80:], "not valid gzip"),
        ("gzip", packed + b"trailing junk", "data after the end"),
        ("deflate", b"\x78\x9c" + b"\xff" * 50, "not valid deflate"),
        ("br", body, "unsupported Content-Encoding 'br'"),
        ("zstd", body, "unsupported Content-Encoding 'zstd'"),
        ("gzip, gzip", gzip.compress(packed), "unsupported Content-Encoding"),
    ]
    for encoding, data, text in bad:
        r = await client.post("/alerts", data=data, headers={**AUTH, "Content-Encoding": encoding})
        assert r.status == 400, (encoding, text)
        assert text in (await r.json())["error"], (encoding, text)

    # a small body that inflates past the limit: 413, and the inflating stops at the limit
    bomb = gzip.compress(b" " * (10 * 2**20))
    assert len(bomb) < 64 * 1024
    r = await client.post("/alerts", data=bomb, headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status == 413
    assert "larger than 65536 bytes decoded" in (await r.json())["error"]
    metrics = await (await client.get("/metrics")).text()
    n = len(bad)
    assert f'tailpage_receiver_webhooks_rejected_total{{reason="encoding"}} {n}.0' in metrics
    assert 'tailpage_receiver_webhooks_rejected_total{reason="too_large"} 1.0' in metrics
    assert len((await (await client.get("/api/v1/alerts", headers=AUTH)).json())["alerts"]) == 2
