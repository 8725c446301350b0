"""Agentless backup of a guest that writes its disk all along (the disk-writer workload:
numbered, fsync'd records), then a restore from the incremental backup.

The guest's records make the checks exact: each backup holds records up to some N
(read through its chain with ``qemu-img dd``), later backups hold later records, and a
guest restored from a backup finds exactly that backup's last record at boot.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from podium.drivers import BackupRequest, GuestConfig
from podium.drivers.qemu import QemuDriver
from podium.drivers.qemu._initramfs import DISK_SLOTS, disk_records, last_disk_record

pytestmark = pytest.mark.slow

SPEC = {"request": {"cpu": 1, "memory_mib": 128}, "workload": "disk-writer"}


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def last_record(image: str, tmp_path: Path) -> int | None:
    """The highest record in an image (read through its backing chain)."""
    raw = tmp_path / "head.raw"
    raw.unlink(missing_ok=True)
    qemu_img("dd", "-O", "raw", "bs=512", f"count={DISK_SLOTS}", f"if={image}", f"of={raw}")
    return disk_records(raw.read_bytes())


async def booted(driver: QemuDriver, name: str) -> str:
    """The guest's console once the ready line is there."""
    await driver.start(name)
    return driver.console(name)


async def test_full_and_incremental_backups_of_a_writing_guest_restore_to_a_booting_guest(
    make_driver: Callable[..., QemuDriver], tmp_path: Path
) -> None:
    driver = make_driver()
    try:
        await driver.create(GuestConfig("db", "u-db", 1, SPEC))
        assert last_disk_record(await booted(driver, "db")) is None  # a blank volume
        await asyncio.sleep(1.0)  # ~15 records

        seen: list[tuple[int, int]] = []
        full = await driver.backup(
            "db", BackupRequest("db-1", "full"), on_progress=lambda d, t: seen.append((d, t))
        )
        assert full.mode == "full" and full.bytes > 0
        assert full.path == str(tmp_path / "backups" / "db" / "db-1.qcow2")
        assert seen[-1] == (1 << 30, 1 << 30)  # the whole 1 GiB volume, as QEMU counts it
        await asyncio.sleep(1.0)

        inc = await driver.backup("db", BackupRequest("db-2", "incremental", full.path))
        assert inc.mode == "incremental"
        for path in (full.path, inc.path):
            qemu_img("check", path)  # exits non-zero on any corruption or leak
        info = json.loads(qemu_img("info", "--output=json", inc.path))
        assert info["backing-filename"] == full.path and info["virtual-size"] == 1 << 30
        in_full, in_inc = last_record(full.path, tmp_path), last_record(inc.path, tmp_path)
        assert in_full is not None and in_inc is not None
        assert 0 < in_full < in_inc  # the incremental holds the writes made since the full
        print(f"records: full {in_full}, incremental {in_inc}; {full} {inc}")  # -s

        again = await driver.backup("db", BackupRequest("db-2", "incremental", full.path))
        assert (again.path, again.mode) == (inc.path, "incremental")  # the same id: the same file

        restore = {"backup": "db-2", "path": inc.path}
        await driver.create(GuestConfig("db-copy", "u-copy", 1, SPEC | {"restore_from": restore}))
        assert (tmp_path / "volumes" / "db-copy-u-copy.qcow2").is_file()  # made by create
        driver.kill("db")  # its change tracking is left inconsistent in the volume
        console, _ = await asyncio.gather(booted(driver, "db-copy"), booted(driver, "db"))
        assert driver.ready_line("db-copy") == "PODIUM-READY name=db-copy ip=none disks=vda"
        assert last_disk_record(console) == in_inc  # exactly what the backup held

        # untracked changes (a restored volume, a QEMU killed): incremental becomes full
        copy = await driver.backup("db-copy", BackupRequest("c-1", "incremental", inc.path))
        after_kill = await driver.backup("db", BackupRequest("db-3", "incremental", inc.path))
        assert (copy.mode, after_kill.mode) == ("full", "full")
        for backup in (copy, after_kill):
            qemu_img("check", backup.path)
        tracked = await driver.backup("db", BackupRequest("db-4", "incremental", after_kill.path))
        assert tracked.mode == "incremental"  # tracking again from that full backup
    finally:
        driver.kill_all()
        await driver.close()
