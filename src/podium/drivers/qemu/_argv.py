"""From a guest's config to a QEMU command line (pure: no I/O, unit-tested as is).

Spec fields the qemu driver reads (all optional; the manifest's schema may add more):

- ``image``: ``tiny`` (the only image so far: the one ``podium image build`` makes);
- ``request.cpu`` (vCPUs, rounded up) and ``request.memory_mib`` (at least
  :data:`MIN_MEMORY_MIB`: the cloud kernel cannot boot in less);
- ``nics``: ``[{"mac": "52:54:00:..", "ip": "ADDR/PREFIX", "gw": "ADDR", "vlan": 100}, ...]``,
  each key optional; without ``mac`` a locally administered one is derived from the uid;
  ``vlan`` (1..4094) makes the NIC's tap an untagged member of that VLAN on the host
  switch (absent: the switch's default, untagged). Ignored when the host has no network
  (the guest gets ``-nic none``). The guest numbers its NICs in MAC order, so
  ``podium.ipN`` goes to the NIC with the N-th smallest MAC;
- ``hbas``: a profile's HBAs, each a virtio-scsi controller whose LUNs carry their WWNs
  (see ``_hba``), over volumes at ``<volumes>/<profile>/<volume>.qcow2``;
- ``boot``: ``["disk", "network"]`` in any order: ``bootindex`` on the root disk and the
  NICs (the tiny image boots its kernel directly, which QEMU ranks first anyway);
- ``disk_gib``: size of the root volume (default 1; qcow2, so it takes what is written);
- ``workload``: ``idle`` (default) or ``disk-writer`` (the guest's init writes numbered
  records to its disk in the background: see ``_initramfs.INIT_SCRIPT``);
- ``restore_from``: ``{"backup": ID, "path": PATH, "volumes": {"<profile>/<volume>":
  PATH}}`` (``volumes`` optional): the root volume, and each LUN volume named there, when
  it does not exist yet, is made from its backup (``qemu-img convert`` of its chain);
- ``qos.iops.limit``: QEMU block throttling of the root volume (a ``throttle`` filter
  node over a ``throttle-group`` with ``limits.iops-total``). The other limits are not
  on the command line: see ``_qos``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.drivers._protocol import GuestConfig
from podium.drivers.qemu._errors import QemuError
from podium.drivers.qemu._hba import Hba, hba_argv, parse_hbas
from podium.drivers.qemu._initramfs import READY_PREFIX
from podium.model import limits_of

# Measured with Debian's 6.1 cloud kernel under TCG: 64 MiB hangs while unpacking the
# kernel, 72 MiB panics out of memory during boot, 80 MiB boots; 96 leaves a margin.
MIN_MEMORY_MIB = 96
DEFAULT_DISK_GIB = 1.0
IMAGE = "tiny"  # the image name manifests use for the built-in guest
CONSOLE = "console.log"  # the guest's serial console, in the guest's state folder
QMP_SOCKET = "qmp.sock"  # relative to the state folder: unix socket paths are short
SERIAL_SOCKET = "serial.sock"  # the guest's serial port (the tiny image keeps a shell on it)
OBSERVE_SOCKET = "observe.sock"  # a second QMP monitor for operators; the driver never uses it
PIDFILE = "qemu.pid"
ROOT_NODE = "disk0"  # block node name of the root volume (backups address it by this)
# With an IOPS limit the device reads and writes through a throttle filter over ROOT_NODE,
# so backups and dirty bitmaps, which address ROOT_NODE, are never throttled themselves.
THROTTLE_NODE = "disk0-throttle"
THROTTLE_GROUP = "disk0-tg"
WORKLOADS = ("idle", "disk-writer")
BOOT_DEVICES = ("disk", "network")
MAX_VLAN = 4094

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAMESPACE = uuid.UUID("6f1c1c2e-7d3e-4c55-9a54-2a1f0c0de001")  # uuid5 for non-UUID uids


@dataclass(frozen=True, slots=True)
class Nic:
    """One guest NIC: its MAC and, optionally, the address the guest configures."""

    mac: str
    ip: str | None = None  # ADDR/PREFIX
    gw: str | None = None
    vlan: int | None = None  # the VLAN its tap is an untagged member of (None: default)


@dataclass(frozen=True, slots=True)
class Layout:
    """What one guest looks like to QEMU, decided from its config alone."""

    name: str
    uuid: str
    memory_mib: int
    cpus: int
    nics: tuple[Nic, ...]
    disk_gib: float
    workload: str = "idle"
    restore_from: Path | None = None  # a backup to build the root volume from
    restore_volumes: tuple[tuple[str, Path], ...] = ()  # (LUN volume id, its backup)
    iops_limit: int | None = None  # QEMU block throttling (operations/s, reads + writes)
    hbas: tuple[Hba, ...] = ()
    boot: tuple[str, ...] = ()  # boot order: "disk", "network" (empty: no bootindex)


def guest_uuid(uid: str) -> str:
    """The ``-uuid`` of a guest: its uid if that is a UUID, else a UUID derived from it."""
    try:
        return str(uuid.UUID(uid))
    except ValueError:
        return str(uuid.uuid5(_NAMESPACE, uid))


def derived_mac(uid: str, index: int) -> str:
    """A locally administered unicast MAC (``52:54:00:xx:xx:xx``) for NIC ``index``."""
    digest = hashlib.sha256(f"{uid}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _bad(config: GuestConfig, what: str) -> QemuError:
    return QemuError(f"guest {config.name!r}: {what}")


def _nic(config: GuestConfig, index: int, raw: Any) -> Nic:
    if not isinstance(raw, Mapping):
        raise _bad(config, f"nics[{index}] must be a mapping with mac, ip, gw")
    mac = str(raw.get("mac") or derived_mac(config.uid, index)).lower()
    if not _MAC.match(mac):
        raise _bad(config, f"nics[{index}].mac {mac!r} is not a MAC like 52:54:00:12:34:56")
    ip, gw = raw.get("ip"), raw.get("gw")
    if ip is not None and "/" not in str(ip):
        raise _bad(config, f"nics[{index}].ip {ip!r} needs a prefix: ADDR/PREFIX")
    try:
        if ip is not None:
            ipaddress.ip_interface(str(ip))
        if gw is not None:
            ipaddress.ip_address(str(gw))
    except ValueError as err:
        raise _bad(config, f"nics[{index}]: {err} (expected ip ADDR/PREFIX, gw ADDR)") from err
    vlan = raw.get("vlan")
    if vlan is not None and (
        isinstance(vlan, bool) or not isinstance(vlan, int) or not 1 <= vlan <= MAX_VLAN
    ):
        raise _bad(config, f"nics[{index}].vlan {vlan!r} must be a VLAN id in 1..{MAX_VLAN}")
    return Nic(mac, str(ip) if ip is not None else None, str(gw) if gw is not None else None, vlan)


def _boot(config: GuestConfig) -> tuple[str, ...]:
    raw = config.spec.get("boot")
    if raw is None:
        return ()
    if (
        not isinstance(raw, Sequence)
        or isinstance(raw, str)
        or not all(b in BOOT_DEVICES for b in raw)
        or len(set(raw)) != len(raw)
    ):
        raise _bad(config, f"boot {raw!r} must list each of {BOOT_DEVICES} at most once")
    return tuple(str(b) for b in raw)


def layout(config: GuestConfig, *, with_network: bool) -> Layout:
    """Decide memory, vCPUs, NICs and disk size. Raises :class:`QemuError` for a bad spec."""
    if not config.name or "/" in config.name or config.name.startswith(".") or "," in config.name:
        raise _bad(config, "a guest name needs letters, digits or '-', and no '/' or ','")
    image = config.spec.get("image", IMAGE)
    if image != IMAGE:
        raise _bad(config, f"unknown image {image!r}: the qemu driver boots {IMAGE!r} only")
    request = config.request
    nics: tuple[Nic, ...] = ()
    if with_network:
        raw = config.spec.get("nics", [{}])
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise _bad(config, "nics must be a list of mappings")
        nics = tuple(_nic(config, i, r) for i, r in enumerate(raw))
        macs = [n.mac for n in nics]
        if len(set(macs)) != len(macs):
            raise _bad(config, f"two NICs share a MAC: {macs}")
    disk = float(config.spec.get("disk_gib", DEFAULT_DISK_GIB))
    if not 0 < disk <= 16384:
        raise _bad(config, f"disk_gib {disk:g} is out of range (0, 16384]")
    workload = config.spec.get("workload") or "idle"
    if workload not in WORKLOADS:
        raise _bad(config, f"unknown workload {workload!r}: expected one of {WORKLOADS}")
    return Layout(
        name=config.name,
        uuid=guest_uuid(config.uid),
        memory_mib=max(MIN_MEMORY_MIB, int(request.memory_mib)),
        cpus=max(1, math.ceil(request.cpu)),
        nics=nics,
        disk_gib=disk,
        workload=str(workload),
        restore_from=_restore_from(config),
        iops_limit=iops_limit(config),
        hbas=parse_hbas(config.spec.get("hbas"), lambda what: _bad(config, what)),
        boot=_boot(config),
        restore_volumes=_restore_volumes(config),
    )


def iops_limit(config: GuestConfig) -> int | None:
    """The spec's ``qos.iops.limit`` as QEMU's whole operations per second, rounded down
    (a guest never gets more than its limit), at least 1."""
    limit = limits_of(config.spec).get("iops")
    return None if limit is None else max(1, math.floor(limit))


def _restore_from(config: GuestConfig) -> Path | None:
    raw = config.spec.get("restore_from")
    if raw is None:
        return None
    path = raw.get("path") if isinstance(raw, Mapping) else None
    if not isinstance(path, str) or not path.startswith("/"):
        raise _bad(config, 'restore_from needs {"backup": ID, "path": "/absolute/path.qcow2"}')
    return Path(path)


def _restore_volumes(config: GuestConfig) -> tuple[tuple[str, Path], ...]:
    """``restore_from.volumes``: each names a LUN volume of this guest and an absolute
    path (its backup); in spec order of the LUNs."""
    raw = config.spec.get("restore_from")
    volumes = raw.get("volumes") if isinstance(raw, Mapping) else None
    if volumes is None:
        return ()
    if not isinstance(volumes, Mapping):
        raise _bad(config, 'restore_from.volumes must map "<profile>/<volume>" to a backup path')
    hbas = parse_hbas(config.spec.get("hbas"), lambda what: _bad(config, what))
    luns = [lun.volume for h in hbas for lun in h.luns]
    for volume, path in volumes.items():
        if volume not in luns:
            raise _bad(
                config,
                f"restore_from.volumes names {volume!r}, which is not one of its LUN volumes "
                f"({', '.join(luns) or 'it has none'})",
            )
        if not isinstance(path, str) or not path.startswith("/"):
            raise _bad(config, f"restore_from.volumes[{volume!r}] must be an absolute path")
    return tuple((v, Path(volumes[v])) for v in luns if v in volumes)


def first_ip(guest: Layout) -> str:
    """The address the guest shows in its ready line: that of its first NIC, in MAC order."""
    for nic in sorted(guest.nics, key=lambda n: n.mac):
        if nic.ip:
            return nic.ip.split("/")[0]
    return "none"


def ready_line(guest: Layout) -> str:
    """The ready line the guest's init prints at boot (one disk, vda), for a guest that
    booted elsewhere: one that arrived by live migration."""
    return f"{READY_PREFIX} name={guest.name} ip={first_ip(guest)} disks=vda"


def kernel_cmdline(guest: Layout) -> str:
    """The kernel command line the guest's init reads (see ``_initramfs.INIT_SCRIPT``)."""
    parts = ["console=ttyS0", "quiet", "panic=-1", f"podium.name={guest.name}"]
    for rank, nic in enumerate(sorted(guest.nics, key=lambda n: n.mac)):
        if nic.ip:
            parts.append(f"podium.ip{rank or ''}={nic.ip}")
    gateway = next((n.gw for n in guest.nics if n.gw), None)
    if gateway:
        parts.append(f"podium.gw={gateway}")
    if guest.workload != "idle":
        parts.append(f"podium.workload={guest.workload}")
    return " ".join(parts)


def boot_indexes(guest: Layout) -> tuple[int | None, list[int | None]]:
    """``bootindex`` of the root disk and of each NIC, from ``guest.boot``: ranks from 1
    in that order, "network" one rank per NIC in spec order (QEMU wants them unique;
    the direct-kernel boot's own option ROM has 0). None: not in the boot order."""
    disk: int | None = None
    nics: list[int | None] = [None] * len(guest.nics)
    rank = 1
    for device in guest.boot:
        if device == "disk":
            disk, rank = rank, rank + 1
        else:
            nics = list(range(rank, rank + len(guest.nics)))
            rank += len(guest.nics)
    return disk, nics


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def qemu_argv(
    guest: Layout,
    *,
    qemu: str,
    accel: str,
    kernel: Path,
    initrd: Path,
    volume: Path,
    taps: Sequence[str] = (),
    incoming: bool = False,
    volumes_dir: Path | None = None,
    checksum_offload: Sequence[bool] = (),
) -> list[str]:
    """QEMU's argv, to run with the guest's state folder as working directory.

    ``taps[i]`` carries ``guest.nics[i]``; no NICs gives ``-nic none`` (never QEMU's
    default user-mode NIC). ``incoming``: a migration destination, which waits for
    ``migrate-incoming`` and keeps its vCPUs stopped (``-S``) until told ``cont``.
    The console file is opened for appending, so the driver can add notes to it.
    ``volumes_dir``: the shared volume storage the HBAs' LUN volumes are on (default:
    the root volume's folder, where the driver keeps both).
    ``checksum_offload[i]`` False: NIC ``i`` is on a userspace switch (Open vSwitch's
    netdev datapath), which forwards partial checksums unfixed, so its virtio-net does
    not offload them (``csum=off,guest_csum=off``; else TCP stalls); default True.
    """
    if len(taps) != len(guest.nics):
        raise QemuError(f"guest {guest.name!r} has {len(guest.nics)} NIC(s) and {len(taps)} tap(s)")
    root = {
        "driver": "qcow2",
        "node-name": ROOT_NODE,
        "file": {"driver": "file", "filename": str(volume)},
    }
    drive = ROOT_NODE
    throttle: list[str] = []
    if guest.iops_limit is not None:
        group = {
            "qom-type": "throttle-group",
            "id": THROTTLE_GROUP,
            "limits": {"iops-total": guest.iops_limit},
        }
        node = {
            "driver": "throttle",
            "node-name": THROTTLE_NODE,
            "throttle-group": THROTTLE_GROUP,
            "file": ROOT_NODE,
        }
        throttle = ["-object", _json(group), "-blockdev", _json(node)]
        drive = THROTTLE_NODE
    disk_index, nic_indexes = boot_indexes(guest)
    disk_boot = "" if disk_index is None else f",bootindex={disk_index}"
    argv = [
        qemu,
        "-name", guest.name,
        "-uuid", guest.uuid,
        "-accel", accel,
        "-nodefaults", "-nographic", "-no-user-config", "-no-reboot",
        "-m", str(guest.memory_mib),
        "-smp", str(guest.cpus),
        # The serial port is a socket (a shell for operators and tests), logged to the
        # console file; appending lets the driver add notes to it.
        "-chardev",
        f"socket,id=console,path={SERIAL_SOCKET},server=on,wait=off,"
        f"logfile={CONSOLE},logappend=on",
        "-serial", "chardev:console",
        "-qmp", f"unix:{QMP_SOCKET},server=on,wait=off",
        "-qmp", f"unix:{OBSERVE_SOCKET},server=on,wait=off",
        "-pidfile", PIDFILE,
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", kernel_cmdline(guest),
        "-blockdev", _json(root),
        *throttle,
        "-device",
        f"virtio-blk-pci,drive={drive},id={ROOT_NODE}-dev,serial=podium-root{disk_boot}",
        *hba_argv(guest.hbas, volume.parent if volumes_dir is None else volumes_dir),
    ]  # fmt: skip
    if incoming:
        argv += ["-S", "-incoming", "defer"]
    if not guest.nics:
        argv += ["-nic", "none"]
    if checksum_offload and len(checksum_offload) != len(guest.nics):
        raise QemuError(f"guest {guest.name!r}: checksum_offload needs one flag per NIC")
    for i, (nic, tap) in enumerate(zip(guest.nics, taps, strict=True)):
        net_boot = "" if nic_indexes[i] is None else f",bootindex={nic_indexes[i]}"
        csum = "" if not checksum_offload or checksum_offload[i] else ",csum=off,guest_csum=off"
        argv += [
            "-netdev", f"tap,id=net{i},ifname={tap},script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=net{i},id=nic{i},mac={nic.mac},romfile={net_boot}{csum}",
        ]  # fmt: skip

    return argv
