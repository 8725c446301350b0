"""A profile's identity inside a real guest: its MACs and its LUNs' WWNs, as the guest
reads them from sysfs through its serial shell.

One tiny guest with two NICs on two VLANs (taps on a bridge in a namespace of this test,
QEMU run inside it as in ``test_qemu_network``), one HBA with two LUNs and a boot order.
Where this kernel's bridge cannot filter VLANs (``CONFIG_BRIDGE_VLAN_FILTERING``), the
taps are attached untagged and the VLANs the driver asked for are checked instead; the
VLANs themselves are tested in ``tests/integration/test_vlan_netns.py``.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from podium.drivers import DriverGuestState, GuestConfig, MigrationError
from podium.drivers.net import HostNetwork, LinuxBridgeNetwork, PortVlan
from podium.drivers.net._fabric import find_link
from podium.drivers.net._netlink import netlink
from podium.drivers.qemu import QemuDriver
from tests.support.components import missing_component
from tests.support.guest_shell import guest_run
from tests.support.identity import HBA

pytestmark = pytest.mark.slow

NICS = [
    {"mac": "02:00:0a:00:00:11", "ip": "10.10.0.10/24", "vlan": 100, "network": "front"},
    {"mac": "02:00:0a:00:00:12", "ip": "10.20.0.10/24", "vlan": 200, "network": "back"},
]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("ip") is None:
        missing_component("needs iproute2 (scripts/setup installs it)")
    name = f"pdi-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "br0", "type", "bridge")
        ip("-n", name, "link", "set", "br0", "up")
        yield name
    finally:
        ip("netns", "del", name)


def filters_vlans(netns: str) -> bool:
    """Whether the bridge in ``netns`` can filter VLANs (turns it on if it can)."""

    def body(ipr: Any) -> bool:
        try:
            ipr.link("set", index=find_link(ipr, "br0"), kind="bridge", br_vlan_filtering=1)
        except NetlinkError:
            return False
        return True

    return netlink(netns, body, "probing VLAN filtering")


@dataclass
class Untagged:
    """The switch without VLANs (this kernel cannot filter them): records what was asked."""

    network: LinuxBridgeNetwork
    asked: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return self.network.bridge

    @property
    def netns(self) -> str | None:
        return self.network.netns

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        self.asked.append((index, vlan))
        return self.network.attach(guest, index, mac)

    def detach(self, tap: str) -> None:
        self.network.detach(tap)

    def taps(self) -> list[str]:
        return self.network.taps()


def sysfs(folder: Path, command: str) -> list[str]:
    rc, out = guest_run(folder, command, timeout=60)
    assert rc == 0, out
    # (the shell's prompt may share a line with the first answer)
    return re.findall(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}|naa\.[0-9a-f]+", out)


async def test_the_guest_reads_its_macs_and_lun_wwns_from_sysfs(
    make_driver: Callable[..., QemuDriver], netns: str, tmp_path: Path
) -> None:
    wrapper = tmp_path / "qemu-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    switch = LinuxBridgeNetwork("br0", netns=netns)
    vlan_capable = filters_vlans(netns)
    network: HostNetwork = switch if vlan_capable else Untagged(switch)
    driver = make_driver(network=network, qemu=str(wrapper))
    spec = {
        "request": {"cpu": 1, "memory_mib": 128},
        "nics": NICS,
        "hbas": [HBA],
        "boot": ["disk", "network"],
    }
    await driver.create(GuestConfig("db-1", "u-db-1", 1, spec))
    try:
        info = await driver.start("db-1")
        assert info.state is DriverGuestState.RUNNING
        folder = tmp_path / "h1" / "db-1"
        macs = sysfs(folder, "for d in /sys/class/net/eth*; do cat $d/address; done")
        assert sorted(macs) == [n["mac"] for n in NICS]
        # SCSI scanning is asynchronous: wait (bounded) for both LUNs' disks
        wait = "n=0; while [ $(ls -d /sys/block/sd* 2>/dev/null | wc -l) -lt 2 ] && "
        wait += "[ $n -lt 100 ]; do usleep 100000; n=$((n + 1)); done; "
        wwids = sysfs(folder, wait + "for d in /sys/block/sd*; do cat $d/device/wwid; done")
        assert sorted(wwids) == ["naa.5001438000000002", "naa.5001438000000003"]
        rc, serials = guest_run(folder, "cat /sys/block/sd*/device/vpd_pg80 | tr -cd 'a-z-'")
        assert rc == 0 and "pd-db-data" in serials and "pd-db-logs" in serials, serials
        if vlan_capable:
            vlans = switch.vlans()
            taps = sorted(switch.taps())  # pd<hash>-0, pd<hash>-1: NIC order
            assert [vlans[t] for t in taps] == [
                [PortVlan(100, pvid=True, untagged=True)],
                [PortVlan(200, pvid=True, untagged=True)],
            ]
        else:
            assert isinstance(network, Untagged) and network.asked == [(0, 100), (1, 200)]
        await driver.stop("db-1", timeout=10)
        await driver.destroy("db-1", volumes=True)
        # the LUN volumes belong to the profile: a guest's stop and destroy keep them
        volumes = tmp_path / "volumes"
        assert (volumes / "db" / "data.qcow2").is_file()
        assert (volumes / "db" / "logs.qcow2").is_file()
    finally:
        driver.kill_all()
        await driver.close()


async def test_the_luns_go_with_a_live_migration(
    make_driver: Callable[..., QemuDriver], tmp_path: Path
) -> None:
    """The destination's QEMU has the same HBA and LUNs (over the same shared volumes),
    or QEMU would refuse the migration stream; the guest still reads the same WWIDs."""
    a = make_driver(name="a", state_dir=tmp_path / "a")
    b = make_driver(name="b", state_dir=tmp_path / "b")
    spec = {"request": {"cpu": 1, "memory_mib": 128}, "hbas": [HBA], "boot": ["disk"]}
    try:
        await a.create(GuestConfig("db-1", "u-db-1", 1, spec))
        await a.start("db-1")
        uri = await b.prepare_incoming(GuestConfig("db-1", "u-db-1", 2, spec), listen="127.0.0.1")
        await a.migrate_out("db-1", uri)
        assert (await b.activate("db-1")).state is DriverGuestState.RUNNING
        wait = "n=0; while [ $(ls -d /sys/block/sd* 2>/dev/null | wc -l) -lt 2 ] && "
        wait += "[ $n -lt 100 ]; do usleep 100000; n=$((n + 1)); done; "
        wwids = sysfs(tmp_path / "b" / "db-1", wait + "cat /sys/block/sd*/device/wwid")
        assert sorted(wwids) == ["naa.5001438000000002", "naa.5001438000000003"]
        await b.stop("db-1", timeout=10)
    finally:
        a.kill_all()
        b.kill_all()
        await a.close()
        await b.close()


async def test_a_destination_without_the_lun_volumes_refuses_before_qemu_starts(
    make_driver: Callable[..., QemuDriver], tmp_path: Path
) -> None:
    b = make_driver(name="b", state_dir=tmp_path / "b")
    spec = {"request": {"cpu": 1, "memory_mib": 128}, "hbas": [HBA]}
    (tmp_path / "volumes").mkdir(parents=True)
    (tmp_path / "volumes" / "db-1-u-db-1.qcow2").write_bytes(b"")  # the root volume only
    try:
        with pytest.raises(MigrationError, match=r"LUN volume\(s\) .*db/data.qcow2"):
            await b.prepare_incoming(GuestConfig("db-1", "u-db-1", 2, spec), listen="127.0.0.1")
        assert not (tmp_path / "volumes" / "db").exists()  # nothing made in their place
    finally:
        b.kill_all()
        await b.close()
