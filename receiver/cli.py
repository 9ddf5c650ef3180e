"""tailpage-receiver: run | check-config FILE | routes FILE label=value... | send-test."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

# Only light imports up here: `run` catches SIGTERM/SIGINT before apprise and aiohttp load (~0.7 s
# of imports); the commands import what they need.
from .signals import Stopper

if TYPE_CHECKING:
    from .config import Config

EXIT_CONFIG = 2


def _load(path: str | None) -> Config:
    from . import config as config_mod

    return config_mod.load(path) if path else config_mod.no_config_defaults()


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from . import config as config_mod
    from .serve import serve

    stopper: Stopper = args.stopper
    cfg = _load(args.config)
    if args.listen:
        cfg.listen_host, cfg.listen_port = config_mod.parse_listen(args.listen, "--listen")
    if not cfg.channels:
        logging.getLogger("tailpage.receiver").warning(
            "no channels configured: alerts are stored and visible in the API only"
        )
    if stopper.signals:  # stopped while starting: nothing was opened yet
        logging.getLogger("tailpage.receiver").info("%s: stopped", stopper.signals[0])
        return 0
    try:
        asyncio.run(serve(cfg, stopper))
    except OSError as e:  # the port is taken, the address is not ours
        reason = os.strerror(e.errno) if e.errno else str(e)
        print(f"cannot listen on {cfg.listen_host}:{cfg.listen_port}: {reason}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from . import config as config_mod

    cfg = config_mod.load(args.file)
    routes = "default severity policy" if cfg.routes is None else f"{len(cfg.routes)} routes"
    print(
        f"{args.file}: OK ({len(cfg.channels)} channels: {', '.join(cfg.channels) or 'none'}; "
        f"{routes})"
    )
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .route import route

    cfg = config_mod.load(args.file)
    labels = {}
    for item in args.labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"routes: expected label=value, got {item!r}", file=sys.stderr)
            return EXIT_CONFIG
        labels[key] = value
    r = route(cfg, labels)
    print(f"severity: {r.severity}")
    print(f"channels: {', '.join(r.channels) if r.channels else '(none: visible in the API only)'}")
    for i, s in enumerate(r.escalation, start=1):
        print(f"escalate {i}: after {s.after_s:g}s if not acknowledged -> {', '.join(s.channels)}")
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    import asyncio

    from . import config as config_mod
    from .deliver import send
    from .render import test_notification

    cfg = config_mod.load(args.config)
    ch = cfg.channels.get(args.channel)
    if ch is None:
        print(
            f"send-test: no channel {args.channel!r} in {args.config} "
            f"(have: {', '.join(cfg.channels) or 'none'})",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    error = asyncio.run(send(ch, test_notification(ch), cfg.delivery.timeout_s))
    if error:
        print(f"send-test: {args.channel}: FAILED: {error}", file=sys.stderr)
        return 1
    print(f"send-test: {args.channel}: sent")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tailpage-receiver", description=__doc__)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="serve webhooks, deliver, escalate")
    r.add_argument("--config", help="YAML config (default: SQLite in ./var and a console channel)")
    r.add_argument("--listen", help="HOST:PORT (overrides the config; default 127.0.0.1:9097)")
    r.set_defaults(fn=cmd_run)
    c = sub.add_parser("check-config", help="validate a config file; exit 2 on errors")
    c.add_argument("file")
    c.set_defaults(fn=cmd_check_config)
    ro = sub.add_parser("routes", help="which channels and escalation steps these labels get")
    ro.add_argument("file")
    ro.add_argument("labels", nargs="*", metavar="label=value")
    ro.set_defaults(fn=cmd_routes)
    t = sub.add_parser("send-test", help="send a test notification to one channel")
    t.add_argument("--config", required=True)
    t.add_argument("channel")
    t.set_defaults(fn=cmd_send_test)
    args = p.parse_args(argv)
    args.stopper = Stopper()
    if args.command == "run":
        args.stopper.install()  # from here on, SIGTERM/SIGINT (any number): one graceful stop
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .config import ConfigError
    from .deliver import contain_library_logs
    from .store import StoreError

    contain_library_logs()
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as e:
        print(f"store error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
