"""The tiny guest's initramfs: a busybox-static userland, virtio modules, and one init script.

Pure functions over bytes and paths (no tools run here): the module dependency order
read from each ``.ko``'s ``depends=`` field, a ``cpio`` (newc) writer with fixed
timestamps and owners, so one set of inputs always gives the same archive.
"""

from __future__ import annotations

import gzip
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from podium.drivers.qemu._errors import ImageError

READY_PREFIX = "PODIUM-READY"
DISK_PREFIX = "PODIUM-DISK"
# The disk-writer workload: one "podium-seq N" record per 512-byte sector, sector N mod
# DISK_SLOTS of vda (the first 2 MiB), one record every DISK_WRITE_INTERVAL_US.
DISK_SLOTS = 4096
DISK_WRITE_INTERVAL_US = 50_000

# Roots: virtio over PCI, its net/blk/scsi drivers, and what ACPI power-off needs. Their
# dependencies are added from each module's ``depends=`` field and loaded first.
MODULE_ROOTS: tuple[str, ...] = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "evdev",
    "button",
)

# The part of init that reads and writes disk records (separate so tests can run it with
# busybox on a file).
DISK_SCRIPT = r"""# Disk records: "podium-seq N" in sector N mod SLOTS of vda; the highest N
# found is the last record that reached the disk (what backups and migrations keep).
VDA=/dev/vda
SLOTS=@SLOTS@
LAST=none
if [ -b "$VDA" ]; then
    LAST=$(dd if="$VDA" bs=64k count=$((SLOTS / 128)) 2>/dev/null | tr -s '\000' '\n' |
        awk '$1 == "podium-seq" && $2 + 0 > m { m = $2 + 0 } END { print (m ? m : "none") }')
fi
echo "PODIUM-DISK last=$LAST"
if [ "$WORKLOAD" = disk-writer ] && [ -b "$VDA" ]; then
    n=1
    [ "$LAST" = none ] || n=$((LAST + 1))
    # Bounded rate; each record is fsync'd, so an acknowledged N is on the volume.
    while true; do
        printf 'podium-seq %d\n' "$n" |
            dd of="$VDA" bs=512 seek=$((n % SLOTS)) count=1 conv=notrunc,sync,fsync 2>/dev/null
        n=$((n + 1))
        usleep @INTERVAL@
    done &
fi
""".replace("@SLOTS@", str(DISK_SLOTS)).replace("@INTERVAL@", str(DISK_WRITE_INTERVAL_US))

INIT_SCRIPT = r"""#!/bin/sh
# podium tiny guest: PID 1. Kernel command line parameters:
#   podium.name=NAME  podium.ip=ADDR/PREFIX (NIC 0)  podium.ipN=ADDR/PREFIX (NIC N)
#   podium.gw=ADDR    NICs are numbered in the order of their MAC addresses.
#   podium.workload=disk-writer   write numbered records to /dev/vda in the background
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin /var/log
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/printk
while read -r mod; do
    insmod "/lib/modules/$mod.ko" || echo "podium-init: cannot load $mod"
done < /etc/podium/modules
NAME=guest
GW=
WORKLOAD=idle
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        podium.name=*) NAME="${arg#podium.name=}" ;;
        podium.gw=*) GW="${arg#podium.gw=}" ;;
        podium.workload=*) WORKLOAD="${arg#podium.workload=}" ;;
        podium.ip=*) IP_0="${arg#podium.ip=}" ;;
        podium.ip[0-9]=*|podium.ip[0-9][0-9]=*)
            n="${arg%%=*}"; n="${n#podium.ip}"; eval "IP_$n=\"\${arg#*=}\"" ;;
    esac
done
hostname "$NAME"
ip link set lo up
# Several NICs on one segment: each answers ARP only for its own address.
echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore
echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce
i=0
FIRST=none
for nic in $(for d in /sys/class/net/*; do n="${d##*/}"; [ "$n" = lo ] || \
        echo "$(cat "$d/address") $n"; done | sort | cut -d' ' -f2); do
    ip link set "$nic" up
    eval "addr=\"\$IP_$i\""
    if [ -n "$addr" ]; then
        ip addr add "$addr" dev "$nic"
        [ "$FIRST" = none ] && FIRST="${addr%/*}"
    fi
    i=$((i + 1))
done
[ -n "$GW" ] && ip route add default via "$GW"
DISKS=$(ls /sys/block | grep -E '^(vd|sd)' | tr '\n' ',')
DISKS="${DISKS%,}"
@DISK@acpid -f -c /etc/acpi -l /var/log/acpid.log &
# Ready only once acpid listens: a power button pressed earlier would be lost.
n=0
while [ "$n" -lt 200 ] && ! ls -l "/proc/$!/fd" 2>/dev/null | grep -q /dev/input/event; do
    usleep 10000
    n=$((n + 1))
done
echo "PODIUM-READY name=$NAME ip=$FIRST disks=${DISKS:-none}"
# A root shell on the serial port (QEMU's serial.sock): a test image, for operators and
# tests to run commands in (ping another guest). No echo: keep the console log readable.
stty -F /dev/ttyS0 -echo 2>/dev/null
while true; do
    setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
    sleep 1
done
""".replace("@DISK@", DISK_SCRIPT)

# busybox acpid runs /etc/acpi/PWRF/00000080 on the power button (QMP system_powerdown).
POWEROFF_SCRIPT = """#!/bin/sh
echo "PODIUM-POWEROFF"
poweroff -f
"""


def find_ready_line(console: str) -> str:
    """The last complete ``PODIUM-READY ...`` line in console text, or ``""``."""
    found = ""
    for line in console.splitlines():
        if READY_PREFIX in line:
            found = line[line.index(READY_PREFIX) :].strip()
    return found


def last_disk_record(console: str) -> int | None:
    """N of the last ``PODIUM-DISK last=N`` line in console text; ``None`` if none or
    ``last=none`` (the guest found no record on its disk)."""
    found: int | None = None
    for line in console.splitlines():
        if DISK_PREFIX in line:
            value = line[line.index(DISK_PREFIX) :].partition("last=")[2].strip()
            found = int(value) if value.isdigit() else None
    return found


def disk_records(data: bytes) -> int | None:
    """The highest ``podium-seq N`` record in raw disk bytes (what the guest's init finds)."""
    numbers = [int(m) for m in re.findall(rb"(?:^|\x00|\n)podium-seq (\d+)\n", data)]
    return max(numbers, default=None)


def parse_ready(line: str) -> dict[str, str]:
    """``PODIUM-READY name=a ip=none disks=vda`` -> ``{"name": "a", "ip": "none", ...}``."""
    return dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)


_DEPENDS = re.compile(rb"\x00depends=([^\x00]*)\x00")


def module_name(path: Path) -> str:
    """``virtio-rng.ko`` -> ``virtio_rng``: the kernel treats ``-`` and ``_`` alike."""
    return path.name.removesuffix(".ko").replace("-", "_")


def module_depends(data: bytes) -> list[str]:
    """The ``depends=`` of a module's ``.modinfo`` (what ``strings | grep depends=`` shows)."""
    found = _DEPENDS.search(data)
    if found is None or not found.group(1):
        return []
    return [d.decode().replace("-", "_") for d in found.group(1).split(b",") if d]


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Every ``.ko`` under a kernel's ``lib/modules/<version>``, by module name."""
    index: dict[str, Path] = {}
    for path in sorted(modules_dir.rglob("*.ko*")):
        if path.suffix != ".ko":
            raise ImageError(
                f"{path} is compressed; this image builder needs a kernel package whose "
                "modules are plain .ko files (Debian's cloud kernels are)"
            )
        index[module_name(path)] = path
    return index


def load_order(roots: Iterable[str], depends: Mapping[str, list[str]]) -> list[str]:
    """Dependencies first, then each root, in the order the roots are given.

    ``depends`` maps every known module to its dependencies. Raises :class:`ImageError`
    for an unknown module or a dependency cycle.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, via: str) -> None:
        if name in order:
            return
        if name not in depends:
            raise ImageError(f"kernel module {name!r} (needed by {via}) is not in the package")
        if name in visiting:
            raise ImageError(f"kernel module dependency cycle through {name!r}")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep, name)
        visiting.discard(name)
        order.append(name)

    for root in roots:
        visit(root, "the guest image")
    return order


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of a cpio archive: a directory, file, symlink or character device."""

    path: str  # without a leading "/"
    mode: int  # full st_mode: type and permission bits
    data: bytes = b""  # file contents, or a symlink's target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def regular(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def chardev(path: str, major: int, minor: int) -> Entry:
    return Entry(path, stat.S_IFCHR | 0o600, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\x00" * (-n % 4)


def cpio_newc(entries: Iterable[Entry]) -> bytes:
    """A ``cpio -H newc`` archive: owner root, mtime 0, inodes numbered in order."""
    out = bytearray()
    members = [*entries, Entry("TRAILER!!!", 0)]
    for ino, e in enumerate(members, start=1):
        name = e.path.encode() + b"\x00"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        fields = (ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, *e.rdev, len(name), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + name + _pad4(len(header) + len(name))
        out += e.data + _pad4(len(e.data))
    return bytes(out)


def initramfs(busybox: bytes, modules: Mapping[str, bytes], order: list[str]) -> bytes:
    """The gzip'd initramfs: busybox, ``/init``, the modules and their load order."""
    entries = [
        directory("bin"),
        regular("bin/busybox", busybox, 0o755),
        symlink("bin/sh", "busybox"),
        directory("dev"),
        chardev("dev/console", 5, 1),
        chardev("dev/null", 1, 3),
        directory("etc"),
        directory("etc/acpi"),
        directory("etc/acpi/PWRF"),
        regular("etc/acpi/PWRF/00000080", POWEROFF_SCRIPT.encode(), 0o755),
        directory("etc/podium"),
        regular("etc/podium/modules", "".join(f"{m}\n" for m in order).encode()),
        regular("init", INIT_SCRIPT.encode(), 0o755),
        directory("lib"),
        directory("lib/modules"),
        *(regular(f"lib/modules/{m}.ko", modules[m]) for m in order),
        directory("proc"),
        directory("sys"),
        directory("tmp"),
    ]
    return gzip.compress(cpio_newc(entries), compresslevel=6, mtime=0)
