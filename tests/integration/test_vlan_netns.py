"""VLANs on real switches, in namespaces: Linux bridges that filter VLANs (where the kernel
can: no package adds CONFIG_BRIDGE_VLAN_FILTERING, so elsewhere a skip, also in CI), and
the Open vSwitch userspace switch (``ovs_lab``, below; a missing OVS fails in CI).

Linux bridges: two "hosts" (namespaces, each with a br0) joined by a trunk
veth, five "guests" (namespaces with one veth each) on them.

::

    guest a100 (VLAN 100) ─┐                          ┌─ guest b100 (VLAN 100)
    guest a1 (untagged)   ─┴ br0 ══ trunk veth ══ br0 ┼─ guest b200 (VLAN 200)
          host A                          host B      └─ guest b1 (untagged)

Every guest has an address in one subnet, so only the VLANs keep them apart: the two on
VLAN 100 talk across the trunk, VLAN 200 reaches neither, and the untagged pair still
talks after the bridges turned VLAN filtering on. The guests' ports are veths (a tap
carries no traffic without a QEMU behind it), set up by the same ``set_port_vlan`` that
``LinuxBridgeNetwork.attach`` uses; a real tap is attached too, and its VLANs read back.
Everything is made in namespaces of this test and removed with them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from podium.drivers.net import (
    HostSwitch,
    LinuxBridgeNetwork,
    OvsNetwork,
    PortVlan,
    create_namespace,
    delete_namespace,
    ensure_bridge,
    ensure_veth,
    kernel_filters_vlans,
    links,
)
from podium.drivers.net._bridge import set_port_vlan
from podium.drivers.net._fabric import find_link
from podium.drivers.net._netlink import netlink
from podium.lab._ovs import db_socket, make_vlan_bridge, ovs_available, start_ovs
from podium.lab._procs import Proc, wait_gone
from tests.integration.lab.conftest import netns_run, ping, ping_within, require_netns
from tests.support.components import missing_component

GUESTS = {  # name: (host, VLAN, address)
    "a100": ("a", 100, "10.88.0.1/24"),
    "a1": ("a", None, "10.88.0.2/24"),
    "b100": ("b", 100, "10.88.0.3/24"),
    "b200": ("b", 200, "10.88.0.4/24"),
    "b1": ("b", None, "10.88.0.5/24"),
}


@dataclass(frozen=True)
class Lab:
    hosts: dict[str, str]  # "a"/"b" -> namespace
    guests: dict[str, str]  # guest -> namespace

    def ip(self, guest: str) -> str:
        return GUESTS[guest][2].split("/")[0]


def _vlan(host_ns: str, port: str, vlan: int | None) -> None:
    def body(ipr: Any) -> None:
        index = find_link(ipr, port)
        assert index is not None, port
        set_port_vlan(ipr, "br0", index, vlan, f"port {port} to VLAN {vlan}")

    netlink(host_ns, body, f"setting the VLAN of {port}")


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_netns()
    if not kernel_filters_vlans():
        # No package installs a kernel option: a skip, also in CI (OVS covers this kernel).
        pytest.skip("this kernel lacks CONFIG_BRIDGE_VLAN_FILTERING (the OVS tests below run)")
    tag = secrets.token_hex(2)
    hosts = {h: f"pdv{tag}-h{h}" for h in ("a", "b")}
    guests = {g: f"pdv{tag}-{g}" for g in GUESTS}
    made: list[str] = []
    try:
        for ns in (*hosts.values(), *guests.values()):
            create_namespace(ns)
            made.append(ns)
        for ns in hosts.values():
            ensure_bridge(ns, "br0")
        # the trunk: each end an ordinary (non-tap) port of its host's bridge
        ensure_veth(
            hosts["a"], "trunk", peer_netns=hosts["b"], peer="trunk", master="br0",
            peer_master="br0",
        )  # fmt: skip
        for guest, (host, _, address) in GUESTS.items():
            ensure_veth(hosts[host], f"p-{guest}", peer_netns=guests[guest], peer="eth0",
                        master="br0")  # fmt: skip
            for line in (f"ip addr add {address} dev eth0", "ip link set eth0 up"):
                assert netns_run(guests[guest], *line.split()).returncode == 0, line
        for guest, (host, vlan, _) in GUESTS.items():
            _vlan(hosts[host], f"p-{guest}", vlan)
        yield Lab(hosts, guests)
    finally:
        for ns in made:
            delete_namespace(ns)


def reaches(lab: Lab, source: str, target: str) -> bool:
    return ping(lab.guests[source], lab.ip(target), count=2).returncode == 0


def test_one_vlan_on_two_hosts_is_one_segment_and_other_vlans_stay_apart(lab: Lab) -> None:
    assert reaches(lab, "a100", "b100")  # VLAN 100 across the trunk
    assert reaches(lab, "a1", "b1")  # untagged guests still talk with filtering on
    assert not reaches(lab, "b200", "b100")  # same host, VLAN 200
    assert not reaches(lab, "b200", "a100")  # across the trunk, VLAN 200
    assert not reaches(lab, "a1", "a100")  # untagged (VLAN 1) is a VLAN of its own
    assert not reaches(lab, "b1", "b200")


def test_the_trunk_carries_guest_vlans_tagged_and_the_default_untagged(lab: Lab) -> None:
    switch = LinuxBridgeNetwork("br0", netns=lab.hosts["b"])
    vlans = switch.vlans()
    assert sorted(vlans["trunk"], key=lambda v: v.vid) == [
        PortVlan(1, pvid=True, untagged=True),
        PortVlan(100),
        PortVlan(200),
    ]
    assert vlans["p-b200"] == [PortVlan(200, pvid=True, untagged=True)]
    assert vlans["p-b1"] == [PortVlan(1, pvid=True, untagged=True)]


def test_attach_puts_a_tap_in_its_vlan_and_moves_it(lab: Lab) -> None:
    switch = LinuxBridgeNetwork("br0", netns=lab.hosts["a"])
    tap = switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=300)
    assert switch.vlans()[tap] == [PortVlan(300, pvid=True, untagged=True)]
    assert PortVlan(300) in switch.vlans()["trunk"]
    assert switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=301) == tap
    assert switch.vlans()[tap] == [PortVlan(301, pvid=True, untagged=True)]
    switch.attach("db-1", 0, "02:00:0a:00:00:01")  # no VLAN: back to the default
    assert switch.vlans()[tap] == [PortVlan(1, pvid=True, untagged=True)]
    assert next(link for link in links(lab.hosts["a"]) if link.name == tap).up
    switch.detach(tap)
    assert tap not in switch.vlans()


# -- Open vSwitch (userspace datapath): the VLAN switch where bridges cannot filter ------
#
#     guest a100 (tag 100) ─ brv ═╗                 ╔═ brv ─┬ guest b100 (tag 100)
#     guest a1 (untagged)  ─ br0 ─╫── fab0 (fabric) ─╫       └ guest b200 (tag 200)
#                        host A   ╚ upv0 trunks upv0 ╝  host B
#
# As a lab host: br0 and brv both reach the fabric, VLANs live on brv, and br0 drops
# tagged frames from its taps (HostSwitch's nftables guard). One subnet for all guests.

OVS_GUESTS = {  # name: (host, VLAN, address); a1's host-side veth has a tap's name
    "a100": ("a", 100, "10.89.0.1/24"),
    "a1": ("a", None, "10.89.0.2/24"),
    "b100": ("b", 100, "10.89.0.3/24"),
    "b200": ("b", 200, "10.89.0.4/24"),
}
A1_PORT = "pd0000a1a1-0"


@dataclass(frozen=True)
class OvsLab:
    hosts: dict[str, str]  # "a"/"b" -> namespace
    guests: dict[str, str]
    switches: dict[str, OvsNetwork]  # "a"/"b" -> its brv

    def ip(self, guest: str) -> str:
        return OVS_GUESTS[guest][2].split("/")[0]


def _guest_ns(ns: str, address: str) -> None:
    for line in (f"ip addr add {address} dev eth0", "ip link set eth0 up"):
        assert netns_run(ns, *line.split()).returncode == 0, line


@pytest.fixture
def ovs_lab(tmp_path: Path) -> Iterator[OvsLab]:
    require_netns()
    if not ovs_available():
        missing_component("Open vSwitch is not installed (apt-get install openvswitch-switch)")
    ip = shutil.which("ip")
    assert ip is not None
    tag = secrets.token_hex(2)
    fab = f"pdo{tag}-fab"
    hosts = {h: f"pdo{tag}-h{h}" for h in ("a", "b")}
    guests = {g: f"pdo{tag}-{g}" for g in OVS_GUESTS}
    made: list[str] = []
    daemons: list[Proc] = []
    try:
        for ns in (fab, *hosts.values(), *guests.values()):
            create_namespace(ns)
            made.append(ns)
        ensure_bridge(fab, "fab0")
        switches = {}
        for h, ns in hosts.items():
            home = tmp_path / h
            daemons += start_ovs(ip, ns, home, lambda _: None, f"OVS of host {h}")
            ensure_veth(ns, "upv0", peer_netns=fab, peer=f"upv-{h}", peer_master="fab0")
            make_vlan_bridge(home, "brv", "upv0")
            switches[h] = OvsNetwork("brv", db=db_socket(home), netns=ns)
            ensure_bridge(ns, "br0")
            ensure_veth(ns, "up0", peer_netns=fab, peer=f"up-{h}", master="br0",
                        peer_master="fab0")  # fmt: skip
        for guest, (h, vlan, address) in OVS_GUESTS.items():
            port = A1_PORT if vlan is None else f"p-{guest}"
            ensure_veth(hosts[h], port, peer_netns=guests[guest], peer="eth0",
                        master="br0" if vlan is None else None)  # fmt: skip
            if vlan is not None:
                switches[h].vsctl("add-port", "brv", port, "--", "set", "port", port,
                                  f"tag={vlan}", "vlan_mode=access")  # fmt: skip
            _guest_ns(guests[guest], address)
        yield OvsLab(hosts, guests, switches)
    finally:
        for proc in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        assert not wait_gone(daemons, 10), "OVS daemons survived SIGTERM"
        for ns in made:
            delete_namespace(ns)


def ovs_reaches(lab: OvsLab, source: str, target: str) -> bool:
    return ping_within(lab.guests[source], lab.ip(target), seconds=4)


def test_ovs_one_vlan_on_two_hosts_is_one_segment_and_other_vlans_stay_apart(
    ovs_lab: OvsLab,
) -> None:
    assert ovs_reaches(ovs_lab, "a100", "b100")  # VLAN 100 across the trunks and fab0
    assert ping(ovs_lab.guests["b200"], ovs_lab.ip("b100"), count=2).returncode != 0
    assert ping(ovs_lab.guests["b200"], ovs_lab.ip("a100"), count=2).returncode != 0
    assert ping(ovs_lab.guests["a1"], ovs_lab.ip("a100"), count=2).returncode != 0
    assert ovs_lab.switches["b"].port_tags() == {"upv0": None, "p-b100": 100, "p-b200": 200}


SEND_TAGGED = """
import socket, sys
src, vlan, sender, target = bytes.fromhex(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
arp = (bytes.fromhex("0001080006040001") + src + socket.inet_aton(sender)
       + bytes(6) + socket.inet_aton(target))
frame = b"\\xff" * 6 + src + b"\\x81\\x00" + vlan.to_bytes(2, "big") + b"\\x08\\x06" + arp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    s.send(frame)
"""


def _hop(lab: OvsLab) -> bool:
    """a1 (untagged, on br0) sends ARP requests tagged VLAN 100 for b100's address:
    whether b100 heard them (it then knows a1's address as a neighbour)."""
    b100, a1 = lab.guests["b100"], lab.guests["a1"]
    netns_run(b100, "ip", "neigh", "flush", "all")
    mac = netns_run(a1, "cat", "/sys/class/net/eth0/address").stdout.strip().replace(":", "")
    sent = netns_run(a1, sys.executable, "-c", SEND_TAGGED, mac, "100", lab.ip("a1"),
                     lab.ip("b100"))  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    time.sleep(0.5)
    return lab.ip("a1") in netns_run(b100, "ip", "neigh", "show").stdout


def test_a_guest_on_br0_cannot_hop_into_a_vlan_once_the_switch_guards_br0(
    ovs_lab: OvsLab,
) -> None:
    assert _hop(ovs_lab)  # the control: without the guard the tagged frames get through
    switch = HostSwitch(
        LinuxBridgeNetwork("br0", netns=ovs_lab.hosts["a"]),
        ovs_lab.switches["a"],
        filters=lambda: False,
    )
    tap = switch.attach("web-1", 0, "52:54:00:00:00:01")  # untagged: br0, guard made
    assert not _hop(ovs_lab)
    assert ovs_reaches(ovs_lab, "a100", "b100")  # VLAN traffic itself still flows
    switch.detach(tap)


def test_the_host_switch_puts_vlan_taps_on_ovs_and_moves_them(ovs_lab: OvsLab) -> None:
    ns = ovs_lab.hosts["a"]
    ovs = ovs_lab.switches["a"]
    switch = HostSwitch(LinuxBridgeNetwork("br0", netns=ns), ovs, filters=lambda: False)
    tap = switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=300)
    assert ovs.port_tags()[tap] == 300 and ovs.taps() == [tap]
    assert not switch.checksum_offload(300) and switch.checksum_offload(None)
    link = next(link for link in links(ns) if link.name == tap)
    assert link.up and link.master is None and link.kind == "tun"
    assert switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=301) == tap  # re-tagged
    assert ovs.port_tags()[tap] == 301
    assert switch.attach("db-1", 0, "02:00:0a:00:00:01") == tap  # untagged: off OVS, on br0
    assert tap not in ovs.port_tags()
    assert next(link for link in links(ns) if link.name == tap).master == "br0"
    assert switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=302) == tap  # and back
    assert next(link for link in links(ns) if link.name == tap).master is None
    assert switch.taps() == [A1_PORT, tap] or switch.taps() == [tap]
    switch.detach(tap)
    assert tap not in ovs.port_tags()
    assert tap not in {link.name for link in links(ns)}
