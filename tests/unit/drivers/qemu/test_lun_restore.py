"""A restored guest's LUN volumes: made from the backup once, kept across restarts, and
replaced when stale (a failback finds the site's volume from before the failover)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from podium.drivers.qemu import _hba
from podium.drivers.qemu import _process as proc

LUN = _hba.Lun(0, "db/data", "50:01:43:80:00:00:00:02", "pd-db-data", 1)
HBA = _hba.Hba("50:01:43:80:00:00:00:00", "50:01:43:80:00:00:00:01", (LUN,))


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-img convert as a copy (the chain flattening is tested with real QEMU)."""

    def restore(path: Path, backup: Path, *, qemu_img: str = "") -> bool:
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backup, path)
        return True

    monkeypatch.setattr(proc, "restore_volume", restore)


def test_made_once_then_kept_with_what_the_guest_wrote(tmp_path: Path, fake_convert: None) -> None:
    backup = tmp_path / "replicas" / "r1.qcow2"
    backup.parent.mkdir()
    backup.write_text("replica 1")
    volumes = tmp_path / "volumes"
    made = _hba.restore_volumes([HBA], volumes, {"db/data": backup}, qemu_img="qemu-img")
    volume = _hba.volume_path(volumes, "db/data")
    assert made == [volume] and volume.read_text() == "replica 1"
    volume.write_text("replica 1 + the guest's writes")  # the guest ran
    assert _hba.restore_volumes([HBA], volumes, {"db/data": backup}, qemu_img="qemu-img") == []
    assert volume.read_text() == "replica 1 + the guest's writes"


def test_a_stale_volume_is_moved_aside_and_made_from_the_new_backup(
    tmp_path: Path, fake_convert: None
) -> None:
    volumes = tmp_path / "volumes"
    volume = _hba.volume_path(volumes, "db/data")
    volume.parent.mkdir(parents=True)
    volume.write_text("before the failover")  # no note: not made from any backup
    backup = tmp_path / "r2.qcow2"
    backup.write_text("final replica")
    assert _hba.restore_volumes([HBA], volumes, {"db/data": backup}, qemu_img="qemu-img") == [
        volume
    ]
    assert volume.read_text() == "final replica"
    (aside,) = [p for p in volume.parent.iterdir() if ".replaced-" in p.name]
    assert aside.read_text() == "before the failover"
    newer = tmp_path / "r3.qcow2"  # a later restore (another failover): replaced again
    newer.write_text("replica 3")
    _hba.restore_volumes([HBA], volumes, {"db/data": newer}, qemu_img="qemu-img")
    assert volume.read_text() == "replica 3"
    assert len([p for p in volume.parent.iterdir() if ".replaced-" in p.name]) == 2
