"""Namespaces, bridges, veth pairs and addresses: the pieces a lab fabric is made of.

::

    create_namespace("pdm-lab-h1")            lo up, IPv6 off (no autoconf chatter)
    ensure_bridge("pdm-lab-h1", "br0")        a Linux bridge, up
    ensure_veth("pdm-lab-h1", "up0",          a veth pair across two namespaces, each end
                peer_netns="pdm-lab-fab",     enslaved to a bridge and up
                peer="up-h1", master="br0", peer_master="fab0")
    ensure_address("pdm-lab-h1", "br0", "10.213.0.17/16")
    links(ns) / delete_link(ns, name) / set_link_up(ns, name, up) / delete_namespace(ns)

Every function is synchronous and idempotent (ensure_* leave what already matches
alone; delete_* of something missing does nothing) and raises :class:`NetworkError`
naming the namespace and interface. ``netns`` None means this process's namespace.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from podium.drivers.net._netlink import describe, in_netns, netlink, netns_path
from podium.drivers.net._protocol import NetworkError

IFNAMSIZ = 15  # usable characters of an interface name


@dataclass(frozen=True, slots=True)
class Link:
    """One network interface as netlink reports it."""

    name: str
    index: int
    kind: str | None  # "bridge", "veth", "tun" (taps), None for loopback and physical
    master: str | None  # the bridge it is enslaved to
    up: bool  # administratively up
    mac: str
    alias: str | None  # ``ip link set ... alias``: who made it, for what
    rx_packets: int
    tx_packets: int


def check_ifname(name: str) -> None:
    """Raise :class:`NetworkError` unless ``name`` is a valid interface name."""
    if not name or len(name) > IFNAMSIZ or any(c in name for c in "/: \t\n") or name in (".", ".."):
        raise NetworkError(
            f"bad interface name {name!r}: 1 to {IFNAMSIZ} characters, no '/', ':' or spaces"
        )


# -- namespaces -------------------------------------------------------------------------


def list_namespaces(prefix: str = "") -> list[str]:
    """Names of the ``ip netns`` namespaces starting with ``prefix``, sorted."""
    return sorted(n for n in pr_netns.listnetns() if n.startswith(prefix))


def namespace_exists(name: str) -> bool:
    return netns_path(name).exists()


def _sysctl_ipv6_off() -> None:
    for scope in ("all", "default"):
        path = Path(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6")
        if path.exists():
            path.write_text("1\n")


def create_namespace(name: str) -> None:
    """Ensure namespace ``name`` exists, with ``lo`` up and IPv6 off."""
    if any(c in name for c in "/\0") or name in ("", ".", ".."):
        raise NetworkError(f"bad network namespace name {name!r}")
    if not namespace_exists(name):
        try:
            pr_netns.create(name)
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise NetworkError(
                    f"cannot create network namespace {name}: {describe(err)}"
                ) from err
    in_netns(name, _sysctl_ipv6_off, f"turning IPv6 off in {name}")
    set_link_up(name, "lo", True)


def delete_namespace(name: str) -> bool:
    """Remove namespace ``name`` (its interfaces go with it). False if it was not there."""
    if not namespace_exists(name):
        return False
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise NetworkError(f"cannot remove network namespace {name}: {describe(err)}") from err
    return True


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (like ``ip netns pids``), sorted."""
    try:
        return sorted(pr_netns.ns_pids().get(name, []))
    except OSError as err:
        raise NetworkError(f"cannot list the processes of {name}: {describe(err)}") from err


# -- links ------------------------------------------------------------------------------


def _link(msg: Any, names: dict[int, str]) -> Link:
    stats = msg.get("stats64") or msg.get("stats") or {}
    master = msg.get("master")
    return Link(
        name=msg.get("ifname"),
        index=msg["index"],
        kind=msg.get(("linkinfo", "kind")),
        master=names.get(master) if master else None,
        up=bool(msg["flags"] & 1),
        mac=msg.get("address") or "",
        alias=msg.get("ifalias"),
        rx_packets=int(stats.get("rx_packets", 0)),
        tx_packets=int(stats.get("tx_packets", 0)),
    )


def dump_links(ipr: Any) -> list[Link]:
    """The links an open ``IPRoute`` sees (for callers already inside :func:`netlink`)."""
    msgs = list(ipr.link("dump"))
    names = {m["index"]: m.get("ifname") for m in msgs}
    return [_link(m, names) for m in msgs]


def links(netns: str | None) -> list[Link]:
    """Every interface of ``netns``."""
    return netlink(netns, dump_links, "listing interfaces")


def find_link(ipr: Any, name: str) -> int | None:
    """The index of interface ``name``, or None."""
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def set_link_up(netns: str | None, name: str, up: bool) -> None:
    """Set ``name`` administratively up or down (cutting a veth cuts its path)."""

    def body(ipr: Any) -> None:
        index = find_link(ipr, name)
        if index is None:
            raise NetworkError(f"interface {name} does not exist")
        ipr.link("set", index=index, state="up" if up else "down")

    netlink(netns, body, f"setting {name} {'up' if up else 'down'}")


def delete_link(netns: str | None, name: str) -> bool:
    """Delete interface ``name`` (a veth takes its peer along). False if it was not there."""

    def body(ipr: Any) -> bool:
        index = find_link(ipr, name)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return False  # gone meanwhile
            raise
        return True

    return netlink(netns, body, f"deleting {name}")


def _enslave_and_up(ipr: Any, index: int, master: str | None, what: str) -> None:
    if master is not None:
        master_index = find_link(ipr, master)
        if master_index is None:
            raise NetworkError(f"{what}: bridge {master} does not exist")
        ipr.link("set", index=index, master=master_index)
    ipr.link("set", index=index, state="up")


def ensure_bridge(netns: str | None, name: str, *, mac: str | None = None) -> None:
    """Ensure a Linux bridge ``name`` exists and is up (``mac`` fixes its address)."""
    check_ifname(name)
    what = f"creating bridge {name}"

    def body(ipr: Any) -> None:
        index = find_link(ipr, name)
        if index is None:
            ipr.link("add", ifname=name, kind="bridge")
            index = find_link(ipr, name)
            if index is None:
                raise NetworkError(f"{what}: the bridge vanished right after it was made")
        else:
            msg = ipr.link("get", index=index)[0]
            if msg.get(("linkinfo", "kind")) != "bridge":
                raise NetworkError(f"{what}: {name} exists and is not a bridge")
        if mac is not None:
            ipr.link("set", index=index, address=mac)
        ipr.link("set", index=index, state="up")

    netlink(netns, body, what)


def ensure_veth(
    netns: str,
    name: str,
    *,
    peer_netns: str,
    peer: str,
    master: str | None = None,
    peer_master: str | None = None,
) -> None:
    """Ensure veth ``name`` in ``netns`` pairs with ``peer`` in ``peer_netns``; both up.

    Each end is enslaved to its bridge when given. An existing ``name`` that is not a
    veth is an error; an existing pair is left as it is (then enslaved and set up).
    """
    check_ifname(name)
    check_ifname(peer)
    what = f"creating veth {name} ({netns}) <-> {peer} ({peer_netns})"

    def near(ipr: Any) -> None:
        index = find_link(ipr, name)
        if index is None:
            ipr.link(
                "add",
                ifname=name,
                kind="veth",
                peer={"ifname": peer, "net_ns_fd": peer_netns},
            )
            index = find_link(ipr, name)
            if index is None:
                raise NetworkError(f"{what}: {name} vanished right after it was made")
        elif ipr.link("get", index=index)[0].get(("linkinfo", "kind")) != "veth":
            raise NetworkError(f"{what}: {name} exists and is not a veth")
        _enslave_and_up(ipr, index, master, what)

    def far(ipr: Any) -> None:
        index = find_link(ipr, peer)
        if index is None:
            raise NetworkError(f"{what}: {peer} is missing (delete {name} and retry)")
        _enslave_and_up(ipr, index, peer_master, what)

    netlink(netns, near, what)
    netlink(peer_netns, far, what)


def ensure_address(netns: str | None, ifname: str, cidr: str) -> None:
    """Ensure ``ifname`` carries address ``cidr`` (e.g. ``10.213.0.17/16``)."""
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as err:
        raise NetworkError(f"bad address {cidr!r}: expected ADDRESS/PREFIX") from err
    what = f"adding {cidr} to {ifname}"

    def body(ipr: Any) -> None:
        index = find_link(ipr, ifname)
        if index is None:
            raise NetworkError(f"{what}: interface {ifname} does not exist")
        for msg in ipr.addr("dump", index=index):
            if msg.get("address") == str(iface.ip) and msg["prefixlen"] == iface.network.prefixlen:
                return
        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    netlink(netns, body, what)
