"""Backups that cover every volume of a guest (its root disk and its profile's two LUNs),
shipped to a replica folder (the other site's storage), and a restore at "the other
site" that rebuilds all three volumes.

The guest writes distinct records straight to each raw disk through its serial shell
(``dd`` at a fixed sector, fsync'd); the restored guest, run by another driver over other
state and volume folders, reads them back from all three disks. A local backup taken
between the two replica backups must not break the replica chain (each target has its
own dirty bitmaps).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from podium.drivers import BackupError, BackupRequest, GuestConfig
from podium.drivers.qemu import QemuDriver
from tests.support.guest_shell import guest_run
from tests.support.identity import HBA

pytestmark = pytest.mark.slow

SPEC = {"request": {"cpu": 1, "memory_mib": 128}, "hbas": [HBA]}
# each disk, as the guest finds it: the root by name, the LUNs by their WWN
DISKS = {"root": "vda", "db/data": "5001438000000002", "db/logs": "5001438000000003"}
# (sector written in round 1, sector written in round 2)
SECTORS = (100, 200)


def qemu_img_info(path: str) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", path], capture_output=True, check=True
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


def shell(folder: Path, command: str) -> str:
    rc, out = guest_run(folder, command, timeout=60)
    assert rc == 0, out
    return out


def device(disk: str) -> str:
    """Shell that sets $DEV to the guest's device for ``disk`` (waiting for the LUNs)."""
    if disk == "root":
        return f"DEV=/dev/{DISKS['root']}"
    return (
        'n=0; DEV=; while [ -z "$DEV" ] && [ $n -lt 100 ]; do '
        "for d in /sys/block/sd*; do "
        f'case "$(cat $d/device/wwid 2>/dev/null)" in *{DISKS[disk]}) DEV=/dev/${{d##*/}};; esac; '
        'done; [ -z "$DEV" ] && usleep 100000; n=$((n + 1)); done; [ -n "$DEV" ]'
    )


def write(folder: Path, disk: str, sector: int, text: str) -> None:
    shell(
        folder,
        f"{device(disk)} && printf '%s' '{text}' | "
        f"dd of=$DEV bs=512 seek={sector} count=1 conv=notrunc,sync,fsync 2>/dev/null",
    )


def read(folder: Path, disk: str, sector: int) -> str:
    out = shell(
        folder,
        f'{device(disk)} && echo; echo "<$(dd if=$DEV bs=512 skip={sector} count=1 '
        "2>/dev/null | tr -d '\\000')>\"",
    )
    found = [line for line in out.splitlines() if line.startswith("<") and line.endswith(">")]
    assert found, out
    return found[-1][1:-1]


def record(site: str, disk: str, round_: int) -> str:
    return f"{site}-{disk.replace('/', '-')}-round{round_}"


async def test_replica_backups_of_every_volume_restore_every_volume_at_the_other_site(
    make_driver: Callable[..., QemuDriver], tmp_path: Path
) -> None:
    replica = tmp_path / "site-b" / "replica"
    a = make_driver(replica_dir=replica)
    b = make_driver(
        name="h2", state_dir=tmp_path / "h2", volumes_dir=tmp_path / "site-b" / "volumes"
    )
    folder_a, folder_b = tmp_path / "h1" / "db-1", tmp_path / "h2" / "db-1"
    try:
        await a.create(GuestConfig("db-1", "u-db-1", 1, SPEC))
        await a.start("db-1")
        for disk in DISKS:
            write(folder_a, disk, SECTORS[0], record("a", disk, 1))

        full = await a.backup("db-1", BackupRequest("r1", "full", target="replica"))
        assert full.mode == "full"
        assert full.path == str(replica / "db-1" / "root" / "r1.qcow2")
        assert full.volumes == {
            "db/data": str(replica / "db-1" / "db+data" / "r1.qcow2"),
            "db/logs": str(replica / "db-1" / "db+logs" / "r1.qcow2"),
        }

        # a local backup in between: its own bitmaps, its own chain
        local = await a.backup("db-1", BackupRequest("l1", "full"))
        assert local.path == str(tmp_path / "backups" / "db-1" / "l1.qcow2")
        assert local.volumes["db/logs"] == str(
            tmp_path / "backups" / "db-1" / "db+logs" / "l1.qcow2"
        )
        no_replica = make_driver(name="h3", state_dir=tmp_path / "h3")
        try:
            with pytest.raises(BackupError, match="no replica folder"):
                await no_replica.backup("db-1", BackupRequest("x", "full", target="replica"))
        finally:
            await no_replica.close()

        for disk in DISKS:
            write(folder_a, disk, SECTORS[1], record("a", disk, 2))
        request = BackupRequest("r2", "incremental", full.path, "replica", dict(full.volumes))
        inc = await a.backup("db-1", request)
        assert inc.mode == "incremental"  # the local backup did not reset the replica tracking
        heads = {"root": inc.path, **inc.volumes}
        parents = {"root": full.path, **full.volumes}
        for disk, head in heads.items():
            subprocess.run(["qemu-img", "check", "-U", head], check=True, capture_output=True)
            assert qemu_img_info(head)["backing-filename"] == parents[disk]
        print(f"replica backups: full {full.bytes} bytes, incremental {inc.bytes} bytes")  # -s
        await a.stop("db-1", timeout=10)

        # the other site: another driver, other volumes, the guest rebuilt from r2's chain
        restore = {"backup": "r2", "path": inc.path, "volumes": dict(inc.volumes)}
        await b.create(GuestConfig("db-1", "u-db-1b", 1, SPEC | {"restore_from": restore}))
        await b.start("db-1")
        for lun in ("db/data", "db/logs"):  # made from the backup, flattened
            made = tmp_path / "site-b" / "volumes" / f"{lun}.qcow2"
            assert "backing-filename" not in qemu_img_info(str(made))
        for disk in DISKS:
            for round_, sector in enumerate(SECTORS, 1):
                assert read(folder_b, disk, sector) == record("a", disk, round_), (disk, round_)
        await b.stop("db-1", timeout=10)
    finally:
        a.kill_all()
        b.kill_all()
        await asyncio.gather(a.close(), b.close())
