"""``python -m podium.server``: the server without the CLI (tests, ``podium demo``).

Same options as ``podium server``; errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from podium.server import ServerError, ServerSettings, serve
from podium.server._gc import FreezeSurvivors
from podium.server._settings import (
    FAILURES_HELP,
    HOT_HELP,
    REBALANCE_HELP,
    SPARE_HELP,
    SUSPECT_HELP,
    WINDOW_HELP,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m podium.server", description=__doc__)
    p.add_argument("--store", required=True, help="sqlite:///PATH or etcd://HOST:PORT[,...]")
    p.add_argument("--listen", default="127.0.0.1:7443", help="HOST:PORT (port 0: any)")
    p.add_argument("--data-dir", type=Path, default=Path("/var/lib/podium"))
    p.add_argument("--host-ttl", type=int, default=8, help="agent lease TTL, seconds")
    p.add_argument("--host-suspect-after", type=float, default=None, help=SUSPECT_HELP)
    p.add_argument("--leader-ttl", type=int, default=10, help="leadership lease TTL, seconds")
    p.add_argument("--insecure", action="store_true", help="plain HTTP (loopback tests only)")
    p.add_argument("--san", action="append", default=[], help="extra certificate name/IP")
    p.add_argument(
        "--listen-netns",
        action="append",
        default=[],
        metavar="NETNS@HOST:PORT",
        help="also listen inside network namespace NETNS (repeatable), e.g. a lab's fabric",
    )
    p.add_argument("--no-controllers", action="store_true", help="serve the API only; never lead")
    p.add_argument("--guest-subnet", metavar="CIDR", help="guests' on-link subnet (NIC IPs)")
    p.add_argument(
        "--guest-pool", metavar="FIRST-LAST", help="guest IPs to hand out (default: the subnet)"
    )
    p.add_argument("--guest-gateway", metavar="ADDR", help="the guests' default gateway")
    p.add_argument(
        "--max-migrations", type=int, default=2, help="live migrations in flight, cluster-wide"
    )
    p.add_argument(
        "--max-migrations-per-host",
        type=int,
        default=1,
        help="live migrations in flight per host (as source or target)",
    )
    p.add_argument("--failures-to-tolerate", type=int, default=1, help=FAILURES_HELP, metavar="K")
    p.add_argument("--spare-host", action="append", default=[], metavar="NAME", help=SPARE_HELP)
    p.add_argument("--rebalance", action="store_true", help=REBALANCE_HELP)
    p.add_argument("--rebalance-interval", type=float, default=60.0, help="seconds between passes")
    p.add_argument("--rebalance-window", type=float, default=1800.0, help=WINDOW_HELP)
    p.add_argument("--rebalance-max-concurrent", type=int, default=2, help="in flight, at most")
    p.add_argument("--rebalance-max-per-hour", type=int, default=12, help="started, at most")
    p.add_argument("--rebalance-hot", type=float, default=0.85, help=HOT_HELP)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = ServerSettings(
        store_url=args.store,
        listen=args.listen,
        data_dir=args.data_dir,
        host_ttl=args.host_ttl,
        host_suspect_after=args.host_suspect_after,
        leader_ttl=args.leader_ttl,
        insecure=args.insecure,
        sans=tuple(args.san),
        controllers=not args.no_controllers,
        extra_listen=tuple(args.listen_netns),
        guest_subnet=args.guest_subnet,
        guest_pool=args.guest_pool,
        guest_gateway=args.guest_gateway,
        max_migrations=args.max_migrations,
        max_migrations_per_host=args.max_migrations_per_host,
        failures_to_tolerate=args.failures_to_tolerate,
        spare_hosts=tuple(args.spare_host),
        rebalance=args.rebalance,
        rebalance_interval=args.rebalance_interval,
        rebalance_window=args.rebalance_window,
        rebalance_max_concurrent=args.rebalance_max_concurrent,
        rebalance_max_per_hour=args.rebalance_max_per_hour,
        rebalance_hot=args.rebalance_hot,
    )
    try:
        FreezeSurvivors().install()  # (this process only: not when serve() is embedded)
        asyncio.run(serve(settings))
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
