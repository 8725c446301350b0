"""The QMP side of agentless backup, without QEMU: where files go per target and volume,
which mode runs, the one transaction that starts every volume's copy, and what a failure
leaves (nothing). Real QEMU runs in tests/integration/qemu/test_qemu_backup.py and
test_qemu_backup_volumes.py."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import BackupError, BackupRequest
from podium.drivers.qemu import _backup
from podium.drivers.qemu._backup import (
    BITMAP,
    BITMAPS,
    JOB,
    TARGET_NODE,
    Backup,
    Volume,
    backup_job,
    backup_path,
    backup_volumes,
    bitmap_usable,
    choose_mode,
    start_actions,
    target_dir,
    virtual_size,
    volume_key,
)

GIB = 1 << 30


def nodes(*bitmaps: Mapping[str, Any], luns: Mapping[str, list[Any]] = {}) -> list[dict[str, Any]]:
    """A query-named-block-nodes reply: the root node with ``bitmaps``, its file node, and
    LUN nodes (``luns``: node -> its bitmaps)."""
    return [
        {"node-name": "disk0", "image": {"virtual-size": GIB}, "dirty-bitmaps": list(bitmaps)},
        {"node-name": "#block070", "image": {"virtual-size": 200704}},
        *(
            {"node-name": n, "image": {"virtual-size": 2 * GIB}, "dirty-bitmaps": b}
            for n, b in luns.items()
        ),
    ]


def root(tmp_path: Path, parent: str | None = None) -> list[Volume]:
    return [Volume("", "disk0", tmp_path / "vm" / "b1.qcow2", parent)]


HEALTHY = {"name": BITMAP, "recording": True, "busy": False, "persistent": True}


def test_backup_files_are_named_by_guest_volume_and_id() -> None:
    assert backup_path(Path("/b"), "web-1", "web-1-x") == Path("/b/web-1/web-1-x.qcow2")
    lun = backup_path(Path("/b"), "web-1", "web-1-x", "db/data")
    assert lun == Path("/b/web-1/db+data/web-1-x.qcow2")
    replica = backup_path(Path("/r"), "web-1", "web-1-x", target="replica")
    assert replica == Path("/r/web-1/root/web-1-x.qcow2")
    assert backup_path(Path("/r"), "w", "i", "db/logs", target="replica") == Path(
        "/r/w/db+logs/i.qcow2"
    )
    assert (volume_key(""), volume_key("db/data"), volume_key("a.b/c-d")) == (
        "root",
        "db+data",
        "a.b+c-d",
    )
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(BackupError, match="plain file name"):
            backup_path(Path("/b"), "web-1", bad)


def test_replica_backups_need_a_replica_folder() -> None:
    assert target_dir("local", Path("/b"), None) == Path("/b")
    assert target_dir("replica", Path("/b"), Path("/r")) == Path("/r")
    with pytest.raises(BackupError, match=r"no replica folder .* --replica-dir DIR"):
        target_dir("replica", Path("/b"), None)
    with pytest.raises(BackupError, match="target 'tape'"):
        target_dir("tape", Path("/b"), Path("/r"))


def test_a_request_covers_the_root_and_every_lun_with_its_own_parent() -> None:
    request = BackupRequest(
        "g-2",
        "incremental",
        "/r/g/root/g-1.qcow2",
        "replica",
        {"db/data": "/r/g/db+data/g-1.qcow2"},
    )
    luns = {"db/data": "hba0-lun0", "db/logs": "hba0-lun1"}
    volumes = backup_volumes(Path("/r"), "g", request, root_node="disk0", luns=luns)
    assert volumes == [
        Volume("", "disk0", Path("/r/g/root/g-2.qcow2"), "/r/g/root/g-1.qcow2"),
        Volume("db/data", "hba0-lun0", Path("/r/g/db+data/g-2.qcow2"), "/r/g/db+data/g-1.qcow2"),
        Volume("db/logs", "hba0-lun1", Path("/r/g/db+logs/g-2.qcow2"), None),
    ]


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
    inc = [Volume("", "disk0", tmp_path / "b2.qcow2", str(parent))]
    ok = (True, True)
    assert choose_mode("incremental", inc, [ok]) == ("incremental", "")
    assert choose_mode("incremental", inc, [(False, False)])[0] == "full"
    assert "inconsistent" in choose_mode("incremental", inc, [(True, False)])[1]
    assert "interrupted" in choose_mode("incremental", inc, [ok], interrupted=True)[1]
    gone = [Volume("", "disk0", tmp_path / "b2.qcow2", str(tmp_path / "gone.qcow2"))]
    assert "is gone" in choose_mode("incremental", gone, [ok])[1]
    assert choose_mode("incremental", [Volume("", "disk0", parent)], [ok])[0] == "full"
    assert choose_mode("full", inc, [ok]) == ("full", "")
    with pytest.raises(BackupError, match="mode 'snapshot'"):
        choose_mode("snapshot", inc, [ok])
    # one LUN without a parent (or without tracking) makes the whole backup full
    lun = Volume("db/data", "hba0-lun0", tmp_path / "d.qcow2", None)
    mode, why = choose_mode("incremental", [*inc, lun], [ok, ok])
    assert (mode, why) == ("full", "no parent backup given for LUN volume db/data")
    lun = Volume("db/data", "hba0-lun0", tmp_path / "d.qcow2", str(parent))
    assert choose_mode("incremental", [*inc, lun], [ok, ok])[0] == "incremental"
    assert "LUN volume db/data" in choose_mode("incremental", [*inc, lun], [ok, (False, False)])[1]


def test_a_full_backup_restarts_change_tracking_in_the_same_transaction() -> None:
    disk = [Volume("", "disk0", Path("/b/g/1.qcow2"))]

    def full(bitmap: tuple[bool, bool]) -> list[dict[str, Any]]:
        return start_actions("full", disk, [bitmap])

    assert [a["type"] for a in full((False, False))] == [
        "block-dirty-bitmap-add",
        "blockdev-backup",
    ]
    add = full((False, False))[0]["data"]
    assert add == {"node": "disk0", "name": BITMAP, "persistent": True}
    assert [a["type"] for a in full((True, True))] == [
        "block-dirty-bitmap-clear",
        "blockdev-backup",
    ]
    assert [a["type"] for a in full((True, False))] == [
        "block-dirty-bitmap-add",  # an inconsistent one was removed first: it cannot be cleared
        "blockdev-backup",
    ]
    job = full((True, True))[-1]["data"]
    assert job["sync"] == "full" and "bitmap" not in job and job["target"] == f"{TARGET_NODE}-0"
    incremental = backup_job("disk0", "incremental")
    assert incremental["sync"] == "incremental" and incremental["bitmap"] == BITMAP
    assert incremental["auto-dismiss"] is False  # its error is read before it goes


def test_all_volumes_start_in_one_transaction_each_with_the_targets_bitmap() -> None:
    volumes = [
        Volume("", "disk0", Path("/r/g/root/2.qcow2"), "/r/g/root/1.qcow2"),
        Volume("db/data", "hba0-lun0", Path("/r/g/db+data/2.qcow2"), "/r/g/db+data/1.qcow2"),
    ]
    ok = [(True, True), (True, True)]
    replica = BITMAPS["replica"]
    assert replica != BITMAP  # one bitmap per target: two chains never share one
    inc = start_actions("incremental", volumes, ok, bitmap=replica)
    assert [(a["type"], a["data"]["device"], a["data"]["bitmap"]) for a in inc] == [
        ("blockdev-backup", "disk0", replica),
        ("blockdev-backup", "hba0-lun0", replica),
    ]
    assert [a["data"]["job-id"] for a in inc] == [f"{JOB}-0", f"{JOB}-1"]
    assert [a["data"]["target"] for a in inc] == [f"{TARGET_NODE}-0", f"{TARGET_NODE}-1"]
    full = start_actions("full", volumes, [(False, False), (True, True)], bitmap=replica)
    assert [(a["type"], a["data"].get("node") or a["data"]["device"]) for a in full] == [
        ("block-dirty-bitmap-add", "disk0"),
        ("blockdev-backup", "disk0"),
        ("block-dirty-bitmap-clear", "hba0-lun0"),
        ("blockdev-backup", "hba0-lun0"),
    ]
    assert {a["data"]["name"] for a in full if "name" in a["data"]} == {replica}


class FakeQemu:
    """A monitor over the root node and LUN nodes ``luns`` whose backup jobs conclude at
    once, with the error ``errors`` names for their node (or succeed)."""

    name = "vm"

    def __init__(self, error: str | None = None, *, luns: tuple[str, ...] = ()) -> None:
        self.errors = {"disk0": error} if error else {}
        self.luns = luns
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.jobs: list[dict[str, Any]] = []
        self.targets: set[str] = set()
        self.bitmaps: dict[str, list[dict[str, Any]]] = {n: [] for n in ("disk0", *luns)}

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        args = dict(arguments or {})
        self.calls.append((command, args))
        if command == "query-named-block-nodes":
            extra = [{"node-name": t, "image": {}} for t in sorted(self.targets)]
            luns = {n: self.bitmaps[n] for n in self.luns}
            return nodes(*self.bitmaps["disk0"], luns=luns) + extra
        if command == "query-jobs":
            return self.jobs
        if command == "blockdev-add":
            self.targets.add(args["node-name"])
        elif command == "blockdev-del":
            self.targets.discard(args["node-name"])
        elif command == "transaction":
            for action in args["actions"]:
                data = action["data"]
                if action["type"] == "block-dirty-bitmap-add":
                    self.bitmaps[data["node"]].append(HEALTHY | {"name": data["name"]})
                elif action["type"] == "blockdev-backup":
                    self.jobs.append(self.job(data["job-id"], data["device"]))
        elif command == "block-dirty-bitmap-remove":
            self.bitmaps[args["node"]] = [
                b for b in self.bitmaps[args["node"]] if b["name"] != args["name"]
            ]
        elif command == "job-dismiss":
            self.jobs = [j for j in self.jobs if j["id"] != args["id"]]
        return {}

    def job(self, job_id: str, node: str) -> dict[str, Any]:
        size = GIB if node == "disk0" else 2 * GIB
        job = {"id": job_id, "status": "concluded", "current-progress": size // 4}
        job["total-progress"] = size
        error = self.errors.get(node)
        return job | ({"error": error} if error else {})

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
    job = Backup(qemu, volumes=root(tmp_path), request=BackupRequest("b1", "full"), qemu_img="-")
    with pytest.raises(BackupError, match="No space left on device"):
        await job.run()
    assert list((tmp_path / "vm").iterdir()) == []
    assert not qemu.targets and qemu.jobs == []
    # the next incremental must not chain to a point in time no backup holds
    assert qemu.bitmaps == {"disk0": []}


@pytest.mark.usefixtures("no_qemu_img")
async def test_a_full_backup_reports_progress_and_renames_into_place(tmp_path: Path) -> None:
    qemu = FakeQemu(None)
    seen: list[tuple[int, int]] = []
    volumes = root(tmp_path, str(tmp_path / "none.qcow2"))
    path = volumes[0].path
    job = Backup(
        qemu,
        volumes=volumes,
        request=BackupRequest("b1", "incremental", str(tmp_path / "none.qcow2")),
        qemu_img="-",
        on_progress=lambda done, total: seen.append((done, total)),
    )
    done = await job.run()
    assert (done.mode, done.path, done.bytes, dict(done.volumes)) == ("full", str(path), 4, {})
    assert [p.name for p in path.parent.iterdir()] == ["b1.qcow2"]
    assert seen == [(GIB // 4, GIB)]
    assert [c for c, _ in qemu.calls].count("transaction") == 1
    assert ("blockdev-del", {"node-name": f"{TARGET_NODE}-0"}) in qemu.calls


@pytest.mark.usefixtures("no_qemu_img")
async def test_an_inconsistent_bitmap_is_replaced_before_the_full_backup(tmp_path: Path) -> None:
    qemu = FakeQemu(None)
    qemu.bitmaps["disk0"] = [HEALTHY | {"inconsistent": True}]  # QEMU was killed with it in use
    parent = tmp_path / "b1.qcow2"
    parent.write_bytes(b"")
    request = BackupRequest("b2", "incremental", str(parent))
    volumes = [Volume("", "disk0", tmp_path / "vm" / "b2.qcow2", str(parent))]
    job = Backup(qemu, volumes=volumes, request=request, qemu_img="-")
    assert (await job.run()).mode == "full"
    commands = [c for c, _ in qemu.calls]
    # QEMU refuses to add a bitmap in the same transaction that removes its namesake
    assert commands.index("block-dirty-bitmap-remove") < commands.index("transaction")
    assert qemu.bitmaps == {"disk0": [HEALTHY]}


def lun_volumes(tmp_path: Path, backup_id: str, parents: Mapping[str, str] = {}) -> list[Volume]:
    request = BackupRequest(backup_id, "incremental", parents.get(""), "replica", parents)
    luns = {"db/data": "hba0-lun0", "db/logs": "hba0-lun1"}
    return backup_volumes(tmp_path / "r", "vm", request, root_node="disk0", luns=luns)


@pytest.mark.usefixtures("no_qemu_img")
async def test_every_volume_is_backed_up_in_one_transaction_then_incrementally(
    tmp_path: Path,
) -> None:
    qemu = FakeQemu(luns=("hba0-lun0", "hba0-lun1"))
    seen: list[tuple[int, int]] = []
    first = BackupRequest("b1", "full", target="replica")
    job = Backup(
        qemu,
        volumes=lun_volumes(tmp_path, "b1"),
        request=first,
        qemu_img="-",
        on_progress=lambda done, total: seen.append((done, total)),
    )
    full = await job.run()
    r = tmp_path / "r" / "vm"
    assert full.path == str(r / "root" / "b1.qcow2") and full.mode == "full"
    assert full.volumes == {
        "db/data": str(r / "db+data" / "b1.qcow2"),
        "db/logs": str(r / "db+logs" / "b1.qcow2"),
    }
    assert full.bytes == 3 * 4
    assert seen == [(5 * GIB // 4, 5 * GIB)]  # all volumes together
    assert [c for c, _ in qemu.calls].count("transaction") == 1
    replica = BITMAPS["replica"]
    assert {n: [b["name"] for b in bs] for n, bs in qemu.bitmaps.items()} == {
        "disk0": [replica],
        "hba0-lun0": [replica],
        "hba0-lun1": [replica],
    }
    # the next one builds each volume on its own parent
    parents = {"": full.path, **full.volumes}
    second = BackupRequest("b2", "incremental", full.path, "replica", dict(full.volumes))
    qemu.calls.clear()
    job = Backup(qemu, volumes=lun_volumes(tmp_path, "b2", parents), request=second, qemu_img="-")
    inc = await job.run()
    assert inc.mode == "incremental" and inc.volumes["db/logs"] == str(r / "db+logs" / "b2.qcow2")
    [(_, transaction)] = [(c, a) for c, a in qemu.calls if c == "transaction"]
    assert [a["data"]["sync"] for a in transaction["actions"]] == ["incremental"] * 3
    # a local backup does not touch the replica bitmaps: it has its own
    qemu.calls.clear()
    local = root(tmp_path / "local")
    await Backup(qemu, volumes=local, request=BackupRequest("l1", "full"), qemu_img="-").run()
    assert {b["name"] for b in qemu.bitmaps["disk0"]} == {replica, BITMAP}
    assert not [a for c, a in qemu.calls if c == "block-dirty-bitmap-remove"]


@pytest.mark.usefixtures("no_qemu_img")
async def test_a_failed_incremental_drops_the_bitmaps_of_the_volumes_that_were_copied(
    tmp_path: Path,
) -> None:
    """Their changes were cleared from tracking with no file to show for them: the next
    backup must be full, not an incremental that misses those changes."""
    qemu = FakeQemu(luns=("hba0-lun0", "hba0-lun1"))
    first = BackupRequest("b1", "full", target="replica")
    full = await Backup(
        qemu, volumes=lun_volumes(tmp_path, "b1"), request=first, qemu_img="-"
    ).run()
    qemu.errors = {"hba0-lun1": "Input/output error"}
    parents = {"": full.path, **full.volumes}
    second = BackupRequest("b2", "incremental", full.path, "replica", dict(full.volumes))
    job = Backup(qemu, volumes=lun_volumes(tmp_path, "b2", parents), request=second, qemu_img="-")
    with pytest.raises(BackupError, match="LUN volume db/logs: Input/output error"):
        await job.run()
    assert [n for n, bs in qemu.bitmaps.items() if bs] == ["hba0-lun1"]  # its copy failed
    assert not qemu.targets and qemu.jobs == []
    files = sorted(p.name for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert files == ["b1.qcow2"] * 3  # nothing of b2 left


@pytest.mark.usefixtures("no_qemu_img")
async def test_an_interrupted_attempt_makes_the_retry_full(tmp_path: Path) -> None:
    """An agent that died after the copies but before every rename: the retry of the same
    id must not chain an incremental to bitmaps that attempt already cleared."""
    qemu = FakeQemu(luns=("hba0-lun0", "hba0-lun1"))
    first = BackupRequest("b1", "full", target="replica")
    full = await Backup(
        qemu, volumes=lun_volumes(tmp_path, "b1"), request=first, qemu_img="-"
    ).run()
    parents = {"": full.path, **full.volumes}
    volumes = lun_volumes(tmp_path, "b2", parents)
    volumes[1].path.parent.mkdir(parents=True, exist_ok=True)
    volumes[1].path.write_bytes(b"QFI\xfb")  # renamed before the agent died; the others not
    second = BackupRequest("b2", "incremental", full.path, "replica", dict(full.volumes))
    done = await Backup(qemu, volumes=volumes, request=second, qemu_img="-").run()
    assert done.mode == "full" and all(v.path.is_file() for v in volumes)
