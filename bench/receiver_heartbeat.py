"""What heartbeats add to intake: heartbeat.split_pings on a webhook's alerts, then
heartbeat.without_pings (common labels recomputed only when a watchdog was taken out), with two
heartbeats configured (docs/receiver-heartbeats.md). Best of 5 timeit runs; prints microseconds
per call.

    .venv/bin/python bench/receiver_heartbeat.py
"""

from __future__ import annotations

import timeit

from receiver import config, heartbeat


def main() -> None:
    cfg = config.from_dict({
        "channels": {"x": {"url": "console://"}},
        "heartbeats": [{"name": "am"}, {"name": "p", "match": {"alertname": "TailpageWatchdog"}}],
    })
    labels = {"alertname": "CriticalError", "severity": "critical", "component": "payments"}
    cases = {
        "2 alerts": [{"status": "firing", "labels": labels}] * 2,
        "10000 alerts": [{"status": "firing", "labels": {"alertname": "Storm", "i": str(i)}}
                         for i in range(10_000)],
    }
    watchdog = {"status": "firing", "labels": {"alertname": "Watchdog", "severity": "none"}}
    cases["10000 alerts + a watchdog"] = [*cases["10000 alerts"], watchdog]
    for name, alerts in cases.items():
        n = 2000 if len(alerts) < 10 else 20
        body = {"alerts": alerts, "commonLabels": {}}

        def intake(b=body) -> None:
            rest, _ = heartbeat.split_pings(cfg.heartbeats, b["alerts"])
            heartbeat.without_pings(b, rest)

        best = min(timeit.repeat(intake, number=n, repeat=5)) / n
        print(f"{name}: {best * 1e6:.1f} us per webhook ({best * 1e6 / len(alerts):.2f} us/alert)")


if __name__ == "__main__":
    main()
