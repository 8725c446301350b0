"""A restored guest's ``restore_from``: the root volume's backup and each LUN volume's,
parsed from the spec (pure), and the LUN volumes made from them before QEMU starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podium.drivers import GuestConfig
from podium.drivers.qemu import QemuError, _process
from podium.drivers.qemu._argv import layout
from podium.drivers.qemu._hba import lun_nodes, parse_hbas, prepare_volumes

HBA = {
    "wwpn": "50:01:43:80:00:00:00:00",
    "wwnn": "50:01:43:80:00:00:00:01",
    "luns": [
        {"lun": 3, "volume": "db/data", "wwn": "50:01:43:80:00:00:00:02", "serial": "d"},
        {"lun": 1, "volume": "db/logs", "wwn": "50:01:43:80:00:00:00:03", "serial": "l"},
    ],
}


def config(restore_from: Any, hbas: list[Any] | None = None) -> GuestConfig:
    spec: dict[str, Any] = {"request": {"cpu": 1}, "restore_from": restore_from}
    if hbas is not None:
        spec["hbas"] = hbas
    return GuestConfig("db-1", "u-1", 1, spec)


def test_restore_from_names_the_root_and_each_lun_backup_in_lun_order() -> None:
    raw = {
        "backup": "r2",
        "path": "/r/db-1/root/r2.qcow2",
        "volumes": {"db/logs": "/r/db-1/db+logs/r2.qcow2", "db/data": "/r/db-1/db+data/r2.qcow2"},
    }
    guest = layout(config(raw, [HBA]), with_network=False)
    assert guest.restore_from == Path("/r/db-1/root/r2.qcow2")
    assert guest.restore_volumes == (
        ("db/data", Path("/r/db-1/db+data/r2.qcow2")),
        ("db/logs", Path("/r/db-1/db+logs/r2.qcow2")),
    )
    old = layout(config({"backup": "b", "path": "/b/db-1/b.qcow2"}, [HBA]), with_network=False)
    assert old.restore_volumes == ()  # volumes are optional: the LUNs are then made empty
    assert lun_nodes(guest.hbas) == {"db/data": "hba0-lun3", "db/logs": "hba0-lun1"}


@pytest.mark.parametrize(
    ("volumes", "hbas", "message"),
    [
        ({"db/other": "/x.qcow2"}, [HBA], "names 'db/other', which is not one of its LUN"),
        ({"db/data": "/x.qcow2"}, None, "it has none"),
        ({"db/data": "x.qcow2"}, [HBA], "must be an absolute path"),
        (["db/data"], [HBA], "must map"),
    ],
)
def test_bad_restore_volumes_are_refused_with_the_field(
    volumes: Any, hbas: list[Any] | None, message: str
) -> None:
    raw = {"backup": "r2", "path": "/r/root.qcow2", "volumes": volumes}
    with pytest.raises(QemuError, match=message):
        layout(config(raw, hbas), with_network=False)


def test_missing_lun_volumes_are_restored_and_existing_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[Path, Path]] = []

    def restore(path: Path, backup: Path, *, qemu_img: str) -> bool:
        if path.exists():
            return False
        made.append((path, backup))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"restored")
        return True

    def create(path: Path, size_gib: float, *, qemu_img: str) -> bool:
        if path.exists():
            return False
        path.write_bytes(b"empty")
        return True

    monkeypatch.setattr(_process, "restore_volume", restore)
    monkeypatch.setattr(_process, "create_volume", create)
    hbas = parse_hbas([HBA], QemuError)
    volumes = tmp_path / "volumes"
    (volumes / "db").mkdir(parents=True)
    # made from this same backup before (the note says so), then written by the guest:
    # a restart keeps it (a volume from before the backup is replaced: test_lun_restore)
    (volumes / "db" / "logs.qcow2").write_bytes(b"kept")
    (volumes / "db" / "logs.qcow2.restored-from").write_text("/r/l.qcow2\n")
    backups = {"db/data": Path("/r/d.qcow2"), "db/logs": Path("/r/l.qcow2")}
    prepare_volumes("db-1", hbas, volumes, incoming=False, qemu_img="-", restore=backups)
    assert made == [(volumes / "db" / "data.qcow2", Path("/r/d.qcow2"))]
    assert (volumes / "db" / "data.qcow2").read_bytes() == b"restored"
    assert (volumes / "db" / "logs.qcow2").read_bytes() == b"kept"
