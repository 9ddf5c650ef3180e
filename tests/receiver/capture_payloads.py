"""Capture real Alertmanager webhook payloads into payloads/*.json.

    .venv/bin/python tests/receiver/capture_payloads.py

Starts prometheus-alertmanager against a recording HTTP server, raises two alerts, then
resolves them, and writes what Alertmanager sent (firing.json, resolved.json).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from alertmanager import alertmanager, post_alerts, sample_alerts

OUT = Path(__file__).parent / "payloads"


def main() -> None:
    got: queue.Queue[tuple[dict, str]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.put((json.loads(body), self.headers.get("Authorization", "")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    with alertmanager(url, "capture-token") as am:
        post_alerts(am, sample_alerts())
        firing, auth = got.get(timeout=20)
        assert auth == "Bearer capture-token", auth
        post_alerts(am, sample_alerts(ends_at=datetime.now(UTC)))
        while True:
            resolved, _ = got.get(timeout=20)
            if resolved["status"] == "resolved":
                break
    server.shutdown()
    OUT.mkdir(exist_ok=True)
    for name, data in (("firing", firing), ("resolved", resolved)):
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {OUT / name}.json: {data['status']}, {len(data['alerts'])} alerts")


if __name__ == "__main__":
    main()
