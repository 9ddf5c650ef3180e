"""`tailpage-receiver run` as a real process: embedded defaults, escalation timers across kill -9,
secrets kept out of everything it prints or serves, CLI errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import aiohttp
import pytest
import yaml
from rcv_helpers import (
    AUTH,
    EXE,
    TOKEN,
    base_config,
    free_port,
    one_alert,
    ready,
    start,
    stop,
    wait_for,
)


async def poll_json(url: str, check, headers=None, timeout: float = 30.0):
    """GET url until check(body) is true; the last body."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(url, headers=headers) as r:
                body = await r.json()
            if check(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out polling {url}: {json.dumps(body)[:2000]}")
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_run_without_config_uses_sqlite_in_var_and_a_console_channel(tmp_path):
    port = free_port()
    log = tmp_path / "run.log"
    proc = start(None, port, tmp_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        await ready(port, proc)
        assert (tmp_path / "var" / "receiver.db").is_file()
        async with aiohttp.ClientSession() as s:
            for sev in ("P0", "info", "no-such-severity"):  # every severity gets the console
                body = one_alert(f"nc-{sev}", severity=sev)
                async with s.post(f"{base}/alerts", json=body) as r:  # no auth by default
                    assert r.status == 200, await r.text()

        def all_sent(body) -> bool:
            states = [d["state"] for a in body["alerts"] for d in a["deliveries"]]
            return len(body["alerts"]) == 3 and states == ["sent"] * 3

        body = await poll_json(f"{base}/api/v1/alerts", all_sent)
        assert {d["channel"] for a in body["alerts"] for d in a["deliveries"]} == {"console"}
    finally:
        assert stop(proc) == 0
    out = log.read_text()
    assert "[CRITICAL] CriticalError — checkout" in out
    assert "[LOW] CriticalError — checkout" in out
    assert "[UNKNOWN] CriticalError — checkout" in out
    assert "checkout is logging critical errors" in out  # the summary is printed too


@pytest.mark.slow
async def test_escalation_timer_survives_kill_9(sink, tmp_path):
    cfg = base_config(sink, store=f"sqlite:///{tmp_path}/r.db")
    cfg["routes"] = [
        {
            "match": {"severity": "critical"},
            "channels": ["slack"],
            "escalate": [{"after": "3s", "channels": ["sms"]}],
        }
    ]
    cfg_path = tmp_path / "receiver.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    port, log = free_port(), tmp_path / "run.log"
    base = f"http://127.0.0.1:{port}"
    proc = start(cfg_path, port, tmp_path, log)
    try:
        await ready(port, proc)
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{base}/alerts", json=one_alert("esc9"), headers=AUTH) as r,
        ):
            assert r.status == 200
        accepted_at = time.time()

        def first_notice_sent(body) -> bool:
            return [d["state"] for a in body["alerts"] for d in a["deliveries"]] == ["sent"]

        await poll_json(f"{base}/api/v1/alerts", first_notice_sent, AUTH)
        assert sink.to("sms") == []
        os.kill(proc.pid, signal.SIGKILL)  # the timer exists only in the store now
        proc.wait(10)
        proc = start(cfg_path, port, tmp_path, log)
        await ready(port, proc)
        await wait_for(lambda: len(sink.to("sms")) == 1, timeout=30, what="escalation")
        escalated_at = next(t for name, _, t in sink.got if name == "sms")
        await poll_json(
            f"{base}/api/v1/alerts",
            lambda b: b["alerts"] and b["alerts"][0]["escalation"]["step"] == 1,
            AUTH,
        )
    finally:
        stop(proc)
    assert escalated_at - accepted_at >= 2.9  # the stored due time, not "now + 3s" again
    assert "(escalation 1: not acknowledged)" in sink.to("sms")[0]["message"]
    assert len(sink.to("slack")) == 1  # the first notice was not repeated by the restart


@pytest.mark.slow
async def test_secrets_stay_out_of_logs_metrics_api_and_errors(sink, tmp_path):
    """Channel URLs with a password, a secret path and a secret query parameter, two of them
    failing until dead-lettered, DEBUG logging: none of the secrets (nor the intake token)
    appears in the process output, /metrics or any API answer."""
    secrets = ["PASSWORDSECRET1", "PATHSECRET2", "QUERYSECRET3", "FAILPATHSECRET4", TOKEN]
    closed_port = free_port()  # nothing listens there: connection refused
    sink.fail["FAILPATHSECRET4"] = 10**6
    cfg = base_config(sink, store=f"sqlite:///{tmp_path}/r.db")
    cfg["channels"] = {
        "slack": {"url": sink.url("slack") + "?token=QUERYSECRET3"},
        "refused": {"url": f"json://bot:PASSWORDSECRET1@127.0.0.1:{closed_port}/PATHSECRET2"},
        "failing": {"url": sink.url("FAILPATHSECRET4"), "kind": "pagerduty"},
    }
    cfg["routes"] = [{"channels": ["slack", "refused", "failing"]}]
    cfg["delivery"]["max_age"] = "1s"
    cfg_path = tmp_path / "receiver.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    port, log = free_port(), tmp_path / "run.log"
    base = f"http://127.0.0.1:{port}"
    proc = start(cfg_path, port, tmp_path, log, "--log-level", "DEBUG")
    served = []
    try:
        await ready(port, proc)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/alerts", json=one_alert("sec1"), headers=AUTH) as r:
                assert r.status == 200
            wrong = {"Authorization": "Bearer not-the-token"}
            async with s.post(f"{base}/alerts", json=one_alert("sec2"), headers=wrong) as r:
                assert r.status == 401
                served.append(await r.text())
        dead = await poll_json(
            f"{base}/api/v1/dead-letters", lambda b: len(b["dead_letters"]) == 2, AUTH
        )
        assert {d["channel"] for d in dead["dead_letters"]} == {"refused", "failing"}
        failing = next(d for d in dead["dead_letters"] if d["channel"] == "failing")
        assert "500" in failing["error"]  # the reason is kept, only the secret parts go
        served.append(json.dumps(dead))
        async with aiohttp.ClientSession() as s:
            for path in ("/metrics", "/api/v1/alerts", "/api/v1/history"):
                async with s.get(f"{base}{path}", headers=AUTH) as r:
                    served.append(await r.text())
    finally:
        assert stop(proc) == 0
    out = log.read_text()
    assert "DEAD LETTER" in out and "DEBUG" in out  # the logs we search are really there
    assert 'tailpage_receiver_dead_letters_total{channel="refused"} 1.0' in served[-3]
    assert len(sink.to("slack")) == 1
    for text in [out, *served]:
        for secret in secrets:
            assert secret not in text


def test_cli_errors_exit_2_with_the_reason(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(EXE), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60
        )

    out = run("run", "--listen", "localhost")
    assert out.returncode == 2 and "--listen" in out.stderr and "HOST:PORT" in out.stderr
    out = run("run", "--listen", "127.0.0.1:99999")  # same check as the config's listen
    assert out.returncode == 2 and "between 1 and 65535" in out.stderr
    out = run("run", "--config", str(tmp_path / "missing.yml"))
    assert out.returncode == 2 and "missing.yml" in out.stderr and "readable" in out.stderr
    cfg = tmp_path / "c.yml"
    cfg.write_text("channels: {console: {url: 'console://'}}\n")
    out = run("routes", str(cfg), "severity")
    assert out.returncode == 2 and "label=value" in out.stderr
    out = run("routes", str(cfg), "severity=warning")
    assert out.returncode == 0 and "severity: medium" in out.stdout
    assert "channels: (none: visible in the API only)" in out.stdout  # no slack-like channel
    out = run("check-config", str(cfg))
    assert out.returncode == 0 and "default severity policy" in out.stdout
    assert not (tmp_path / "var").exists()  # only `run` creates the store
