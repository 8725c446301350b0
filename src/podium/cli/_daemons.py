"""podium server, podium agent: the two long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli._common import console, fail
from podium.cli._hosts import write_secret


def server(
    store: Annotated[
        str,
        typer.Option(help="sqlite:///PATH/podium.db (embedded) or etcd://HOST:2379[,HOST:2379]"),
    ] = "sqlite:///var/lib/podium/podium.db",
    listen: Annotated[
        str, typer.Option(help="HOST:PORT to serve HTTPS on (port 0: any)")
    ] = "127.0.0.1:7443",
    data_dir: Annotated[Path, typer.Option(help="Where TLS material and admin.conf live")] = Path(
        "/var/lib/podium"
    ),
    host_ttl: Annotated[
        int,
        typer.Option(
            help="Host lease TTL in seconds: a host is lost this long after its last renewal "
            "(see docs/reliability.md for the trade-off)"
        ),
    ] = 8,
    host_suspect_after: Annotated[
        float | None,
        typer.Option(
            help="Seconds without a renewal before a live host shows suspect (default: "
            "TTL/2). Lower: trouble shows sooner, more stalls flagged; guests move only "
            "when the lease expires"
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Serve plain HTTP (tests on loopback only)")
    ] = False,
    listen_netns: Annotated[
        list[str],
        typer.Option(
            metavar="NETNS@HOST:PORT",
            help="Also listen inside network namespace NETNS, e.g. a lab's fabric. Repeatable.",
        ),
    ] = [],  # noqa: B006
    guest_subnet: Annotated[
        str | None,
        typer.Option(metavar="CIDR", help="Guests' on-link subnet: NIC IPs come from it"),
    ] = None,
    guest_pool: Annotated[
        str | None,
        typer.Option(metavar="FIRST-LAST", help="Guest IPs to hand out (default: the subnet)"),
    ] = None,
    guest_gateway: Annotated[
        str | None, typer.Option(metavar="ADDR", help="The guests' default gateway")
    ] = None,
    max_migrations: Annotated[
        int, typer.Option(min=1, help="Live migrations in flight, cluster-wide")
    ] = 2,
    max_migrations_per_host: Annotated[
        int, typer.Option(min=1, help="Live migrations in flight per host (source or target)")
    ] = 1,
    failures_to_tolerate: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="K",
            help="Keep room to restart all guests after any K host failures (0: off)",
        ),
    ] = 1,
    spare_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="A dedicated spare host for failover (repeatable)",
        ),
    ] = None,
    rebalance: Annotated[
        bool,
        typer.Option(
            "--rebalance",
            help="Rebalance continuously (live migrations; see podium rebalance --dry-run)",
        ),
    ] = False,
    rebalance_interval: Annotated[
        float, typer.Option(min=1.0, help="Seconds between rebalancing passes")
    ] = 60.0,
    rebalance_window: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds before a guest the rebalancer moved may move again"),
    ] = 1800.0,
    rebalance_max_concurrent: Annotated[
        int, typer.Option(min=0, help="Rebalancing: migrations in flight, at most")
    ] = 2,
    rebalance_max_per_hour: Annotated[
        int, typer.Option(min=0, help="Rebalancing: migrations started per hour, at most")
    ] = 12,
    rebalance_hot: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Usage share of capacity (any dimension) above which a host is hot",
        ),
    ] = 0.85,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "warning",
) -> None:
    """Run the API server and (when elected leader) the controllers."""
    from podium.server import ServerError, ServerSettings, serve  # noqa: PLC0415

    setup_logging(log_level)

    settings = ServerSettings(
        store_url=store, listen=listen, data_dir=data_dir, host_ttl=host_ttl, insecure=insecure,
        host_suspect_after=host_suspect_after,
        extra_listen=tuple(listen_netns), guest_subnet=guest_subnet, guest_pool=guest_pool,
        guest_gateway=guest_gateway, max_migrations=max_migrations,
        max_migrations_per_host=max_migrations_per_host,
        failures_to_tolerate=failures_to_tolerate, spare_hosts=tuple(spare_host or ()),
        rebalance=rebalance, rebalance_interval=rebalance_interval,
        rebalance_window=rebalance_window, rebalance_max_concurrent=rebalance_max_concurrent,
        rebalance_max_per_hour=rebalance_max_per_hour, rebalance_hot=rebalance_hot,
    )  # fmt: skip
    try:
        asyncio.run(serve(settings, ready=lambda line: console.print(line, highlight=False)))
    except ServerError as err:
        fail(str(err))
    except KeyboardInterrupt:
        pass


def setup_logging(level: str) -> None:
    """Log lines to stderr with time and origin (a daemon's stderr goes to its log file)."""
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        fail(f"unknown --log-level {level!r}: expected debug, info, warning or error")
    logging.basicConfig(
        level=value, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def _start_fence_keeper(node: Any, drv: Any) -> threading.Event:
    """For real guests, fence from outside the agent process too (see fence_keeper).

    A thread mirrors the watchdog's deadline into the keeper's file: when the agent
    process stops (SIGSTOP, kill -9, a frozen machine), the file stops being renewed
    and the keeper kills the QEMUs at the same deadline the watchdog would have.
    Returns an event that stops the mirror (the keeper goes on guarding the last
    deadline: nobody renews the lease once this agent is gone).
    """
    stop = threading.Event()
    state_dir = getattr(drv, "state_dir", None)
    if getattr(drv, "kind", "") != "qemu" or state_dir is None:
        return stop
    from podium.drivers.qemu.fence_keeper import spawn_keeper, write_deadline  # noqa: PLC0415

    path = Path(state_dir) / "fence.json"
    spawn_keeper(path, Path(state_dir))

    def mirror() -> None:
        last: float | None = None
        while not stop.wait(0.1):
            deadline = node.fence.deadline
            if deadline is not None and deadline != last:
                write_deadline(path, deadline)
                last = deadline

    threading.Thread(target=mirror, name="fence-mirror", daemon=True).start()
    return stop


def _address_towards(server_url: str) -> str | None:
    """This host's source address on the route to the server (no packet is sent)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    host = urlsplit(server_url).hostname
    if not host:
        return None
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))  # UDP connect only picks a route
            return str(probe.getsockname()[0])
    except OSError:
        return None


def _parse_labels(labels: list[str]) -> dict[str, str]:
    out = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"bad --label {item!r}: expected KEY=VALUE, e.g. --label rack=r1")
        out[key] = value
    return out


def _parse_taints(taints: list[str]) -> dict[str, str]:
    """``--taint KEY=VALUE`` values as ``{key: value}``; fails with a one-line error."""
    from podium.model._qos import MAX_CONSTRAINTS, TOLERATION_RE  # noqa: PLC0415

    out: dict[str, str] = {}
    for item in taints:
        key, sep, value = item.partition("=")
        if not sep or not value or not TOLERATION_RE.match(item):
            fail(
                f"bad --taint {item!r}: expected KEY=VALUE (KEY: lowercase letters, digits, "
                "'-', '_', '.'; VALUE: letters, digits, '-', '_', '.'), e.g. --taint gpu=a100"
            )
        if key in out and out[key] != value:
            fail(f"--taint {key} given twice ({out[key]}, {value}): a host has one value per key")
        out[key] = value
    if len(out) > MAX_CONSTRAINTS:
        fail(f"{len(out)} --taint values; at most {MAX_CONSTRAINTS}")
    return out


def _router(drv: Any, host: str, netns: str) -> Any:
    """The host's network-rules router (``--router-netns``), on the driver's OVS switch."""
    from podium.drivers.net import OvsNetwork, Router  # noqa: PLC0415

    ovs = getattr(getattr(drv, "network", None), "ovs", None)
    if not isinstance(ovs, OvsNetwork):
        fail(
            "--router-netns needs the qemu driver with an Open vSwitch VLAN switch "
            "(--ovs-db, and $PODIUM_BRIDGE for untagged NICs): the gateway ports join it"
        )
    if netns != "." and not Path(f"/run/netns/{netns}").exists():
        fail(f"--router-netns {netns}: no such namespace (ip netns add {netns}), or '.' for ours")
    return Router(ovs, host=host, netns=None if netns == "." else netns)


def _server_urls(values: list[str]) -> list[str]:
    """The agent's ``--server`` values: repeated and/or comma-separated http(s) URLs.

    Returns them in order, each without a trailing slash, repeats dropped; fails with
    a one-line error on anything that is not an http(s) URL with a host.
    """
    from urllib.parse import urlsplit  # noqa: PLC0415

    urls: list[str] = []
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                parts = urlsplit(part)
                ok = parts.scheme in ("https", "http") and bool(parts.hostname)
                _ = parts.port  # raises on a port that is not a number
            except ValueError:
                ok = False
            if not ok:
                fail(f"bad --server {part!r}: expected an http(s) URL, e.g. https://10.0.0.1:7443")
            if (url := part.rstrip("/")) not in urls:
                urls.append(url)
    if not urls:
        fail("--server is required: the URL of a podium server, e.g. https://10.0.0.1:7443")
    return urls


def agent(
    server_url: Annotated[
        list[str],
        typer.Option(
            "--server",
            metavar="URL",
            help="Server URL, e.g. https://10.0.0.1:7443; repeat (or comma-separate) to list "
            "several servers of one cluster: the agent fails over between them",
        ),
    ],
    token_file: Annotated[
        Path, typer.Option(help="Join token (replaced by this host's own token after joining)")
    ],
    name: Annotated[
        str | None, typer.Option(help="This host's name (default: the hostname)")
    ] = None,
    driver: Annotated[str, typer.Option(help="qemu (real guests) or sim (simulated host)")] = "sim",
    data_dir: Annotated[
        Path,
        typer.Option(help="Driver state: guest folders (DIR/NAME) and volumes (DIR/volumes)"),
    ] = Path("/var/lib/podium/agent"),
    ca_file: Annotated[
        Path | None,
        typer.Option(help="CA certificate of the server (default: ca.pem beside the token file)"),
    ] = None,
    cpu: Annotated[float, typer.Option(help="CPUs offered to guests")] = 16,
    memory_mib: Annotated[int, typer.Option(help="Memory offered to guests, MiB")] = 65536,
    iops: Annotated[int, typer.Option(help="Storage IOPS offered to guests")] = 20000,
    net_mbps: Annotated[
        int, typer.Option(help="Network bandwidth offered to guests, Mbit/s")
    ] = 10000,
    label: Annotated[
        list[str], typer.Option(help="KEY=VALUE, e.g. rack=r1, site=s1. Repeatable.")
    ] = [],  # noqa: B006
    taint: Annotated[
        list[str],
        typer.Option(
            help="KEY=VALUE, e.g. gpu=a100: only guests that tolerate it are placed here "
            "(dedicated hosts). Repeatable."
        ),
    ] = [],  # noqa: B006
    migration_address: Annotated[
        str | None,
        typer.Option(
            help="Address incoming live migrations listen on "
            "(default: this host's address on the route to the server)"
        ),
    ] = None,
    traffic_interval: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=3600,
            help="Seconds between reports of measured traffic between guests (flow counters)",
        ),
    ] = 10.0,
    usage_interval: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=3600,
            help="Seconds between measurements of each guest's usage (sent when it moved)",
        ),
    ] = 30.0,
    ovs_db: Annotated[
        str | None,
        typer.Option(
            envvar="PODIUM_OVS_DB",
            metavar="SOCKET",
            help="Open vSwitch database socket (unix:/run/openvswitch/db.sock) for guest NICs "
            "on VLANs where this kernel's bridges cannot filter VLANs (qemu driver; "
            "untagged NICs stay on $PODIUM_BRIDGE). The operator runs OVS; the agent only "
            "adds and removes its taps' ports",
        ),
    ] = None,
    ovs_bridge: Annotated[
        str,
        typer.Option(
            envvar="PODIUM_OVS_BRIDGE",
            help="The OVS bridge (datapath_type=netdev, its uplink a trunk) those NICs join "
            "as access ports of their VLAN",
        ),
    ] = "brv",
    router_netns: Annotated[
        str | None,
        typer.Option(
            envvar="PODIUM_ROUTER_NETNS",
            metavar="NAME",
            help="Route between the networks that network rules allow (Network spec.allow), "
            "in this network namespace ('.': the agent's own): it turns IP forwarding on "
            "there, so give a dedicated one on a real host (a lab host's own namespace is "
            "one). Needs the qemu driver with --ovs-db. Unset: this host routes nothing",
        ),
    ] = None,
    replica_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="PODIUM_REPLICA_DIR",
            metavar="DIR",
            help="The other site's storage, mounted on this host: where replica backups "
            "(podium backup create --replica; DR) go (qemu driver). Unset: this host "
            "refuses replica backups",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the host agent: dial the server, hold the host lease, run the guests bound here."""
    from podium.agent import Agent  # noqa: PLC0415
    from podium.client import AgentLink  # noqa: PLC0415
    from podium.drivers import DRIVERS, DriverError  # noqa: PLC0415
    from podium.model import Resources  # noqa: PLC0415

    servers = _server_urls(server_url)
    taints = _parse_taints(taint)
    if driver not in DRIVERS:
        fail(f"unknown driver {driver!r}: expected one of {', '.join(sorted(DRIVERS))}")
    try:
        token = token_file.read_text().strip()
    except OSError as err:
        fail(
            f"cannot read --token-file {token_file}: {err.strerror}; "
            "create one with 'podium host token create'"
        )
    ca_path = ca_file or token_file.with_name("ca.pem")
    ca_pem = ca_path.read_text() if ca_path.exists() else None
    if ca_pem is None and any(url.startswith("https://") for url in servers):
        fail(
            f"no CA certificate at {ca_path}: pass --ca-file "
            "(podium host token create --output DIR writes one)"
        )
    capacity = Resources(cpu, memory_mib, iops, net_mbps)
    name = name or socket.gethostname()
    setup_logging(log_level)
    logging.getLogger("podium.cli").info(
        "agent %s: podium server%s %s%s",
        name,
        "s" if len(servers) > 1 else "",
        ", ".join(servers),
        " (fails over in this order)" if len(servers) > 1 else "",
    )
    if migration_address is None:
        migration_address = _address_towards(servers[0])

    if ovs_db:  # the qemu driver's factory reads them, as it reads $PODIUM_BRIDGE
        os.environ["PODIUM_OVS_DB"] = ovs_db
        os.environ["PODIUM_OVS_BRIDGE"] = ovs_bridge
    if replica_dir is not None:  # the qemu driver's factory reads it, as it reads $PODIUM_BRIDGE
        os.environ["PODIUM_REPLICA_DIR"] = str(replica_dir)
    try:
        drv = DRIVERS[driver](name=name, capacity=capacity, data_dir=data_dir)
    except (DriverError, OSError) as err:
        fail(f"cannot set up the {driver} driver: {err}")

    router = _router(drv, name, router_netns) if router_netns is not None else None

    async def body() -> None:
        link = AgentLink(servers, token, ca_pem)
        node = Agent(
            name,
            link,
            drv,
            capacity=capacity,
            labels=_parse_labels(label),
            taints=taints,
            on_host_token=lambda t: write_secret(token_file, t + "\n"),
            migration_address=migration_address,
            traffic_interval=traffic_interval,
            usage_interval=usage_interval,
            router=router,
        )
        task = asyncio.create_task(node.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        stop_mirror = _start_fence_keeper(node, drv)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            stop_mirror.set()
        await link.close()
        close = getattr(drv, "close", None)  # qemu: drop QMP connections, guests keep running
        if close is not None:
            await close()

    asyncio.run(body())
