"""A profile's HBAs in QEMU: virtio-scsi controllers whose LUNs carry the profile's WWNs.

::

    spec.hbas[N] {wwpn, wwnn, luns: [{lun, volume: "db/data", wwn, serial, size_gib}]}
        │ parse_hbas (pure; QemuError names the field)
        v
    -device virtio-scsi-pci,id=hbaN
    -blockdev {"driver":"qcow2","node-name":"hbaN-lunL","file":<volumes>/db/data.qcow2}
    -device scsi-hd,bus=hbaN.0,channel=0,scsi-id=0,lun=L,drive=hbaN-lunL,
            wwn=0x<LUN WWN>,port_wwn=0x<WWPN>,serial=<serial>
        │ the guest's kernel reads VPD page 0x83
        v
    /sys/block/sdX/device/wwid = naa.<LUN WWN hex>

LUN volumes belong to the profile, not to a guest: they live on the driver's shared
volume storage at ``<volumes>/<profile>/<volume>.qcow2`` (where the root volumes are,
so a migration's destination and a failover host see them), are made on first use and
are never deleted by a guest's stop or destroy. A restored guest's LUN volumes that
do not exist yet are made from its backup (``restore_from.volumes``, ``prepare_volumes``)
instead of empty. QEMU has no property for an HBA's WWNN: it is validated and kept, not
presented. Backups address each LUN by its block node (``lun_nodes``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.drivers._protocol import MigrationError
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._errors import QemuError

MAX_LUN = 16383  # virtio-scsi's highest LUN (QEMU: "bad scsi device lun" above it)
MAX_SERIAL = 36  # QEMU's scsi-disk reports at most this many characters
MAX_SIZE_GIB = 16384.0
# 8 octets, lowercase with ':', NAA 1, 2 or 5 (what the pools hand out; QEMU takes 64 bits)
_WWN = re.compile(r"^[125][0-9a-f](:[0-9a-f]{2}){7}$")
_PART = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # one part of a volume id
_SERIAL = re.compile(r"^[A-Za-z0-9_.-]+$")  # no ',' (QEMU's option separator) or spaces


@dataclass(frozen=True, slots=True)
class Lun:
    """One LUN: a volume presented under its own WWN."""

    lun: int
    volume: str  # "<profile>/<name>"
    wwn: str  # 8 octets, "50:01:43:80:00:00:00:02"
    serial: str
    size_gib: float


@dataclass(frozen=True, slots=True)
class Hba:
    """One HBA: a virtio-scsi controller with the profile's port and node names."""

    wwpn: str
    wwnn: str
    luns: tuple[Lun, ...]


def wwn_hex(wwn: str) -> str:
    """``50:01:43:80:00:00:00:02`` -> ``5001438000000002`` (what the guest's wwid shows)."""
    return wwn.replace(":", "")


def lun_node(hba: int, lun: int) -> str:
    """The block node name of LUN ``lun`` on HBA ``hba`` (backups address it by this)."""
    return f"hba{hba}-lun{lun}"


def lun_nodes(hbas: Sequence[Hba]) -> dict[str, str]:
    """Each LUN's volume id -> its block node name, in spec order."""
    return {lun.volume: lun_node(n, lun.lun) for n, h in enumerate(hbas) for lun in h.luns}


def volume_path(volumes_dir: Path, volume: str) -> Path:
    """Where LUN volume ``profile/name`` lives: ``<volumes>/<profile>/<name>.qcow2``."""
    return volumes_dir / f"{volume}.qcow2"


def _wwn(raw: Any, where: str, bad: Callable[[str], QemuError]) -> str:
    wwn = str(raw or "").lower()
    if not _WWN.match(wwn):
        raise bad(
            f"{where} {raw!r} is not a WWN: 8 octets like 50:01:43:80:00:00:00:02 "
            "whose first hex digit (the NAA) is 1, 2 or 5"
        )
    return wwn


def _lun(raw: Any, where: str, bad: Callable[[str], QemuError]) -> Lun:
    if not isinstance(raw, Mapping):
        raise bad(f"{where} must be a mapping with lun, volume, wwn, serial, size_gib")
    number = raw.get("lun")
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_LUN:
        raise bad(f"{where}.lun {number!r} must be a whole number in 0..{MAX_LUN}")
    volume = str(raw.get("volume") or "")
    parts = volume.split("/")
    if len(parts) != 2 or not all(_PART.match(p) for p in parts):
        raise bad(
            f"{where}.volume {raw.get('volume')!r} must be PROFILE/NAME (lowercase "
            "letters, digits, '-', '_', '.'; no '..'), e.g. db/data"
        )
    serial = str(raw.get("serial") or "")
    if not _SERIAL.match(serial) or len(serial) > MAX_SERIAL:
        raise bad(
            f"{where}.serial {serial!r} must be 1 to {MAX_SERIAL} letters, digits, '-', '_' or '.'"
        )
    try:
        size = float(raw.get("size_gib", 1))
    except (TypeError, ValueError):
        size = math.nan
    if not 0 < size <= MAX_SIZE_GIB:
        raise bad(f"{where}.size_gib {raw.get('size_gib')!r} is out of range (0, {MAX_SIZE_GIB:g}]")
    return Lun(number, volume, _wwn(raw.get("wwn"), f"{where}.wwn", bad), serial, size)


def parse_hbas(raw: Any, bad: Callable[[str], QemuError]) -> tuple[Hba, ...]:
    """The spec's ``hbas`` (None: none). ``bad(message)`` makes the error to raise.

    Refuses a malformed WWN, LUN number, volume id, serial or size; two LUNs with one
    number on an HBA; one WWN used twice; one volume presented twice.
    """
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise bad("hbas must be a list of mappings with wwpn, wwnn and luns")
    hbas: list[Hba] = []
    seen_wwns: dict[str, str] = {}
    seen_volumes: dict[str, str] = {}

    def unique(seen: dict[str, str], value: str, where: str, what: str) -> None:
        if value in seen:
            raise bad(f"{where}: {what} {value} is also {seen[value]}")
        seen[value] = where

    for i, item in enumerate(raw):
        where = f"hbas[{i}]"
        if not isinstance(item, Mapping):
            raise bad(f"{where} must be a mapping with wwpn, wwnn and luns")
        wwpn = _wwn(item.get("wwpn"), f"{where}.wwpn", bad)
        wwnn = _wwn(item.get("wwnn"), f"{where}.wwnn", bad)
        unique(seen_wwns, wwpn, f"{where}.wwpn", "WWN")
        unique(seen_wwns, wwnn, f"{where}.wwnn", "WWN")
        raw_luns = item.get("luns", [])
        if not isinstance(raw_luns, Sequence) or isinstance(raw_luns, str):
            raise bad(f"{where}.luns must be a list of mappings")
        luns = tuple(_lun(r, f"{where}.luns[{j}]", bad) for j, r in enumerate(raw_luns))
        numbers: dict[int, int] = {}
        for j, lun in enumerate(luns):
            if lun.lun in numbers:
                raise bad(f"{where}.luns[{j}]: lun {lun.lun} is also luns[{numbers[lun.lun]}]")
            numbers[lun.lun] = j
            unique(seen_wwns, lun.wwn, f"{where}.luns[{j}].wwn", "WWN")
            unique(seen_volumes, lun.volume, f"{where}.luns[{j}].volume", "volume")
        hbas.append(Hba(wwpn, wwnn, luns))
    return tuple(hbas)


def hba_argv(hbas: Sequence[Hba], volumes_dir: Path) -> list[str]:
    """QEMU options for ``hbas``: a controller each, a qcow2 node and scsi-hd per LUN."""
    argv: list[str] = []
    for n, hba in enumerate(hbas):
        argv += ["-device", f"virtio-scsi-pci,id=hba{n}"]
        for lun in hba.luns:
            node = lun_node(n, lun.lun)
            path = volume_path(volumes_dir, lun.volume)
            blockdev = {
                "driver": "qcow2",
                "node-name": node,
                "file": {"driver": "file", "filename": str(path)},
            }
            device = (
                f"scsi-hd,bus=hba{n}.0,channel=0,scsi-id=0,lun={lun.lun},drive={node},"
                f"id={node}-dev,wwn=0x{wwn_hex(lun.wwn)},port_wwn=0x{wwn_hex(hba.wwpn)},"
                f"serial={lun.serial}"
            )
            argv += ["-blockdev", json.dumps(blockdev, separators=(",", ":")), "-device", device]
    return argv


def lun_volumes(hbas: Sequence[Hba], volumes_dir: Path) -> list[tuple[Path, float]]:
    """Each LUN's volume path and size, in spec order."""
    return [(volume_path(volumes_dir, lun.volume), lun.size_gib) for h in hbas for lun in h.luns]


def ensure_volumes(hbas: Sequence[Hba], volumes_dir: Path, *, qemu_img: str) -> list[Path]:
    """Create the LUN volumes that do not exist yet (never touches existing ones); the
    paths created. Blocking (``qemu-img``). Raises :class:`QemuError`."""
    made = []
    for path, size in lun_volumes(hbas, volumes_dir):
        if proc.create_volume(path, size, qemu_img=qemu_img):
            made.append(path)
    return made


def missing_volumes(hbas: Sequence[Hba], volumes_dir: Path) -> list[Path]:
    """LUN volumes that are not there (a migration destination must find them all)."""
    return [path for path, _ in lun_volumes(hbas, volumes_dir) if not path.is_file()]


RESTORED_SUFFIX = ".restored-from"  # beside a LUN volume: the backup it was made from


def restore_volumes(
    hbas: Sequence[Hba], volumes_dir: Path, backups: Mapping[str, Path], *, qemu_img: str
) -> list[Path]:
    """Make each LUN volume named in ``backups`` (volume id -> backup file, maybe backed
    by earlier backups: the chain is flattened); the paths made. Blocking (``qemu-img
    convert``). Raises :class:`QemuError`.

    LUN volumes belong to the profile and outlive its guests, so a site's storage may
    still hold one from before a failover when the guest comes back (failback). A volume
    not made from this very backup is therefore moved aside (``.replaced-<time>``, kept
    for the operator) and made again; one made from it (a note beside it says so) is the
    guest's own since then, and is kept: a restart must not lose what it wrote.
    """
    made = []
    for h in hbas:
        for lun in h.luns:
            backup = backups.get(lun.volume)
            if backup is None:
                continue
            path = volume_path(volumes_dir, lun.volume)
            note = path.with_name(path.name + RESTORED_SUFFIX)
            source = str(backup)
            if path.exists() and _read(note) != source:
                path.rename(path.with_name(f"{path.name}.replaced-{time.time_ns()}"))
            if proc.restore_volume(path, backup, qemu_img=qemu_img):
                note.write_text(source + "\n")
                made.append(path)
    return made


def _read(note: Path) -> str | None:
    try:
        return note.read_text().strip()
    except OSError:
        return None


def prepare_volumes(
    name: str,
    hbas: Sequence[Hba],
    volumes_dir: Path,
    *,
    incoming: bool,
    qemu_img: str,
    restore: Mapping[str, Path] | None = None,
) -> None:
    """Before guest ``name``'s QEMU starts: make its missing LUN volumes, from their
    backups in ``restore`` (volume id -> backup file) where given, else empty; a
    migration destination (``incoming``) makes none, it must find the source's on the
    shared storage (else :class:`MigrationError`). Blocking."""
    if not incoming:
        restore_volumes(hbas, volumes_dir, restore or {}, qemu_img=qemu_img)
        ensure_volumes(hbas, volumes_dir, qemu_img=qemu_img)
        return
    missing = missing_volumes(hbas, volumes_dir)
    if missing:
        raise MigrationError(
            f"{name}: LUN volume(s) {', '.join(map(str, missing))} are not here; live "
            "migration needs the volumes on storage both hosts share"
        )
