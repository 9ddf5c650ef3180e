"""Run the real prometheus-alertmanager (Debian) against a webhook URL.

Used by the tests (Alertmanager -> receiver end to end) and by capture_payloads.py, which
recorded the fixtures in payloads/ from a real Alertmanager 0.25.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rcv_helpers import free_port

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


CONFIG = """
route:
  receiver: tailpage
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: tailpage
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""


@contextlib.contextmanager
def alertmanager(webhook_url: str, token: str, config: str = CONFIG) -> Iterator[str]:
    """Start Alertmanager on a free loopback port; yields its base URL. `config`: a template
    with {url} and {token} (CONFIG by default)."""
    if BINARY is None:
        raise RuntimeError(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "am.yml"
        cfg.write_text(config.format(url=webhook_url, token=token))
        port = free_port()
        proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={cfg}",
                f"--storage.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 15
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"alertmanager did not start: {proc.stderr.read().decode()[-2000:]}"
                    )
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sample_alerts(ends_at: datetime | None = None) -> list[dict]:
    starts = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    end = (ends_at or datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return [
        {
            "labels": {
                "alertname": "CriticalError",
                "severity": "critical",
                "component": "payments",
                "error_type": "DatabaseError",
                "namespace": "shop",
            },
            "annotations": {
                "summary": "payments is logging critical errors",
                "description": "5 critical errors in the last 5 minutes",
                "runbook_url": "https://runbooks.example/CriticalError",
            },
            "startsAt": starts.isoformat(),
            "endsAt": end,
            "generatorURL": "http://prometheus.example/graph?g0.expr=tailpage_errors_total",
        },
        {
            "labels": {
                "alertname": "CriticalError",
                "severity": "critical",
                "component": "checkout",
                "error_type": "TimeoutError",
                "namespace": "shop",
            },
            "annotations": {"summary": "checkout is logging critical errors"},
            "startsAt": starts.isoformat(),
            "endsAt": end,
            "generatorURL": "http://prometheus.example/graph?g0.expr=tailpage_errors_total",
        },
    ]


def post_alerts(base: str, alerts: list[dict]) -> None:
    req = urllib.request.Request(
        f"{base}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200, r.status
