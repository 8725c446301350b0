"""The Linux bridge host switch: guest taps on ``br0`` (a :class:`HostNetwork`).

::

    QEMU -netdev tap,ifname=pd3fa9c2e1-0,script=no,downscript=no
               │ opens the persistent tap
    pd3fa9c2e1-0 (tun/tap, MAC fe:xx:.., alias "podium guest web-1 nic 0") ──master──> br0

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
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podium.drivers.net._fabric import IFNAMSIZ, dump_links, find_link
from podium.drivers.net._netlink import netlink
from podium.drivers.net._protocol import NetworkError

TAP_PREFIX = "pd"
TAP_KIND = "tun"  # how netlink reports tun/tap devices
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TAP = re.compile(rf"^{TAP_PREFIX}[0-9a-f]{{8}}-[0-9]+$")


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

    def attach(self, guest: str, index: int, mac: str) -> str:
        name = tap_name(guest, index)
        local = tap_mac(mac)
        alias = f"podium guest {guest} nic {index}"[:200]  # IFLA_IFALIAS holds 255 bytes
        what = f"attaching tap {name} (guest {guest} NIC {index}) to {self._bridge}"

        def body(ipr: Any) -> str:
            bridge = find_link(ipr, self._bridge)
            if bridge is None:
                raise NetworkError(
                    f"{what}: host switch {self._bridge} does not exist here "
                    "(podium lab up makes one per host; on a real host create the bridge first)"
                )
            index_ = find_link(ipr, name)
            if index_ is None:
                ipr.link("add", ifname=name, kind="tuntap", mode="tap")
                index_ = find_link(ipr, name)
                if index_ is None:
                    raise NetworkError(f"{what}: the tap vanished right after it was made")
            else:
                kind = ipr.link("get", index=index_)[0].get(("linkinfo", "kind"))
                if kind != TAP_KIND:
                    raise NetworkError(f"{what}: {name} exists and is a {kind}, not a tap")
            ipr.link("set", index=index_, address=local, ifalias=alias)
            ipr.link("set", index=index_, master=bridge, state="up")
            return name

        return netlink(self._netns, body, what)

    def detach(self, tap: str) -> None:
        what = f"detaching tap {tap}"
        if not is_tap_name(tap):
            raise NetworkError(f"{what}: not a podium tap name (expected like pd3fa9c2e1-0)")

        def body(ipr: Any) -> None:
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

        netlink(self._netns, body, what)

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
