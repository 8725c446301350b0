"""The qemu driver: real guests, one QEMU process each, driven over QMP.

::

    build_image ─> <cache>/<key>/{vmlinuz, initrd.gz}      (_image, _initramfs)
                                   │
    GuestConfig ─layout─> argv ────┤  -name -uuid -accel -kernel -initrd -append
         (_argv)                   │  -blockdev <volumes>/<guest>-<uid>.qcow2 (virtio-blk)
                                   │  -netdev tap (HostNetwork.attach) | -nic none
                                   v
    QemuDriver.start ─spawn (setsid)─> QEMU ── console.log ── "PODIUM-READY ..." ─> running
         │  (_driver, _boot, _process)  ├── qmp.sock <── Monitor (qemu.qmp QMPClient; _qmp)
         │                              └── observe.sock <── observe_status (operators; _observe)
         ├─ stop: system_powerdown (guest acpid powers off) ─(timeout)─> quit ─> SIGKILL
         ├─ kill / kill_all: SIGKILL by PID, checked against -uuid (any thread)
         ├─ pause / resume: QMP stop / cont; STOP / RESUME / SHUTDOWN events fold into state
         ├─ prepare_incoming / migrate_out / activate: live migration over TCP (_migration)
         ├─ backup: blockdev-backup, full or incremental, into <backups>/<guest>/<id>.qcow2
         │  (_backup); a spec's restore_from makes the volume from a backup (qemu-img convert)
         ├─ qos: iops limit = a throttle filter in the argv; net_mbps = tc on the taps
         │  (net._tc), cpu = a cgroup per guest (_cgroup), set after spawn (_qos)
         └─ a new QemuDriver re-adopts every QEMU its state folders name (_guest, _record)

Vocabulary: the *image* is the kernel + initramfs every guest boots; a guest's *state
folder* (``<data_dir>/<host>/<guest>``) holds its record, console, QMP socket and logs;
*volumes* live in a shared folder (the stand-in for a SAN) and outlive ``destroy``.
The guest's init prints ``PODIUM-READY name=<name> ip=<addr|none> disks=<vda,...>``.

Registry factory :func:`qemu_driver`: state in ``<data_dir>/<host>``, volumes in
``<data_dir>/volumes``, backups in ``<data_dir>/backups``, the image from the cache
``podium image build`` fills (``$PODIUM_IMAGE_CACHE``, else ``/var/cache/podium/images``),
and guest NICs on the Linux bridge named by ``$PODIUM_BRIDGE`` (unset: guests get no NIC);
NICs with a VLAN go there too where the kernel's bridges filter VLANs, else on the Open
vSwitch bridge ``$PODIUM_OVS_BRIDGE`` (default ``brv``) of the database at
``$PODIUM_OVS_DB`` (``podium agent --ovs-db/--ovs-bridge`` set both); replica backups
(DR) in ``$PODIUM_REPLICA_DIR`` (``podium agent --replica-dir``; unset: refused).
"""

from __future__ import annotations

import os
from pathlib import Path

from podium.drivers.net import HostNetwork, HostSwitch, LinuxBridgeNetwork, NetworkError, OvsNetwork
from podium.drivers.qemu._argv import MIN_MEMORY_MIB, derived_mac, guest_uuid
from podium.drivers.qemu._driver import QemuDriver
from podium.drivers.qemu._errors import ImageError, QemuError, QemuStartError, QmpError
from podium.drivers.qemu._image import CACHE_ENV, Image, build_image, default_cache_dir
from podium.drivers.qemu._initramfs import DISK_PREFIX, READY_PREFIX
from podium.drivers.qemu._observe import observe_status
from podium.drivers.qemu._process import ACCEL_ENV, choose_accel, kvm_works
from podium.model import Resources

DEFAULT_DATA_DIR = Path("/var/lib/podium/agent")
BRIDGE_ENV = "PODIUM_BRIDGE"
OVS_DB_ENV = "PODIUM_OVS_DB"  # ovsdb-server's socket: unix:PATH (unset: no OVS)
OVS_BRIDGE_ENV = "PODIUM_OVS_BRIDGE"
DEFAULT_OVS_BRIDGE = "brv"
REPLICA_DIR_ENV = "PODIUM_REPLICA_DIR"  # the other site's storage (podium agent --replica-dir)


def _ovs_switch() -> OvsNetwork | None:
    """The OVS bridge ``$PODIUM_OVS_DB`` / ``$PODIUM_OVS_BRIDGE`` name, checked to exist."""
    db = os.environ.get(OVS_DB_ENV, "").strip()
    if not db:
        return None
    bridge = os.environ.get(OVS_BRIDGE_ENV, "").strip() or DEFAULT_OVS_BRIDGE
    try:
        ovs = OvsNetwork(bridge, db=db)
        ovs.vsctl("br-exists", bridge)
    except NetworkError as err:
        raise QemuError(
            f"{OVS_DB_ENV}={db} {OVS_BRIDGE_ENV}={bridge}: {err}; run ovsdb-server and "
            f"ovs-vswitchd there and make the bridge (ovs-vsctl add-br {bridge} -- set bridge "
            f"{bridge} datapath_type=netdev), or unset {OVS_DB_ENV}"
        ) from err
    return ovs


def qemu_driver(*, name: str, capacity: Resources, data_dir: Path | None = None) -> QemuDriver:
    """The registry's factory (``podium agent --driver qemu --data-dir DIR``).

    Raises :class:`QemuError` if ``$PODIUM_BRIDGE`` names a bridge that does not exist
    in this network namespace, or ``$PODIUM_OVS_DB`` a switch that cannot be reached.
    """
    base = data_dir or DEFAULT_DATA_DIR
    network: HostNetwork | None = None
    bridge = os.environ.get(BRIDGE_ENV, "").strip()
    if bridge:
        if not Path(f"/sys/class/net/{bridge}/bridge").is_dir():
            raise QemuError(
                f"{BRIDGE_ENV}={bridge}: no such bridge in this network namespace; create it "
                f"(ip link add {bridge} type bridge) or unset {BRIDGE_ENV} for guests without NICs"
            )
        network = HostSwitch(LinuxBridgeNetwork(bridge), _ovs_switch())
    elif os.environ.get(OVS_DB_ENV, "").strip():
        raise QemuError(f"{OVS_DB_ENV} needs {BRIDGE_ENV}: untagged NICs go on that bridge")
    replica = os.environ.get(REPLICA_DIR_ENV, "").strip()
    return QemuDriver(
        name=name,
        capacity=capacity,
        state_dir=base / name,
        volumes_dir=base / "volumes",
        backups_dir=base / "backups",
        replica_dir=Path(replica) if replica else None,
        image_cache=default_cache_dir(),
        network=network,
    )


__all__ = [
    "ACCEL_ENV",
    "BRIDGE_ENV",
    "CACHE_ENV",
    "DEFAULT_DATA_DIR",
    "DEFAULT_OVS_BRIDGE",
    "DISK_PREFIX",
    "MIN_MEMORY_MIB",
    "OVS_BRIDGE_ENV",
    "OVS_DB_ENV",
    "READY_PREFIX",
    "Image",
    "ImageError",
    "QemuDriver",
    "QemuError",
    "QemuStartError",
    "QmpError",
    "build_image",
    "choose_accel",
    "default_cache_dir",
    "derived_mac",
    "guest_uuid",
    "kvm_works",
    "observe_status",
    "qemu_driver",
]
