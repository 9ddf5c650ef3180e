"""`tailpage-receiver run` as a real process: embedded defaults, escalation timers across kill -9,
secrets kept out of everything it prints or serves, CLI errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def _run_local(tmp_path: Path) -> tuple[subprocess.Popen, int, int, Path]:
    """scripts/run-local (what `make run` starts) in a copy of the repository layout under
    tmp_path (its logs/ and var/ go there), on free ports, in its own process group like a
    terminal's foreground job. Returns once both processes answer."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "scripts").mkdir()
    shutil.copy2(root / "scripts" / "run-local", tmp_path / "scripts" / "run-local")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    rport, eport = free_port(), free_port()
    env = {
        **os.environ,
        "TAILPAGE_RECEIVER_LISTEN": f"127.0.0.1:{rport}",
        "TAILPAGE_EXPORTER_LISTEN": f"127.0.0.1:{eport}",
    }
    log = tmp_path / "run-local.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(tmp_path / "scripts" / "run-local")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    for port in (rport, eport):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"run-local did not start: {log.read_text()}") from None
                time.sleep(0.1)
    return proc, rport, eport, log


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "ctrl-c twice", "sigterm"])
def test_make_run_stops_quietly_with_status_0(tmp_path, how):
    """Ctrl-C is SIGINT to the whole foreground process group (the script and both processes),
    then the script's own SIGTERM to both: everything ends, status 0, no traceback."""
    proc, _, _, log = _run_local(tmp_path)
    children = _children(proc.pid)
    assert len(children) == 2
    try:
        if how.startswith("ctrl-c"):
            os.killpg(proc.pid, signal.SIGINT)
            if how == "ctrl-c twice":
                time.sleep(0.05)
                os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    assert rc == 0, out
    assert "Traceback" not in out and "exited" not in out, out
    assert "tailpage.receiver: stopped" in out
    for pid in children:  # both processes are gone, not left behind
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


@pytest.mark.slow
def test_make_run_stops_the_other_process_when_one_dies(tmp_path):
    proc, rport, _, log = _run_local(tmp_path)
    try:
        receiver = next(
            p for p in _children(proc.pid) if f"{rport}" in Path(f"/proc/{p}/cmdline").read_text()
        )
        os.kill(receiver, signal.SIGKILL)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log.read_text()
    assert rc == 1, out
    assert "the receiver exited on its own with status 137; stopped the other" in out
    assert "Traceback" not in out


@pytest.mark.slow
def test_a_signal_during_startup_exits_0_without_a_traceback(tmp_path):
    """Half a second in, the process is still importing apprise and aiohttp (~0.7 s): a SIGTERM
    and a SIGINT then end it with 0, not with 143 or a KeyboardInterrupt traceback."""
    log = tmp_path / "run.log"
    proc = start(None, free_port(), tmp_path, log)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
    out = log.read_text()
    assert "Traceback" not in out and "stop" in out, out


def test_a_taken_port_exits_1_with_the_reason(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [str(EXE), "run", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
    assert out.returncode == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr
