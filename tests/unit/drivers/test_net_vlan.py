"""VLANs on the host switch, over a fake netlink: access and trunk plans, the calls made."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from podium.drivers.net import NetworkError, PortVlan
from podium.drivers.net._bridge import (
    access_plan,
    check_vlan,
    port_vlans,
    set_port_vlan,
    trunk_plan,
)

BR, TAP, OTHER_TAP, UPLINK = 1, 7, 8, 9
NAMES = {BR: "br0", TAP: "pd3fa9c2e1-0", OTHER_TAP: "pd3fa9c2e1-1", UPLINK: "up0"}
DEFAULT = PortVlan(1, pvid=True, untagged=True)  # what the kernel gives every new port


def message(index: int, vlans: list[PortVlan], master: int | None = None) -> ifinfmsg:
    """An AF_BRIDGE dump message as the kernel sends it (encoded, then decoded)."""
    msg = ifinfmsg()
    msg["family"] = 7
    msg["index"] = index
    attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", NAMES[index])]
    if master is not None:
        attrs.append(("IFLA_MASTER", master))
    if vlans:
        infos = [("IFLA_BRIDGE_VLAN_INFO", {"flags": v.flags, "vid": v.vid}) for v in vlans]
        attrs.append(("IFLA_AF_SPEC", {"attrs": infos}))
    msg["attrs"] = attrs
    msg.encode()
    decoded = ifinfmsg(msg.data)
    decoded.decode()
    return decoded


@dataclass
class Link:
    index: int
    master: int | None
    data: dict[str, Any] = field(default_factory=dict)

    def get(self, key: Any) -> Any:
        if key == ("linkinfo", "kind"):
            return "bridge" if self.index == BR else "tun" if self.index != UPLINK else "veth"
        if key == ("linkinfo", "data", "br_vlan_filtering"):
            return self.data.get("filtering", 0)
        return {"ifname": NAMES[self.index], "master": self.master}.get(key)

    def __getitem__(self, key: str) -> Any:
        return {"index": self.index, "flags": 1}[key]


@dataclass
class FakeIpr:
    """A bridge br0 with two taps and an uplink; VLAN tables per port, like the kernel's."""

    filtering: bool = False
    supports_filtering: bool = True
    vlans: dict[int, list[PortVlan]] = field(
        default_factory=lambda: {i: [DEFAULT] for i in (BR, TAP, OTHER_TAP, UPLINK)}
    )
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def link_lookup(self, *, ifname: str) -> list[int]:
        return [i for i, n in NAMES.items() if n == ifname]

    def link(self, command: str, **kw: Any) -> list[Link]:
        if command == "get":
            return [Link(kw["index"], None, {"filtering": int(self.filtering)})]
        if command == "dump":
            return [Link(i, None if i == BR else BR) for i in NAMES]
        if command == "set" and "br_vlan_filtering" in kw:
            if not self.supports_filtering:
                raise NetlinkError(errno.EOPNOTSUPP)
            self.calls.append(("filtering", kw["br_vlan_filtering"]))
            self.filtering = bool(kw["br_vlan_filtering"])
        return []

    def get_vlans(self) -> list[ifinfmsg]:
        return [message(i, v, None if i == BR else BR) for i, v in self.vlans.items()]

    def vlan_filter(self, command: str, *, index: int, vlan_info: dict[str, int]) -> None:
        vid, flags = vlan_info["vid"], vlan_info.get("flags", 0)
        self.calls.append((command, NAMES[index], vid, flags))
        table = [v for v in self.vlans[index] if v.vid != vid]
        if command == "add":
            if flags & 0x2:  # a new PVID replaces the old one
                table = [PortVlan(v.vid, False, v.untagged) for v in table]
            table.append(PortVlan(vid, bool(flags & 0x2), bool(flags & 0x4)))
        self.vlans[index] = table


def test_an_access_port_moves_its_pvid_first_then_drops_other_vlans() -> None:
    assert access_plan([DEFAULT], 100) == ([PortVlan(100, True, True)], [1])
    assert access_plan([PortVlan(100, True, True)], 100) == ([], [])
    assert access_plan([PortVlan(100, False, False), PortVlan(1)], 100) == (
        [PortVlan(100, True, True)],
        [1],
    )
    assert access_plan([PortVlan(200, True, True)], 1) == ([DEFAULT], [200])


def test_a_trunk_gains_the_vlan_tagged_and_keeps_its_default_untagged() -> None:
    assert trunk_plan([DEFAULT], 100) == [PortVlan(100)]
    assert trunk_plan([DEFAULT, PortVlan(100)], 100) == []
    assert trunk_plan([DEFAULT], 1) == []  # VLAN 1 stays untagged on the uplink


def test_port_vlans_reads_the_kernels_flags() -> None:
    msg = message(TAP, [PortVlan(100, True, True), PortVlan(200)])
    assert port_vlans(msg) == [PortVlan(100, True, True), PortVlan(200, False, False)]
    assert port_vlans(message(TAP, [])) == []  # a bridge that does not filter


def test_a_vlan_turns_filtering_on_makes_the_tap_an_access_port_and_the_uplink_a_trunk() -> None:
    ipr = FakeIpr()
    set_port_vlan(ipr, "br0", TAP, 100, "test")
    assert ipr.calls == [
        ("filtering", 1),
        ("add", "pd3fa9c2e1-0", 100, 0x6),  # PVID + untagged first: never without a VLAN
        ("del", "pd3fa9c2e1-0", 1, 0),
        ("add", "up0", 100, 0),  # the uplink carries it tagged; other taps untouched
    ]
    assert ipr.vlans[TAP] == [PortVlan(100, True, True)]
    assert ipr.vlans[UPLINK] == [DEFAULT, PortVlan(100)]
    assert ipr.vlans[OTHER_TAP] == [DEFAULT]  # an untagged guest stays in VLAN 1
    ipr.calls.clear()
    set_port_vlan(ipr, "br0", TAP, 100, "test")  # idempotent: nothing to do
    assert ipr.calls == []


def test_a_tap_moves_between_vlans_and_back_to_the_default() -> None:
    ipr = FakeIpr()
    set_port_vlan(ipr, "br0", TAP, 100, "test")
    set_port_vlan(ipr, "br0", TAP, 200, "test")
    assert ipr.vlans[TAP] == [PortVlan(200, True, True)]
    assert ipr.vlans[UPLINK] == [DEFAULT, PortVlan(100), PortVlan(200)]
    set_port_vlan(ipr, "br0", TAP, None, "test")  # the bridge filters now: back to VLAN 1
    assert ipr.vlans[TAP] == [DEFAULT]


def test_without_a_vlan_a_bridge_that_does_not_filter_is_left_alone() -> None:
    ipr = FakeIpr(supports_filtering=False)
    set_port_vlan(ipr, "br0", TAP, None, "test")
    assert ipr.calls == [] and not ipr.filtering


def test_a_vlan_where_the_kernel_cannot_filter_is_an_error_never_an_untagged_tap() -> None:
    ipr = FakeIpr(supports_filtering=False)
    with pytest.raises(NetworkError, match="CONFIG_BRIDGE_VLAN_FILTERING"):
        set_port_vlan(ipr, "br0", TAP, 100, "attaching")
    assert ipr.vlans[TAP] == [DEFAULT]


@pytest.mark.parametrize("vlan", [0, 4095, -1, True, "100"])
def test_bad_vlan_ids_are_refused(vlan: Any) -> None:
    with pytest.raises(NetworkError, match="bad VLAN"):
        check_vlan(vlan)
