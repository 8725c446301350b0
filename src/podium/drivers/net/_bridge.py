"""The Linux bridge host switch: guest taps on ``br0`` (a :class:`HostNetwork`).

::

    QEMU -netdev tap,ifname=pd3fa9c2e1-0,script=no,downscript=no
               │ opens the persistent tap
    pd3fa9c2e1-0 (tun/tap, MAC fe:xx:.., alias "podium guest web-1 nic 0") ──master──> br0

VLANs: a NIC with a VLAN makes the bridge filter VLANs (``vlan_filtering 1``); its tap
is then an *access* port (an untagged PVID member of that VLAN alone), and every port of
the bridge that is not a podium tap (the uplink to the fabric, a physical NIC) a *trunk*
that carries the VLAN tagged, so one VLAN on two hosts is one segment. Untagged NICs
stay in the bridge's default VLAN 1 (each port's PVID since it was enslaved), before
and after filtering is turned on::

    tap pd..-0 (VLAN 100 PVID untagged) ─┐                ┌─ tagged 100, 200; 1 untagged
    tap pd..-1 (VLAN 200 PVID untagged) ─┼─ br0 (filter) ─┴─ up0 (trunk) ── fabric
    tap pd..-2 (VLAN 1 PVID untagged)   ─┘

Vocabulary: a *tap name* is ``pd`` + 8 hex digits of SHA-256(guest) + ``-`` + NIC index,
so it fits IFNAMSIZ, never depends on the order guests arrive in, and an agent that
restarts finds its taps again. The tap's own MAC is the guest's with the first octet
``fe`` (a local, high address, so it never becomes the bridge's address, and never
equals the guest's).
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podium.drivers.net._fabric import IFNAMSIZ, Link, dump_links, find_link
from podium.drivers.net._netlink import netlink
from podium.drivers.net._protocol import NetworkError

TAP_PREFIX = "pd"
TAP_KIND = "tun"  # how netlink reports tun/tap devices
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TAP = re.compile(rf"^{TAP_PREFIX}[0-9a-f]{{8}}-[0-9]+$")
DEFAULT_VLAN = 1  # the bridge's default_pvid: every port's untagged VLAN unless told
MAX_VLAN = 4094
PVID, UNTAGGED = 0x2, 0x4  # BRIDGE_VLAN_INFO_* flags (include/uapi/linux/if_bridge.h)


@dataclass(frozen=True, slots=True)
class PortVlan:
    """One VLAN of a bridge port, as ``bridge vlan show`` lists it."""

    vid: int
    pvid: bool = False  # untagged frames arriving on the port join this VLAN
    untagged: bool = False  # frames of this VLAN leave the port untagged

    @property
    def flags(self) -> int:
        return (PVID if self.pvid else 0) | (UNTAGGED if self.untagged else 0)


def check_vlan(vlan: int | None) -> None:
    """Raise :class:`NetworkError` unless ``vlan`` is None or an id in 1..4094."""
    if vlan is not None and (
        isinstance(vlan, bool) or not isinstance(vlan, int) or not 1 <= vlan <= MAX_VLAN
    ):
        raise NetworkError(f"bad VLAN {vlan!r}: expected an id in 1..{MAX_VLAN}")


def access_plan(current: Iterable[PortVlan], vlan: int) -> tuple[list[PortVlan], list[int]]:
    """What makes a port an untagged PVID member of ``vlan`` alone: the entries to add
    (first: the PVID moves) and the VLAN ids to delete (then)."""
    have = list(current)
    want = PortVlan(vlan, pvid=True, untagged=True)
    add = [] if want in have else [want]
    return add, sorted({v.vid for v in have if v.vid != vlan})


def trunk_plan(current: Iterable[PortVlan], vlan: int) -> list[PortVlan]:
    """What makes a trunk carry ``vlan`` tagged. A VLAN it has already is left as it is
    (its default VLAN 1 stays untagged: untagged guests and management traffic)."""
    return [] if any(v.vid == vlan for v in current) else [PortVlan(vlan)]


def trunk_ports(links: Iterable[Link], bridge: str) -> list[Link]:
    """The bridge's ports that are not podium taps: uplinks, which carry every VLAN."""
    return [link for link in links if link.master == bridge and not is_tap_name(link.name)]


def port_vlans(msg: Any) -> list[PortVlan]:
    """The VLANs of one port in an ``AF_BRIDGE`` dump with ``RTEXT_FILTER_BRVLAN``."""
    spec = msg.get_attr("IFLA_AF_SPEC")
    if spec is None:
        return []
    return [
        PortVlan(int(info["vid"]), bool(info["flags"] & PVID), bool(info["flags"] & UNTAGGED))
        for info in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO")
    ]


def _vlan_filtering(ipr: Any, bridge: int) -> bool:
    return bool(ipr.link("get", index=bridge)[0].get(("linkinfo", "data", "br_vlan_filtering")))


def _add_vlan(ipr: Any, port: int, vlan: PortVlan) -> None:
    ipr.vlan_filter("add", index=port, vlan_info={"vid": vlan.vid, "flags": vlan.flags})


def set_port_vlan(ipr: Any, bridge: str, port: int, vlan: int | None, what: str) -> None:
    """Make bridge port ``port`` an access port of ``vlan`` (see the module docstring).

    None on a bridge that does not filter VLANs changes nothing (the port keeps the
    default, as before VLANs); None on a filtering bridge puts the port back in VLAN 1.
    A VLAN turns filtering on and adds the VLAN, tagged, to every trunk port.
    """
    check_vlan(vlan)
    bridge_index = find_link(ipr, bridge)
    if bridge_index is None:
        raise NetworkError(f"{what}: bridge {bridge} does not exist")
    filtering = _vlan_filtering(ipr, bridge_index)
    if vlan is None and not filtering:
        return
    if not filtering:
        try:
            ipr.link("set", index=bridge_index, kind="bridge", br_vlan_filtering=1)
        except NetlinkError as err:
            if err.code != errno.EOPNOTSUPP:
                raise
            raise NetworkError(
                f"{what}: bridge {bridge} cannot filter VLANs on this kernel (it needs "
                f"CONFIG_BRIDGE_VLAN_FILTERING); a NIC on VLAN {vlan} cannot be isolated here"
            ) from err
    vlans = {m["index"]: port_vlans(m) for m in ipr.get_vlans()}
    add, delete = access_plan(vlans.get(port, []), vlan or DEFAULT_VLAN)
    for entry in add:
        _add_vlan(ipr, port, entry)
    for vid in delete:
        ipr.vlan_filter("del", index=port, vlan_info={"vid": vid})
    if vlan is not None:
        for trunk in trunk_ports(dump_links(ipr), bridge):
            for entry in trunk_plan(vlans.get(trunk.index, []), vlan):
                _add_vlan(ipr, trunk.index, entry)


def tap_name(guest: str, index: int) -> str:
    """The tap of NIC ``index`` of ``guest`` (stable, at most 15 characters)."""
    if not guest:
        raise NetworkError("a tap needs a guest name")
    if not 0 <= index <= 9999:
        raise NetworkError(f"NIC index {index} of guest {guest}: expected 0..9999")
    digest = hashlib.sha256(guest.encode()).hexdigest()[:8]
    name = f"{TAP_PREFIX}{digest}-{index}"
    assert len(name) <= IFNAMSIZ
    return name


def is_tap_name(name: str) -> bool:
    """Whether ``name`` has the shape of a tap this module makes."""
    return bool(_TAP.match(name))


def tap_mac(guest_mac: str) -> str:
    """The tap's own address for a guest NIC's MAC. Raises :class:`NetworkError`."""
    mac = guest_mac.lower()
    if not _MAC.match(mac):
        raise NetworkError(
            f"bad MAC {guest_mac!r}: expected six hex octets, e.g. 52:54:00:12:34:56"
        )
    if int(mac[:2], 16) & 1:
        raise NetworkError(f"bad MAC {guest_mac}: a multicast address cannot be a guest NIC's")
    return "fe" + mac[2:]


def check_tap_name(tap: str, what: str) -> None:
    """Raise :class:`NetworkError` unless ``tap`` is a podium tap's name."""
    if not is_tap_name(tap):
        raise NetworkError(f"{what}: not a podium tap name (expected like pd3fa9c2e1-0)")


def ensure_tap(ipr: Any, name: str, local_mac: str, *, guest: str, nic: int, what: str) -> int:
    """Make persistent tap ``name`` (or find it), give it ``local_mac`` and an alias naming
    the guest's NIC; return its index. It stays down and where it is enslaved (the
    caller puts it on its switch, then up). Raises :class:`NetworkError`."""
    index = find_link(ipr, name)
    if index is None:
        ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        index = find_link(ipr, name)
        if index is None:
            raise NetworkError(f"{what}: the tap vanished right after it was made")
    else:
        kind = ipr.link("get", index=index)[0].get(("linkinfo", "kind"))
        if kind != TAP_KIND:
            raise NetworkError(f"{what}: {name} exists and is a {kind}, not a tap")
    alias = f"podium guest {guest} nic {nic}"[:200]  # IFLA_IFALIAS holds 255 bytes
    ipr.link("set", index=index, address=local_mac, ifalias=alias)
    return index


def delete_tap(ipr: Any, tap: str, what: str) -> None:
    """Delete tap ``tap``; a missing one is fine, a link of another kind is an error."""
    index = find_link(ipr, tap)
    if index is None:
        return
    kind = ipr.link("get", index=index)[0].get(("linkinfo", "kind"))
    if kind != TAP_KIND:
        raise NetworkError(f"{what}: {tap} is a {kind}, not a tap; left alone")
    try:
        ipr.link("del", index=index)
    except NetlinkError as err:
        if err.code != errno.ENODEV:  # ENODEV: gone meanwhile
            raise


PROBE_BRIDGE = "pdvlanprobe"  # a throwaway bridge: the probe never touches a real one


def kernel_filters_vlans(netns: str | None = None) -> bool:
    """Whether this kernel's bridges can filter VLANs (CONFIG_BRIDGE_VLAN_FILTERING):
    makes a bridge with ``vlan_filtering 1`` in ``netns`` and removes it again."""

    def body(ipr: Any) -> bool:
        stale = find_link(ipr, PROBE_BRIDGE)
        if stale is not None:
            ipr.link("del", index=stale)
        try:
            ipr.link("add", ifname=PROBE_BRIDGE, kind="bridge", br_vlan_filtering=1)
        except NetlinkError as err:
            if err.code != errno.EOPNOTSUPP:
                raise
            return False
        made = find_link(ipr, PROBE_BRIDGE)
        if made is not None:
            ipr.link("del", index=made)
        return True

    return netlink(netns, body, "probing whether bridges can filter VLANs")


class LinuxBridgeNetwork:
    """Taps on a Linux bridge in a network namespace (default: the caller's own).

    Safe to call from any thread, including one running an asyncio loop (it then
    blocks that loop for the few milliseconds netlink takes).
    """

    def __init__(self, bridge: str = "br0", *, netns: str | None = None) -> None:
        self._bridge = bridge
        self._netns = netns

    @property
    def bridge(self) -> str:
        return self._bridge

    @property
    def netns(self) -> str | None:
        return self._netns

    def __repr__(self) -> str:
        where = f" in {self._netns}" if self._netns else ""
        return f"LinuxBridgeNetwork({self._bridge!r}{where})"

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        name = tap_name(guest, index)
        local = tap_mac(mac)
        check_vlan(vlan)
        what = f"attaching tap {name} (guest {guest} NIC {index}) to {self._bridge}"

        def body(ipr: Any) -> str:
            bridge = find_link(ipr, self._bridge)
            if bridge is None:
                raise NetworkError(
                    f"{what}: host switch {self._bridge} does not exist here "
                    "(podium lab up makes one per host; on a real host create the bridge first)"
                )
            index_ = ensure_tap(ipr, name, local, guest=guest, nic=index, what=what)
            ipr.link("set", index=index_, master=bridge)
            # its VLAN before it is up: no frame of the guest's ever enters another VLAN
            set_port_vlan(ipr, self._bridge, index_, vlan, what)
            ipr.link("set", index=index_, state="up")
            return name

        return netlink(self._netns, body, what)

    def detach(self, tap: str) -> None:
        what = f"detaching tap {tap}"
        check_tap_name(tap, what)

        netlink(self._netns, lambda ipr: delete_tap(ipr, tap, what), what)

    def taps(self) -> list[str]:
        """Taps with podium's names in this namespace, on this bridge or orphaned."""

        def body(ipr: Any) -> list[str]:
            return sorted(
                link.name
                for link in dump_links(ipr)
                if link.kind == TAP_KIND
                and is_tap_name(link.name)
                and link.master in (None, self._bridge)
            )

        return netlink(self._netns, body, f"listing the taps of {self._bridge}")

    def vlans(self) -> dict[str, list[PortVlan]]:
        """Each port of this bridge (and the bridge itself) with its VLANs; empty lists
        where the bridge does not filter VLANs."""

        def body(ipr: Any) -> dict[str, list[PortVlan]]:
            links = dump_links(ipr)
            names = {link.index: link.name for link in links}
            ours = {link.index for link in links if self._bridge in (link.name, link.master)}
            return {names[m["index"]]: port_vlans(m) for m in ipr.get_vlans() if m["index"] in ours}

        return netlink(self._netns, body, f"listing the VLANs of {self._bridge}")
