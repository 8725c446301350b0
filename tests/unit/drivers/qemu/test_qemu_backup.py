"""The QMP side of agentless backup, without QEMU: which mode runs, the one transaction of a
full backup, and what a failure leaves (nothing). Real QEMU runs in
tests/integration/qemu/test_qemu_backup.py."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import BackupError, BackupRequest
from podium.drivers.qemu import _backup
from podium.drivers.qemu._backup import (
    BITMAP,
    JOB,
    TARGET_NODE,
    Backup,
    backup_job,
    backup_path,
    bitmap_usable,
    choose_mode,
    full_actions,
    virtual_size,
)

GIB = 1 << 30


def nodes(*bitmaps: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A query-named-block-nodes reply: the root node with ``bitmaps``, and its file node."""
    return [
        {"node-name": "disk0", "image": {"virtual-size": GIB}, "dirty-bitmaps": list(bitmaps)},
        {"node-name": "#block070", "image": {"virtual-size": 200704}},
    ]


HEALTHY = {"name": BITMAP, "recording": True, "busy": False, "persistent": True}


def test_backup_files_are_named_by_guest_and_id() -> None:
    assert backup_path(Path("/b"), "web-1", "web-1-x") == Path("/b/web-1/web-1-x.qcow2")
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(BackupError, match="plain file name"):
            backup_path(Path("/b"), "web-1", bad)


def test_the_bitmap_is_usable_unless_missing_inconsistent_or_busy() -> None:
    assert bitmap_usable(nodes(HEALTHY), "disk0") == (True, True)
    assert bitmap_usable(nodes(), "disk0") == (False, False)
    assert bitmap_usable(nodes(HEALTHY | {"inconsistent": True}), "disk0") == (True, False)
    assert bitmap_usable(nodes(HEALTHY | {"busy": True}), "disk0") == (True, False)
    assert bitmap_usable(nodes({"name": "other"}), "disk0") == (False, False)
    assert virtual_size(nodes(), "disk0") == GIB
    with pytest.raises(BackupError, match="no block node 'disk1'"):
        virtual_size(nodes(), "disk1")


def test_an_incremental_falls_back_to_full_when_changes_were_not_tracked(tmp_path: Path) -> None:
    parent = tmp_path / "b1.qcow2"
    parent.write_bytes(b"")
    inc = BackupRequest("b2", "incremental", str(parent))
    assert choose_mode(inc, bitmap=(True, True)) == ("incremental", "")
    assert choose_mode(inc, bitmap=(False, False))[0] == "full"
    assert "inconsistent" in choose_mode(inc, bitmap=(True, False))[1]
    gone = BackupRequest("b2", "incremental", str(tmp_path / "gone.qcow2"))
    assert "is gone" in choose_mode(gone, bitmap=(True, True))[1]
    assert choose_mode(BackupRequest("b2", "incremental"), bitmap=(True, True))[0] == "full"
    assert choose_mode(BackupRequest("b1", "full"), bitmap=(True, True)) == ("full", "")
    with pytest.raises(BackupError, match="mode 'snapshot'"):
        choose_mode(BackupRequest("b1", "snapshot"), bitmap=(True, True))


def test_a_full_backup_restarts_change_tracking_in_the_same_transaction() -> None:
    kinds = [a["type"] for a in full_actions("disk0", (False, False))]
    assert kinds == ["block-dirty-bitmap-add", "blockdev-backup"]
    add = full_actions("disk0", (False, False))[0]["data"]
    assert add == {"node": "disk0", "name": BITMAP, "persistent": True}
    assert [a["type"] for a in full_actions("disk0", (True, True))] == [
        "block-dirty-bitmap-clear",
        "blockdev-backup",
    ]
    assert [a["type"] for a in full_actions("disk0", (True, False))] == [
        "block-dirty-bitmap-add",  # an inconsistent one was removed first: it cannot be cleared
        "blockdev-backup",
    ]
    job = full_actions("disk0", (True, True))[-1]["data"]
    assert job["sync"] == "full" and "bitmap" not in job and job["target"] == TARGET_NODE
    incremental = backup_job("disk0", "incremental")
    assert incremental["sync"] == "incremental" and incremental["bitmap"] == BITMAP
    assert incremental["auto-dismiss"] is False  # its error is read before it goes


class FakeQemu:
    """A monitor whose backup job concludes with ``error`` (or succeeds)."""

    name = "vm"

    def __init__(self, error: str | None) -> None:
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.jobs: list[dict[str, Any]] = []
        self.target_added = False
        self.bitmaps: list[dict[str, Any]] = []

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        args = dict(arguments or {})
        self.calls.append((command, args))
        if command == "query-named-block-nodes":
            extra = [{"node-name": TARGET_NODE, "image": {}}] if self.target_added else []
            return nodes(*self.bitmaps) + extra
        if command == "query-jobs":
            return self.jobs
        if command == "blockdev-add":
            self.target_added = True
        elif command == "blockdev-del":
            self.target_added = False
        elif command == "transaction":
            for action in args["actions"]:
                if action["type"] == "block-dirty-bitmap-add":
                    self.bitmaps.append(HEALTHY)
            self.jobs = [self.job("concluded", 1 << 20)]
        elif command == "block-dirty-bitmap-remove":
            self.bitmaps.clear()
        elif command == "job-dismiss":
            self.jobs = []
        return {}

    def job(self, status: str, done: int) -> dict[str, Any]:
        job = {"id": JOB, "status": status, "current-progress": done, "total-progress": GIB}
        return job | ({"error": self.error} if self.error else {})

    async def query_status(self) -> str:
        return "running"


@pytest.fixture
def no_qemu_img(monkeypatch: pytest.MonkeyPatch) -> None:
    def create(qemu_img: str, path: Path, size: int, backing: str | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"QFI\xfb")

    monkeypatch.setattr(_backup, "_create_image", create)


@pytest.mark.usefixtures("no_qemu_img")
async def test_a_failed_full_backup_leaves_no_file_no_node_and_no_bitmap(tmp_path: Path) -> None:
    qemu = FakeQemu("No space left on device")
    path = tmp_path / "vm" / "b1.qcow2"
    job = Backup(qemu, node="disk0", path=path, request=BackupRequest("b1", "full"), qemu_img="-")
    with pytest.raises(BackupError, match="No space left on device"):
        await job.run()
    assert list((tmp_path / "vm").iterdir()) == []
    assert not qemu.target_added and qemu.jobs == []
    # the next incremental must not chain to a point in time no backup holds
    assert qemu.bitmaps == []


@pytest.mark.usefixtures("no_qemu_img")
async def test_a_full_backup_reports_progress_and_renames_into_place(tmp_path: Path) -> None:
    qemu = FakeQemu(None)
    seen: list[tuple[int, int]] = []
    path = tmp_path / "vm" / "b1.qcow2"
    job = Backup(
        qemu,
        node="disk0",
        path=path,
        request=BackupRequest("b1", "incremental", str(tmp_path / "none.qcow2")),
        qemu_img="-",
        on_progress=lambda done, total: seen.append((done, total)),
    )
    done = await job.run()
    assert (done.mode, done.path, done.bytes) == ("full", str(path), 4)
    assert [p.name for p in path.parent.iterdir()] == ["b1.qcow2"]
    assert seen == [(1 << 20, GIB)]
    assert [c for c, _ in qemu.calls].count("transaction") == 1
    assert ("blockdev-del", {"node-name": TARGET_NODE}) in qemu.calls


@pytest.mark.usefixtures("no_qemu_img")
async def test_an_inconsistent_bitmap_is_replaced_before_the_full_backup(tmp_path: Path) -> None:
    qemu = FakeQemu(None)
    qemu.bitmaps = [HEALTHY | {"inconsistent": True}]  # QEMU was killed with it in use
    parent = tmp_path / "b1.qcow2"
    parent.write_bytes(b"")
    request = BackupRequest("b2", "incremental", str(parent))
    job = Backup(
        qemu, node="disk0", path=tmp_path / "vm" / "b2.qcow2", request=request, qemu_img="-"
    )
    assert (await job.run()).mode == "full"
    commands = [c for c, _ in qemu.calls]
    # QEMU refuses to add a bitmap in the same transaction that removes its namesake
    assert commands.index("block-dirty-bitmap-remove") < commands.index("transaction")
    assert qemu.bitmaps == [HEALTHY]
