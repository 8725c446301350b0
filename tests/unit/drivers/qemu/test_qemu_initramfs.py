"""The initramfs builder: module order from depends=, a reproducible cpio newc, the ready line."""

from __future__ import annotations

import gzip
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from podium.drivers.qemu import ImageError
from podium.drivers.qemu._initramfs import (
    DISK_SCRIPT,
    DISK_SLOTS,
    INIT_SCRIPT,
    MODULE_ROOTS,
    chardev,
    cpio_newc,
    directory,
    disk_records,
    find_ready_line,
    initramfs,
    last_disk_record,
    load_order,
    module_depends,
    module_index,
    parse_ready,
    regular,
    symlink,
)
from tests.support.components import missing_component


def read_newc(blob: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """A minimal newc reader: name -> (mode, data, rdev)."""
    out: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_at = pos + 110
        name = blob[name_at : name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        data = blob[data_at : data_at + size]
        pos = data_at + size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data, rdev)


def modinfo(depends: str) -> bytes:
    return b"\x7fELF...\x00license=GPL\x00depends=" + depends.encode() + b"\x00intree=Y\x00"


def test_depends_is_read_from_modinfo() -> None:
    assert module_depends(modinfo("virtio_ring,virtio")) == ["virtio_ring", "virtio"]
    assert module_depends(modinfo("")) == []
    assert module_depends(b"no modinfo here") == []
    assert module_depends(modinfo("snd-pcm")) == ["snd_pcm"]


def test_load_order_puts_dependencies_first_and_keeps_root_order() -> None:
    deps = {
        "virtio_ring": [],
        "virtio": ["virtio_ring"],
        "virtio_pci": ["virtio_ring", "virtio"],
        "failover": [],
        "net_failover": ["failover"],
        "virtio_net": ["virtio_ring", "virtio", "net_failover"],
        "virtio_blk": ["virtio", "virtio_ring"],
    }
    order = load_order(["virtio_pci", "virtio_net", "virtio_blk"], deps)
    assert order == [
        "virtio_ring",
        "virtio",
        "virtio_pci",
        "failover",
        "net_failover",
        "virtio_net",
        "virtio_blk",
    ]
    for i, name in enumerate(order):
        assert set(deps[name]) <= set(order[:i])


def test_load_order_names_a_missing_module_and_a_cycle() -> None:
    with pytest.raises(ImageError, match="'virtio_ring' \\(needed by virtio\\)"):
        load_order(["virtio"], {"virtio": ["virtio_ring"]})
    with pytest.raises(ImageError, match="cycle"):
        load_order(["a"], {"a": ["b"], "b": ["a"]})


def test_module_index_refuses_compressed_modules(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "virtio-rng.ko").write_bytes(modinfo(""))
    assert list(module_index(tmp_path)) == ["virtio_rng"]
    (tmp_path / "kernel" / "virtio.ko.xz").write_bytes(b"")
    with pytest.raises(ImageError, match="compressed"):
        module_index(tmp_path)


def test_cpio_newc_round_trips_every_kind_of_entry() -> None:
    blob = cpio_newc(
        [
            directory("bin"),
            regular("bin/busybox", b"\x7fELF" * 3, 0o755),
            symlink("bin/sh", "busybox"),
            chardev("dev/console", 5, 1),
            regular("init", b"#!/bin/sh\n", 0o755),
        ]
    )
    entries = read_newc(blob)
    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["bin/busybox"][1] == b"\x7fELF" * 3
    assert stat.S_IMODE(entries["bin/busybox"][0]) == 0o755
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)


def test_initramfs_is_reproducible_and_carries_init_and_modules_in_order() -> None:
    modules = {"virtio_ring": b"ring", "virtio": b"virtio"}
    one = initramfs(b"busybox", modules, ["virtio_ring", "virtio"])
    two = initramfs(b"busybox", modules, ["virtio_ring", "virtio"])
    assert one == two
    entries = read_newc(gzip.decompress(one))
    assert entries["init"][1] == INIT_SCRIPT.encode()
    assert entries["etc/podium/modules"][1] == b"virtio_ring\nvirtio\n"
    assert entries["lib/modules/virtio.ko"][1] == b"virtio"
    assert "etc/acpi/PWRF/00000080" in entries  # the power button powers the guest off
    assert "virtio_net" in MODULE_ROOTS and "virtio_blk" in MODULE_ROOTS


def test_ready_line_is_found_among_console_noise() -> None:
    console = (
        "\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n[    1.0] virtio_net\r\n"
        "PODIUM-READY name=web-1 ip=10.0.0.5 disks=vda,vdb\r\n"
    )
    line = find_ready_line(console)
    assert line == "PODIUM-READY name=web-1 ip=10.0.0.5 disks=vda,vdb"
    assert parse_ready(line) == {"name": "web-1", "ip": "10.0.0.5", "disks": "vda,vdb"}
    assert find_ready_line("booting...\n") == ""


def test_the_disk_line_comes_before_the_ready_line() -> None:
    assert DISK_SCRIPT in INIT_SCRIPT and "@" not in INIT_SCRIPT
    assert INIT_SCRIPT.index('echo "PODIUM-DISK') < INIT_SCRIPT.index('echo "PODIUM-READY')
    console = "PODIUM-DISK last=none\r\nPODIUM-READY name=a ip=none disks=vda\r\n"
    assert last_disk_record(console) is None
    assert last_disk_record("\x1bcPODIUM-DISK last=48\r\n") == 48
    assert last_disk_record("booting") is None


def record(n: int) -> bytes:
    return f"podium-seq {n}\n".encode().ljust(512, b"\0")


def test_disk_records_are_read_from_raw_sectors() -> None:
    data = bytearray(DISK_SLOTS * 512)
    for n in (3, 4, 4100):  # 4100 wrapped around onto slot 4
        data[(n % DISK_SLOTS) * 512 : (n % DISK_SLOTS + 1) * 512] = record(n)
    assert disk_records(bytes(data)) == 4100
    assert disk_records(bytes(1024)) is None


def busybox_sh(tmp_path: Path, vda: Path, workload: str) -> subprocess.Popen[str]:
    """The guest's disk script under the host's busybox (the guest's own binary), on a file."""
    if not Path("/bin/busybox").exists():
        missing_component("needs busybox-static (scripts/setup installs it)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for applet in ("dd", "tr", "awk", "usleep", "printf", "sh"):
        if not (bin_dir / applet).exists():
            (bin_dir / applet).symlink_to("/bin/busybox")
    script = f"WORKLOAD={workload}\n" + DISK_SCRIPT.replace("VDA=/dev/vda", f"VDA={vda}")
    script = script.replace('[ -b "$VDA" ]', '[ -f "$VDA" ]')  # a file stands for vda
    return subprocess.Popen(
        [str(bin_dir / "sh"), "-c", script],
        env={"PATH": str(bin_dir)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the writer loop outlives sh: its group is killed below
    )


def test_init_finds_the_last_record_and_the_writer_continues_from_it(tmp_path: Path) -> None:
    vda = tmp_path / "vda"
    with vda.open("wb") as f:
        f.truncate(4 << 20)
        for n in (7, 4100):
            f.seek((n % DISK_SLOTS) * 512)
            f.write(record(n))
    idle = busybox_sh(tmp_path, vda, "idle")
    assert idle.communicate(timeout=10)[0] == "PODIUM-DISK last=4100\n"
    writer = busybox_sh(tmp_path, vda, "disk-writer")
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "PODIUM-DISK last=4100\n"
        deadline = time.monotonic() + 10
        while disk_records(vda.read_bytes()[: DISK_SLOTS * 512]) in (4100, 4101):
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.05)
    finally:
        os.killpg(writer.pid, signal.SIGKILL)
        writer.communicate()  # reaps sh and closes its pipe
    data = vda.read_bytes()
    newest = disk_records(data[: DISK_SLOTS * 512])
    assert newest is not None and newest > 4101
    for n in range(4101, newest + 1):  # consecutive, each in its slot
        assert data[(n % DISK_SLOTS) * 512 :][:512] == record(n)
    assert len(data) == 4 << 20  # written in place, never truncated


def test_a_blank_disk_has_no_last_record(tmp_path: Path) -> None:
    vda = tmp_path / "vda"
    vda.write_bytes(bytes(1 << 20))
    assert busybox_sh(tmp_path, vda, "idle").communicate(timeout=10)[0] == "PODIUM-DISK last=none\n"
