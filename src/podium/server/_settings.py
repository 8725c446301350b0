"""Server settings and the server's one exception."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from podium.state import GuestNetwork

SUSPECT_HELP = (
    "Seconds without a host lease renewal after which a live host is shown suspect "
    "(HostSuspect; default: half the host TTL). Suspect is a warning only: guests stay "
    "put and move only once the lease expires (--host-ttl), so a lower value reports "
    "trouble sooner but flags more hosts that merely stalled (GC, I/O, a slow network); "
    "a value at or above --host-ttl is refused."
)


class ServerError(Exception):
    """The server cannot start or had to stop; ``str()`` is one line saying what to do.

    The CLI prints it as ``error: <message>`` and exits 1.
    """


FAILURES_HELP = (
    "Admission keeps room to restart every guest after any K hosts fail: an apply that "
    "would break it is refused (409, saying what is short). 0 disables the check."
)
SPARE_HELP = (
    "A dedicated spare host (repeatable): takes no guests in normal placement; admission "
    "then keeps the guests of any K failed hosts restartable on the spares."
)
REBALANCE_HELP = (
    "Rebalance continuously: every --rebalance-interval s, live-migrate guests off hot "
    "hosts, next to heavy talkers, toward balance, or to free a host (`podium rebalance "
    "--dry-run` shows what a pass would do)."
)
WINDOW_HELP = "Seconds before a guest the rebalancer moved may move again (hysteresis)."
HOT_HELP = "Usage share of capacity (any dimension) above which a host is hot."


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What ``podium server`` is told on its command line.

    ``listen`` is ``HOST:PORT`` (``[::1]:7443`` for IPv6; port 0: any free port).
    ``host_ttl`` is the lease TTL given to agents; ``leader_ttl`` that of the
    controller leadership. ``sans`` are extra names or addresses for the server
    certificate. ``controllers`` False serves the API only (never campaigns).
    ``extra_listen`` are more sockets, each ``NETNS@HOST:PORT``: bound inside the named
    network namespace (``ip netns`` name), e.g. a lab's fabric, for agents that live
    there; their addresses join the certificate's names.
    ``guest_subnet`` (CIDR), ``guest_pool`` (``FIRST-LAST``), ``guest_gateway``: the
    guest network NIC addresses come from (none: guests get MACs only).
    ``host_suspect_after``: seconds without a renewal after which a live host is shown
    ``suspect`` (default ``host_ttl / 2``; see ``--host-suspect-after``).
    ``max_migrations`` (cluster-wide) and ``max_migrations_per_host`` (as source or
    target) cap live migrations in flight; a target that is not ready within
    ``migration_prepare_timeout`` seconds fails its migration.
    ``failures_to_tolerate`` (K) and ``spare_hosts``: admission keeps room to restart
    every guest after any K hosts fail (on the spares, if named); 0 disables it.
    ``rebalance``: run a rebalancing pass every ``rebalance_interval`` s (else only on
    ``podium rebalance``), with the budget (``rebalance_max_concurrent`` in flight,
    ``rebalance_max_per_hour``), hysteresis (``rebalance_window`` s) and hot threshold.
    """

    store_url: str
    listen: str = "127.0.0.1:7443"
    data_dir: Path = Path("/var/lib/podium")
    host_ttl: int = 8
    host_suspect_after: float | None = None
    insecure: bool = False
    sans: tuple[str, ...] = field(default_factory=tuple)
    leader_ttl: int = 10
    controllers: bool = True
    identity: str | None = None
    store_timeout: float = 5.0
    heartbeat: float = 10.0
    shutdown_timeout: float = 5.0
    extra_listen: tuple[str, ...] = field(default_factory=tuple)
    guest_subnet: str | None = None
    guest_pool: str | None = None
    guest_gateway: str | None = None
    max_migrations: int = 2
    max_migrations_per_host: int = 1
    migration_prepare_timeout: float = 60.0
    failures_to_tolerate: int = 1
    spare_hosts: tuple[str, ...] = field(default_factory=tuple)
    rebalance: bool = False
    rebalance_interval: float = 60.0
    rebalance_window: float = 1800.0
    rebalance_max_concurrent: int = 2
    rebalance_max_per_hour: int = 12
    rebalance_hot: float = 0.85


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # the address to bind
    port: int

    @property
    def advertised(self) -> str:
        """The host clients on this machine use: loopback for a wildcard bind."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    def url(self, scheme: str, port: int) -> str:
        host = self.advertised
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def parse_listen(listen: str) -> ListenAddress:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces). Raises :class:`ServerError`."""
    host, sep, port_text = listen.rpartition(":")
    hint = "expected HOST:PORT, e.g. 127.0.0.1:7443 or [::1]:7443 (port 0: any free port)"
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ServerError(f"bad --listen {listen!r}: {hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ServerError(f"bad --listen {listen!r}: put an IPv6 address in brackets; {hint}")
    return ListenAddress(host or "0.0.0.0", int(port_text))


@dataclass(frozen=True, slots=True)
class NetnsListen:
    """A listening address inside a named network namespace (``NETNS@HOST:PORT``)."""

    netns: str
    address: ListenAddress

    def __str__(self) -> str:
        host = self.address.host
        shown = f"[{host}]" if ":" in host else host
        return f"{self.netns}@{shown}:{self.address.port}"


def parse_netns_listen(text: str) -> NetnsListen:
    """``NETNS@HOST:PORT``: an ``ip netns`` name, then as ``--listen``.

    Raises :class:`ServerError`.
    """
    netns, sep, listen = text.partition("@")
    hint = "expected NETNS@HOST:PORT, e.g. pdm-lab-fab@10.213.0.1:7443"
    if not sep or not netns or "/" in netns or netns in (".", ".."):
        raise ServerError(f"bad --listen-netns {text!r}: {hint}")
    try:
        address = parse_listen(listen)
    except ServerError as err:
        raise ServerError(f"bad --listen-netns {text!r}: {hint}") from err
    if address.host in ("0.0.0.0", "::", ""):
        raise ServerError(
            f"bad --listen-netns {text!r}: name the address inside {netns} to listen on; {hint}"
        )
    return NetnsListen(netns, address)


def parse_guest_network(
    subnet: str | None, pool: str | None = None, gateway: str | None = None
) -> GuestNetwork | None:
    """``--guest-subnet`` / ``--guest-pool`` / ``--guest-gateway`` → the guest network.

    ``None`` without a subnet. Raises :class:`ServerError` naming the flag at fault.
    """
    if not subnet:
        if pool or gateway:
            flag = "--guest-pool" if pool else "--guest-gateway"
            raise ServerError(f"{flag} needs --guest-subnet CIDR (the guests' on-link subnet)")
        return None
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as err:
        raise ServerError(
            f"bad --guest-subnet {subnet!r}: {err}; expected a CIDR network, e.g. 10.77.0.0/16"
        ) from err
    if gateway:
        _check_inside("--guest-gateway", gateway, gateway, net)
    if pool:
        first, sep, last = pool.partition("-")
        if not sep:
            raise ServerError(
                f"bad --guest-pool {pool!r}: expected FIRST-LAST, e.g. 10.77.0.10-10.77.0.250"
            )
        for addr in (first.strip(), last.strip()):
            _check_inside("--guest-pool", pool, addr, net)
    try:
        return GuestNetwork.of(subnet, pool, gateway)
    except ValueError as err:  # what is left: a pool whose start is after its end
        raise ServerError(f"bad --guest-pool {pool!r}: {err}") from err


def _check_inside(
    flag: str, value: str, addr: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> None:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ServerError(f"bad {flag} {value!r}: {addr!r} is not an IP address") from None
    if ip not in net:
        raise ServerError(f"bad {flag} {value!r}: {ip} is not inside --guest-subnet {net}")


REBALANCE_FLAGS = (
    "--failures-to-tolerate must be 0 or more; --rebalance-interval, --rebalance-window "
    "and --rebalance-max-* 0 or more (interval above 0); --rebalance-hot in (0, 1]"
)


def check_placement_flags(settings: ServerSettings) -> None:
    """Admission and rebalancing settings in range, or :class:`ServerError` naming them."""
    bad = (
        settings.failures_to_tolerate < 0
        or settings.rebalance_interval <= 0
        or settings.rebalance_window < 0
        or settings.rebalance_max_concurrent < 0
        or settings.rebalance_max_per_hour < 0
        or not 0 < settings.rebalance_hot <= 1
    )
    if bad:
        raise ServerError(f"bad admission or rebalance flags: {REBALANCE_FLAGS}")
    if any(not name.strip() for name in settings.spare_hosts):
        raise ServerError("--spare-host needs a host name (repeat the flag for several)")
