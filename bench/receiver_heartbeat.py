"""What heartbeats add to intake: heartbeat.split_pings on a webhook's alerts, with two heartbeats
configured (docs/receiver-heartbeats.md). Best of 5 timeit runs; prints microseconds per call.

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
    for name, alerts in cases.items():
        n = 2000 if len(alerts) < 10 else 20
        best = min(timeit.repeat(lambda a=alerts: heartbeat.split_pings(cfg.heartbeats, a),
                                 number=n, repeat=5)) / n
        print(f"{name}: {best * 1e6:.1f} us per webhook ({best * 1e6 / len(alerts):.2f} us/alert)")


if __name__ == "__main__":
    main()
