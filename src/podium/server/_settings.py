"""Server settings and the server's one exception."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


class ServerError(Exception):
    """The server cannot start or had to stop; ``str()`` is one line saying what to do.

    The CLI prints it as ``error: <message>`` and exits 1.
    """


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
    """

    store_url: str
    listen: str = "127.0.0.1:7443"
    data_dir: Path = Path("/var/lib/podium")
    host_ttl: int = 10
    insecure: bool = False
    sans: tuple[str, ...] = field(default_factory=tuple)
    leader_ttl: int = 10
    controllers: bool = True
    identity: str | None = None
    store_timeout: float = 5.0
    heartbeat: float = 10.0
    shutdown_timeout: float = 5.0
    extra_listen: tuple[str, ...] = field(default_factory=tuple)


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
