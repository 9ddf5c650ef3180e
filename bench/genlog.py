"""Deterministic JSON-lines application logs for the exporter benchmarks.

Usage: python bench/genlog.py N OUT [--mix calm|storm|errors] [--seed S]

Mixes (each line about 200 bytes for calm, longer where errors carry stacks):
  calm    a quiet day: 85% info/debug request lines, 10% warnings, 5% errors and fatals with a
          flat `error_type`, string levels, a `duration_ms` on every line.
  storm   an incident, pino-shaped (numeric level, time, pid, hostname, msg): half the lines are
          errors with a nested `err` {type, message, stack} and a five-frame Node stack; every
          line has pino-http's `responseTime`.
  errors  every line an error, python-json-logger shaped (levelname, name, message): the type is
          only in the `exc_info` traceback text, as `logger.exception()` writes it.

Messages carry ids (order numbers, hosts, user ids) that vary line by line, so normalisation
and classification see many distinct texts of few kinds, as on a real incident. The same N,
mix and seed always give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

COMPONENTS = ("api", "payments", "auth", "db", "worker", "search", "notifications", "billing")
T0_MS = 1_795_305_600_000  # 2026-11-22T00:00:00Z

# error type -> message template ({n}: a number, {h}: a hex id, {o}: an IPv4 octet); some
# match the default rules (database, payment, rate limit, unauthorized), the others fall back
ERRORS = {
    "DatabaseConnectionError": "database connection failed: host pg-{n}.internal:5432 refused",
    "TimeoutError": "upstream timeout after {n}ms calling inventory for sku {h}",
    "ValidationError": "invalid value for 'email' in signup form {n}",
    "PaymentDeclined": "payment processing failed for order {n}: card declined",
    "RateLimitExceeded": "rate limit exceeded for client {n} on /v2/search",
    "KeyError": "missing key session_{h} in cache shard {n}",
    "ECONNREFUSED": "connect ECONNREFUSED 10.2.{o}.17:6379",
    "UnauthorizedAccess": "unauthorized access to account {n} from 172.16.4.{o}",
    "TypeError": "Cannot read properties of undefined (reading 'items') in cart {n}",
}
ETYPES = tuple(ERRORS)


def _message(rnd: random.Random, etype: str) -> str:
    return ERRORS[etype].format(n=rnd.randint(1, 99_999), h=f"{rnd.getrandbits(32):08x}",
                                o=rnd.randint(0, 255))


def _node_stack(etype: str, message: str, comp: str) -> str:
    """A five-frame V8 stack: fixed code locations per error type, as a real bug has."""
    k = ETYPES.index(etype)
    frames = [f"handle{etype[:6]} (/app/src/{comp}/service.js:{40 + k}:{11 + k})",
              f"async {comp}Controller.run (/app/src/{comp}/controller.js:{120 + k}:7)",
              "Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js"
              ":95:5)",
              "next (/app/node_modules/express/lib/router/route.js:149:13)",
              "process.processTicksAndRejections (node:internal/process/task_queues:95:5)"]
    return f"{etype}: {message}\n" + "".join(f"    at {f}\n" for f in frames).rstrip("\n")


def _python_traceback(etype: str, message: str, comp: str) -> str:
    k = ETYPES.index(etype)
    qual = "app.errors." + etype if k % 3 == 0 else etype  # some raised with a dotted name
    return ("Traceback (most recent call last):\n"
            f'  File "/srv/app/{comp}/views.py", line {60 + k}, in handle\n'
            "    result = service.run(request)\n"
            f'  File "/srv/app/{comp}/service.py", line {200 + k}, in run\n'
            "    return self._call(payload)\n"
            f'  File "/srv/app/{comp}/client.py", line {30 + k}, in _call\n'
            f"    raise {etype}(msg)\n"
            f"{qual}: {message}")


def calm(rnd: random.Random, i: int) -> dict:
    r = rnd.random()
    comp = rnd.choice(COMPONENTS)
    ts = _iso(i)
    if r < 0.05:
        etype = rnd.choice(ETYPES)
        return {"timestamp": ts, "level": "fatal" if rnd.random() < 0.02 else "error",
                "component": comp, "message": _message(rnd, etype), "error_type": etype,
                "request_id": f"req_{rnd.getrandbits(32):08x}",
                "user_id": f"u{rnd.randint(1, 80_000)}",
                "duration_ms": round(rnd.expovariate(1 / 350), 2)}
    if r < 0.15:
        return {"timestamp": ts, "level": "warn", "component": comp,
                "message": "slow query on table " + rnd.choice(("orders", "users", "carts")),
                "request_id": f"req_{rnd.getrandbits(32):08x}", "rows": rnd.randint(1, 5000),
                "duration_ms": round(rnd.expovariate(1 / 800), 2)}
    return {"timestamp": ts, "level": "info" if r < 0.9 else "debug", "component": comp,
            "message": "request completed", "method": rnd.choice(("GET", "GET", "POST", "PUT")),
            "path": f"/v1/items/{rnd.randint(1, 2000)}", "status": 200,
            "request_id": f"req_{rnd.getrandbits(32):08x}",
            "duration_ms": round(rnd.expovariate(1 / 70), 2)}


def storm(rnd: random.Random, i: int) -> dict:
    comp = rnd.choice(COMPONENTS)
    rec = {"level": 30, "time": T0_MS + i, "pid": 4100 + i % 4,
           "hostname": f"{comp}-7f9c4d-{i % 4}", "component": comp,
           "reqId": f"{rnd.getrandbits(32):08x}-{rnd.getrandbits(16):04x}"}
    r = rnd.random()
    if r < 0.5:
        etype = rnd.choice(ETYPES)
        message = _message(rnd, etype)
        rec["level"] = 60 if rnd.random() < 0.02 else 50
        rec["err"] = {"type": etype, "message": message,
                      "stack": _node_stack(etype, message, comp)}
        rec["responseTime"] = round(rnd.expovariate(1 / 900), 1)
        # pino-http's own line reuses the error message; a handler's line says what failed
        rec["msg"] = message if rnd.random() < 0.5 else "request errored"
        return rec
    rec["level"] = 40 if r < 0.6 else (20 if r < 0.65 else 30)
    rec["req"] = {"method": rnd.choice(("GET", "POST")),
                  "url": f"/v1/items/{rnd.randint(1, 2000)}"}
    rec["res"] = {"statusCode": 200 if rec["level"] != 40 else 429}
    rec["responseTime"] = round(rnd.expovariate(1 / 90), 1)
    rec["msg"] = "request completed"
    return rec


def errors(rnd: random.Random, i: int) -> dict:
    comp = rnd.choice(COMPONENTS)
    etype = rnd.choice(ETYPES)
    message = _message(rnd, etype)
    h, m, s, ms = i // 3_600_000 % 24, i // 60_000 % 60, i // 1000 % 60, i % 1000
    return {"asctime": f"2026-11-22 {h:02d}:{m:02d}:{s:02d},{ms:03d}",
            "levelname": "CRITICAL" if rnd.random() < 0.03 else "ERROR",
            "name": "app." + comp, "message": "request failed: " + message,
            "request_id": f"{rnd.getrandbits(128):032x}",
            "duration_ms": round(rnd.expovariate(1 / 500), 2),
            "exc_info": _python_traceback(etype, message, comp)}


def _iso(i: int) -> str:
    s, ms = divmod(i * 3, 1000)  # a line every 3 ms from T0
    return f"2026-11-22T{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{ms:03d}Z"


MIXES: dict[str, Callable[[random.Random, int], dict]] = {
    "calm": calm, "storm": storm, "errors": errors}


def write(n: int, out: Path, mix: str = "calm", seed: int = 13) -> None:
    rnd = random.Random(seed)
    make = MIXES[mix]
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with open(out, "w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):
            end = min(n, start + 10_000)
            f.write("".join(dumps(make(rnd, i)) + "\n" for i in range(start, end)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lines", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--mix", choices=sorted(MIXES), default="calm")
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    write(a.lines, a.out, a.mix, a.seed)


if __name__ == "__main__":
    main()
