"""A profile's identity on QEMU's command line: NIC VLANs, HBAs with WWNs, boot order."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import GuestConfig, MigrationError
from podium.drivers.qemu import QemuError
from podium.drivers.qemu._argv import boot_indexes, layout, qemu_argv
from podium.drivers.qemu._hba import (
    ensure_volumes,
    missing_volumes,
    prepare_volumes,
    volume_path,
    wwn_hex,
)

WWPN, WWNN = "50:01:43:80:00:00:00:00", "50:01:43:80:00:00:00:01"
OTHER, NODE = "2a:00:00:00:00:00:00:01", "2a:00:00:00:00:00:00:02"  # NAA 2
HBA = {
    "wwpn": WWPN,
    "wwnn": WWNN,
    "luns": [
        {
            "lun": 0,
            "volume": "db/data",
            "wwn": "50:01:43:80:00:00:00:02",
            "serial": "pd-db-data",
            "size_gib": 1,
        },
        {
            "lun": 1,
            "volume": "db/logs",
            "wwn": "50:01:43:80:00:00:00:03",
            "serial": "pd-db-logs",
            "size_gib": 2,
        },
    ],
}
NICS = [
    {"mac": "02:00:0a:00:00:01", "ip": "10.10.0.10/24", "gw": "10.10.0.1", "vlan": 100},
    {"mac": "02:00:0a:00:00:02", "network": "back", "vlan": 200},
]


def cfg(**spec: Any) -> GuestConfig:
    return GuestConfig("db-1", "u-db-1", 1, {"request": {"cpu": 1, "memory_mib": 128}, **spec})


def argv_of(config: GuestConfig, *, incoming: bool = False) -> list[str]:
    guest = layout(config, with_network=True)
    return qemu_argv(
        guest,
        qemu="qemu-system-x86_64",
        accel="tcg",
        kernel=Path("/img/vmlinuz"),
        initrd=Path("/img/initrd.gz"),
        volume=Path("/san/db-1-u.qcow2"),
        taps=[f"tap{i}" for i in range(len(guest.nics))],
        incoming=incoming,
    )


def values(argv: list[str], flag: str) -> list[str]:
    return [b for a, b in itertools.pairwise(argv) if a == flag]


def test_nics_keep_their_vlans_and_a_nic_without_one_has_none() -> None:
    nics = layout(cfg(nics=[*NICS, {"mac": "02:00:0a:00:00:03"}]), with_network=True).nics
    assert [n.vlan for n in nics] == [100, 200, None]
    assert [n.mac for n in nics] == ["02:00:0a:00:00:01", "02:00:0a:00:00:02", "02:00:0a:00:00:03"]


def test_each_hba_is_a_virtio_scsi_controller_and_each_lun_a_scsi_hd_with_its_wwns() -> None:
    argv = argv_of(cfg(nics=NICS, hbas=[HBA]))
    devices = values(argv, "-device")
    assert "virtio-scsi-pci,id=hba0" in devices
    assert (
        "scsi-hd,bus=hba0.0,channel=0,scsi-id=0,lun=0,drive=hba0-lun0,id=hba0-lun0-dev,"
        "wwn=0x5001438000000002,port_wwn=0x5001438000000000,serial=pd-db-data"
    ) in devices
    assert (
        "scsi-hd,bus=hba0.0,channel=0,scsi-id=0,lun=1,drive=hba0-lun1,id=hba0-lun1-dev,"
        "wwn=0x5001438000000003,port_wwn=0x5001438000000000,serial=pd-db-logs"
    ) in devices
    # the controller comes before its disks (QEMU resolves bus= in order)
    assert devices.index("virtio-scsi-pci,id=hba0") < next(
        i for i, d in enumerate(devices) if d.startswith("scsi-hd")
    )
    nodes = [json.loads(b) for b in values(argv, "-blockdev")]
    luns = {n["node-name"]: n for n in nodes if n["node-name"].startswith("hba")}
    assert luns == {
        "hba0-lun0": {
            "driver": "qcow2",
            "node-name": "hba0-lun0",
            "file": {"driver": "file", "filename": "/san/db/data.qcow2"},
        },
        "hba0-lun1": {
            "driver": "qcow2",
            "node-name": "hba0-lun1",
            "file": {"driver": "file", "filename": "/san/db/logs.qcow2"},
        },
    }


def test_two_hbas_get_two_controllers_and_their_own_port_wwns() -> None:
    second = {
        "wwpn": "50:01:43:80:00:00:00:10",
        "wwnn": "50:01:43:80:00:00:00:11",
        "luns": [{"lun": 0, "volume": "db/arch", "wwn": "50:01:43:80:00:00:00:12", "serial": "a"}],
    }
    devices = values(argv_of(cfg(hbas=[HBA, second])), "-device")
    assert [d for d in devices if d.startswith("virtio-scsi-pci")] == [
        "virtio-scsi-pci,id=hba0",
        "virtio-scsi-pci,id=hba1",
    ]
    assert any(
        d.startswith("scsi-hd,bus=hba1.0,") and "port_wwn=0x5001438000000010" in d for d in devices
    )


def test_a_migration_destination_carries_the_same_devices() -> None:
    config = cfg(nics=NICS, hbas=[HBA], boot=["disk", "network"])
    source, destination = argv_of(config), argv_of(config, incoming=True)
    assert values(destination, "-device") == values(source, "-device")
    assert values(destination, "-blockdev") == values(source, "-blockdev")
    assert values(destination, "-netdev") == values(source, "-netdev")


def test_the_lun_volumes_follow_the_given_volume_storage() -> None:
    guest = layout(cfg(hbas=[HBA]), with_network=False)
    argv = qemu_argv(
        guest,
        qemu="q",
        accel="tcg",
        kernel=Path("/k"),
        initrd=Path("/i"),
        volume=Path("/local/root.qcow2"),
        volumes_dir=Path("/shared"),
    )
    assert '"filename":"/shared/db/data.qcow2"' in " ".join(values(argv, "-blockdev"))


def test_boot_order_becomes_bootindex_on_the_root_disk_and_the_nics() -> None:
    config = cfg(nics=NICS, boot=["disk", "network"])
    devices = values(argv_of(config), "-device")
    assert any(d.startswith("virtio-blk-pci,") and d.endswith(",bootindex=1") for d in devices)
    nics = [d for d in devices if d.startswith("virtio-net-pci")]
    assert [d.rsplit(",", 1)[1] for d in nics] == ["bootindex=2", "bootindex=3"]
    assert boot_indexes(layout(cfg(nics=NICS, boot=["network", "disk"]), with_network=True)) == (
        3,
        [1, 2],
    )
    assert boot_indexes(layout(cfg(nics=NICS, boot=["network"]), with_network=True)) == (
        None,
        [1, 2],
    )
    # without a boot order nothing changes on the command line
    assert not any("bootindex" in d for d in values(argv_of(cfg(nics=NICS)), "-device"))


def lun(**over: Any) -> dict[str, Any]:
    base = {"lun": 0, "volume": "db/data", "wwn": "50:01:43:80:00:00:00:02", "serial": "s"}
    return base | over


def hba(*luns: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"wwpn": WWPN, "wwnn": WWNN, "luns": list(luns)} | over


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nics": [{"vlan": 0}]}, "nics[0].vlan 0 must be a VLAN id in 1..4094"),
        ({"nics": [{"vlan": 4095}]}, "nics[0].vlan 4095"),
        ({"nics": [{"vlan": "100"}]}, "nics[0].vlan '100'"),
        ({"hbas": {"wwpn": WWPN}}, "hbas must be a list"),
        ({"hbas": [hba(wwpn="50:01:43:80:00:00:00")]}, "hbas[0].wwpn '50:01:43:80:00:00:00'"),
        ({"hbas": [hba(wwnn="30:01:43:80:00:00:00:01")]}, "(the NAA) is 1, 2 or 5"),
        ({"hbas": [hba(lun(wwn="zz:01:43:80:00:00:00:02"))]}, "hbas[0].luns[0].wwn"),
        (
            {"hbas": [hba(lun(), lun(volume="db/logs", wwn="50:01:43:80:00:00:00:09"))]},
            "hbas[0].luns[1]: lun 0 is also luns[0]",
        ),
        ({"hbas": [hba(lun(lun=16384))]}, "lun 16384 must be a whole number in 0..16383"),
        ({"hbas": [hba(lun(lun=True))]}, "lun True must be"),
        ({"hbas": [hba(lun(volume="data"))]}, "hbas[0].luns[0].volume 'data' must be PROFILE/NAME"),
        ({"hbas": [hba(lun(volume="db/../etc"))]}, "volume 'db/../etc'"),
        ({"hbas": [hba(lun(volume="../db"))]}, "volume '../db'"),
        ({"hbas": [hba(lun(volume="db/Data"))]}, "volume 'db/Data'"),
        ({"hbas": [hba(lun(serial="a,b"))]}, "serial 'a,b'"),
        ({"hbas": [hba(lun(serial="x" * 37))]}, "1 to 36"),
        ({"hbas": [hba(lun(size_gib=0))]}, "size_gib 0 is out of range"),
        ({"hbas": [hba(lun(size_gib="big"))]}, "size_gib 'big'"),
        ({"hbas": [hba(lun(wwn=WWPN))]}, f"hbas[0].luns[0].wwn: WWN {WWPN} is also hbas[0].wwpn"),
        (
            {"hbas": [hba(lun()), hba(lun(wwn="50:01:43:80:00:00:00:05"), wwpn=OTHER, wwnn=NODE)]},
            "hbas[1].luns[0].volume: volume db/data is also hbas[0].luns[0].volume",
        ),
        ({"boot": ["disk", "cdrom"]}, "boot ['disk', 'cdrom'] must list each of"),
        ({"boot": ["disk", "disk"]}, "boot ['disk', 'disk']"),
        ({"boot": "disk"}, "boot 'disk'"),
    ],
)
def test_a_bad_identity_is_refused_with_the_field_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(QemuError, match="guest 'db-1'") as err:
        layout(cfg(**spec), with_network=True)
    assert message in str(err.value)


def test_wwns_are_accepted_in_any_case_and_written_lowercase() -> None:
    spec = hba(lun(wwn="50:01:43:80:00:00:00:AB"))
    guest = layout(cfg(hbas=[spec]), with_network=False)
    assert guest.hbas[0].luns[0].wwn == "50:01:43:80:00:00:00:ab"
    assert wwn_hex(guest.hbas[0].luns[0].wwn) == "50014380000000ab"


def fake_qemu_img(tmp_path: Path) -> str:
    """A qemu-img that records its calls and makes the file it is asked to create."""
    script = tmp_path / "qemu-img"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ntouch "$5"\n')
    script.chmod(0o755)
    return str(script)


def test_lun_volumes_are_made_once_under_their_profile_and_never_replaced(tmp_path: Path) -> None:
    hbas = layout(cfg(hbas=[HBA]), with_network=False).hbas
    volumes = tmp_path / "volumes"
    qemu_img = fake_qemu_img(tmp_path)
    assert missing_volumes(hbas, volumes) == [volumes / "db/data.qcow2", volumes / "db/logs.qcow2"]
    made = ensure_volumes(hbas, volumes, qemu_img=qemu_img)
    assert made == [volume_path(volumes, "db/data"), volume_path(volumes, "db/logs")]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[-1] for c in calls] == ["1024M", "2048M"]  # size_gib 1 and 2
    assert missing_volumes(hbas, volumes) == []
    assert ensure_volumes(hbas, volumes, qemu_img=qemu_img) == []  # there already: kept
    assert len((tmp_path / "calls").read_text().splitlines()) == 2


def test_a_migration_destination_makes_no_lun_volume_it_does_not_find(tmp_path: Path) -> None:
    hbas = layout(cfg(hbas=[HBA]), with_network=False).hbas
    volumes = tmp_path / "volumes"
    qemu_img = fake_qemu_img(tmp_path)
    with pytest.raises(MigrationError, match=r"db-1: LUN volume\(s\) .*db/data.qcow2"):
        prepare_volumes("db-1", hbas, volumes, incoming=True, qemu_img=qemu_img)
    assert not (tmp_path / "calls").exists()
    prepare_volumes("db-1", hbas, volumes, incoming=False, qemu_img=qemu_img)
    prepare_volumes("db-1", hbas, volumes, incoming=True, qemu_img=qemu_img)  # found now
