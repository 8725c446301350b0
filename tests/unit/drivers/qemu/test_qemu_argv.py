"""From a guest config to QEMU's command line: identity, memory floor, NICs, disks."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import GuestConfig
from podium.drivers.qemu import MIN_MEMORY_MIB, QemuError, derived_mac, guest_uuid
from podium.drivers.qemu._argv import first_ip, kernel_cmdline, layout, qemu_argv, ready_line

UID = "0b5e7a3c-1111-4222-8333-444455556666"


def cfg(spec: dict[str, Any] | None = None, name: str = "web-1", uid: str = UID) -> GuestConfig:
    return GuestConfig(name, uid, 3, spec or {"request": {"cpu": 1.5, "memory_mib": 128}})


def argv_of(
    config: GuestConfig, *, network: bool = False, accel: str = "tcg", incoming: bool = False
) -> list[str]:
    guest = layout(config, with_network=network)
    taps = [f"tap{i}" for i in range(len(guest.nics))]
    return qemu_argv(
        guest,
        qemu="qemu-system-x86_64",
        accel=accel,
        kernel=Path("/img/vmlinuz"),
        initrd=Path("/img/initrd.gz"),
        volume=Path("/san/web-1.qcow2"),
        taps=taps,
        incoming=incoming,
    )


def value(argv: list[str], flag: str) -> list[str]:
    return [b for a, b in itertools.pairwise(argv) if a == flag]


def test_every_qemu_carries_name_and_uuid_and_no_default_devices() -> None:
    argv = argv_of(cfg())
    assert value(argv, "-name") == ["web-1"]
    assert value(argv, "-uuid") == [UID]
    assert value(argv, "-accel") == ["tcg"]
    assert value(argv, "-nic") == ["none"]
    assert {"-nodefaults", "-nographic", "-no-reboot"} <= set(argv)
    assert value(argv, "-smp") == ["2"]  # 1.5 CPUs: two vCPUs
    # appended to, so the driver can add a note after a migration without QEMU's writes
    # landing on top of it
    assert value(argv, "-chardev") == [
        "socket,id=console,path=serial.sock,server=on,wait=off,logfile=console.log,logappend=on"
    ]
    assert value(argv, "-serial") == ["chardev:console"]
    assert value(argv, "-qmp") == [
        "unix:qmp.sock,server=on,wait=off",  # the driver's
        "unix:observe.sock,server=on,wait=off",  # operators' and checkers'
    ]
    assert '"filename":"/san/web-1.qcow2"' in value(argv, "-blockdev")[0]
    assert '"node-name":"disk0"' in value(argv, "-blockdev")[0]  # what backups address


def test_only_a_migration_destination_waits_with_its_vcpus_stopped() -> None:
    assert "-S" not in argv_of(cfg()) and "-incoming" not in argv_of(cfg())
    argv = argv_of(cfg(), incoming=True)
    assert "-S" in argv
    assert value(argv, "-incoming") == ["defer"]  # migrate-incoming picks the address later


def test_the_disk_writer_workload_is_a_kernel_parameter() -> None:
    idle = kernel_cmdline(layout(cfg(), with_network=False))
    assert "podium.workload" not in idle
    spec = {"request": {"cpu": 1, "memory_mib": 128}, "workload": "disk-writer"}
    line = kernel_cmdline(layout(cfg(spec), with_network=False))
    assert line.split()[-1] == "podium.workload=disk-writer"


def test_restore_from_names_the_backup_the_volume_is_made_from() -> None:
    spec = {"restore_from": {"backup": "b1", "path": "/backups/web-1/b1.qcow2"}}
    assert layout(cfg(spec), with_network=False).restore_from == Path("/backups/web-1/b1.qcow2")
    assert layout(cfg(), with_network=False).restore_from is None


def test_the_first_ip_is_that_of_the_nic_with_the_smallest_mac() -> None:
    spec = {
        "nics": [
            {"mac": "52:54:00:00:00:09", "ip": "10.0.1.5/24"},
            {"mac": "52:54:00:00:00:05"},
            {"mac": "52:54:00:00:00:07", "ip": "10.0.0.5/24"},
        ]
    }
    assert first_ip(layout(cfg(spec), with_network=True)) == "10.0.0.5"
    assert first_ip(layout(cfg(spec), with_network=False)) == "none"
    # what a guest that arrived by migration shows, as its init printed it elsewhere
    assert ready_line(layout(cfg(spec), with_network=True)) == (
        "PODIUM-READY name=web-1 ip=10.0.0.5 disks=vda"
    )


def test_memory_has_a_floor_the_kernel_can_boot_in() -> None:
    small = layout(cfg({"request": {"cpu": 1, "memory_mib": 32}}), with_network=False)
    assert small.memory_mib == MIN_MEMORY_MIB
    assert layout(cfg(), with_network=False).memory_mib == 128


def test_uuid_is_the_uid_or_derived_from_it() -> None:
    assert guest_uuid(UID) == UID
    derived = guest_uuid("u1")
    assert uuid.UUID(derived) and derived == guest_uuid("u1") != guest_uuid("u2")


def test_derived_macs_are_stable_local_unicast_and_distinct_per_nic() -> None:
    mac = derived_mac(UID, 0)
    assert mac == derived_mac(UID, 0) != derived_mac(UID, 1)
    assert mac.startswith("52:54:00:")
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast


def test_nics_become_taps_only_with_a_network() -> None:
    spec = {"nics": [{"mac": "52:54:00:00:00:09", "ip": "10.0.0.5/24", "gw": "10.0.0.1"}, {}]}
    assert layout(cfg(spec), with_network=False).nics == ()
    argv = argv_of(cfg(spec), network=True)
    assert "-nic" not in argv
    assert value(argv, "-netdev") == [
        "tap,id=net0,ifname=tap0,script=no,downscript=no",
        "tap,id=net1,ifname=tap1,script=no,downscript=no",
    ]
    devices = value(argv, "-device")
    assert "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:00:00:09,romfile=" in devices
    assert f"virtio-net-pci,netdev=net1,id=nic1,mac={derived_mac(UID, 1)},romfile=" in devices


def test_a_nic_on_a_userspace_switch_does_not_offload_checksums() -> None:
    spec = {"nics": [{"mac": "52:54:00:00:00:09"}, {"mac": "52:54:00:00:00:0a", "vlan": 100}]}
    guest = layout(cfg(spec), with_network=True)
    argv = qemu_argv(
        guest,
        qemu="qemu-system-x86_64",
        accel="tcg",
        kernel=Path("/img/vmlinuz"),
        initrd=Path("/img/initrd.gz"),
        volume=Path("/san/web-1.qcow2"),
        taps=["tap0", "tap1"],
        checksum_offload=[True, False],
    )
    nics = [d for d in value(argv, "-device") if d.startswith("virtio-net-pci")]
    assert nics == [
        "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:00:00:09,romfile=",
        "virtio-net-pci,netdev=net1,id=nic1,mac=52:54:00:00:00:0a,romfile=,csum=off,guest_csum=off",
    ]
    with pytest.raises(QemuError, match="one flag per NIC"):
        qemu_argv(
            guest,
            qemu="q",
            accel="tcg",
            kernel=Path("/k"),
            initrd=Path("/i"),
            volume=Path("/v"),
            taps=["tap0", "tap1"],
            checksum_offload=[False],
        )


def test_a_guest_without_nics_in_its_spec_gets_one_nic_on_a_network() -> None:
    nics = layout(cfg(), with_network=True).nics
    assert [n.mac for n in nics] == [derived_mac(UID, 0)] and nics[0].ip is None


def test_kernel_cmdline_numbers_addresses_in_mac_order() -> None:
    spec = {
        "nics": [
            {"mac": "52:54:00:00:00:09", "ip": "10.0.1.5/24"},
            {"mac": "52:54:00:00:00:01", "ip": "10.0.0.5/24", "gw": "10.0.0.1"},
        ]
    }
    line = kernel_cmdline(layout(cfg(spec), with_network=True))
    assert line.split() == [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "podium.name=web-1",
        "podium.ip=10.0.0.5/24",  # the smaller MAC is NIC 0 inside the guest
        "podium.ip1=10.0.1.5/24",
        "podium.gw=10.0.0.1",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nics": [{"mac": "zz:54:00:00:00:01"}]}, "is not a MAC"),
        ({"nics": [{"ip": "10.0.0.5"}]}, "needs a prefix"),
        ({"nics": [{"ip": "10.0.0.500/24"}]}, "expected ip ADDR/PREFIX"),
        ({"nics": [{"mac": "52:54:00:00:00:01"}, {"mac": "52:54:00:00:00:01"}]}, "share a MAC"),
        ({"nics": "eth0"}, "must be a list"),
        ({"disk_gib": 0}, "out of range"),
        ({"image": "ubuntu"}, "unknown image 'ubuntu'"),
        ({"workload": "miner"}, "unknown workload 'miner'"),
        ({"restore_from": {"backup": "b1"}}, "restore_from needs"),
        ({"restore_from": {"backup": "b1", "path": "rel.qcow2"}}, "restore_from needs"),
        ({"restore_from": "b1"}, "restore_from needs"),
    ],
)
def test_a_bad_spec_is_refused_with_the_field_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(QemuError, match=message):
        layout(cfg(spec), with_network=True)


def test_names_that_would_break_paths_or_options_are_refused() -> None:
    for name in ("", "../x", "a,b", ".hidden"):
        with pytest.raises(QemuError, match="guest name"):
            layout(cfg(name=name), with_network=False)


def test_taps_must_match_nics() -> None:
    guest = layout(cfg(), with_network=True)
    with pytest.raises(QemuError, match="1 NIC"):
        qemu_argv(
            guest,
            qemu="q",
            accel="tcg",
            kernel=Path("k"),
            initrd=Path("i"),
            volume=Path("v"),
            taps=[],
        )


def test_an_iops_limit_puts_a_throttle_filter_between_the_device_and_the_root_node() -> None:
    spec = {"request": {"cpu": 1, "memory_mib": 128}, "qos": {"iops": {"limit": 50.0}}}
    argv = argv_of(cfg(spec))
    assert value(argv, "-object") == [
        '{"qom-type":"throttle-group","id":"disk0-tg","limits":{"iops-total":50}}'
    ]
    root, throttle = value(argv, "-blockdev")
    assert '"node-name":"disk0"' in root  # backups and bitmaps address it: never throttled
    assert throttle == (
        '{"driver":"throttle","node-name":"disk0-throttle","throttle-group":"disk0-tg",'
        '"file":"disk0"}'
    )
    assert value(argv, "-device")[0].startswith("virtio-blk-pci,drive=disk0-throttle,")
    # a migration destination is built by the same code: the same throttle
    assert value(argv_of(cfg(spec), incoming=True), "-blockdev") == [root, throttle]


def test_without_an_iops_limit_the_device_uses_the_root_node_directly() -> None:
    spec = {"request": {"cpu": 1, "memory_mib": 128}, "qos": {"cpu": {"limit": 2.0}}}
    argv = argv_of(cfg(spec))
    assert value(argv, "-object") == []
    assert len(value(argv, "-blockdev")) == 1
    assert value(argv, "-device")[0].startswith("virtio-blk-pci,drive=disk0,")


@pytest.mark.parametrize(("limit", "iops"), [(50.0, 50), (99.9, 99), (0.5, 1)])
def test_an_iops_limit_rounds_down_to_whole_operations(limit: float, iops: int) -> None:
    spec = {"request": {"cpu": 1, "memory_mib": 128}, "qos": {"iops": {"limit": limit}}}
    assert layout(cfg(spec), with_network=False).iops_limit == iops
