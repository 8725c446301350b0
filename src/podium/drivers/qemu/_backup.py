"""Agentless backup of a running guest's root volume: QMP ``blockdev-backup``.

::

    <backups>/<guest>/.<id>.qcow2.partial   qemu-img create (incremental: -b parent -F qcow2)
      ── blockdev-add (node podium-bk-target)
      ── full:        transaction [bitmap podium-backup add | clear, blockdev-backup sync=full]
         incremental: blockdev-backup sync=incremental bitmap=podium-backup
      ── query-jobs every POLL s ──> on_progress(done, total) ── concluded ── job-dismiss
      ── blockdev-del ── fsync ── rename to <id>.qcow2 ── fsync the folder

The persistent dirty bitmap ``podium-backup`` on the root node records every write since
the point in time of the last backup. QEMU stores it in the qcow2 when it lets go of the
volume, so it survives a stop and start, and a live migration over shared storage; a
QEMU killed leaves it *inconsistent*. An incremental backup copies only those
clusters, into a qcow2 backed by the previous backup, so the chain reads as the whole
disk. Without a usable bitmap an incremental becomes a full backup. A backup that fails
leaves no file, and after a failed full the bitmap is dropped: its start point has no
backup to chain to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from podium.drivers._protocol import BackupError, BackupRequest, BackupResult
from podium.drivers.qemu._errors import QmpError
from podium.drivers.qemu._qmp import Commands

log = logging.getLogger("podium.drivers.qemu")

BITMAP = "podium-backup"
TARGET_NODE = "podium-bk-target"
JOB = "podium-bk"
POLL = 0.1  # seconds between query-jobs samples
MODES = ("full", "incremental")

Progress = Callable[[int, int], None]


def backup_path(backups_dir: Path, guest: str, backup_id: str) -> Path:
    """Where backup ``backup_id`` of ``guest`` lives. Raises :class:`BackupError` for an
    id that is not a plain file name."""
    if not backup_id or "/" in backup_id or backup_id.startswith(".") or "\0" in backup_id:
        raise BackupError(f"backup id {backup_id!r} must be a plain file name")
    return backups_dir / guest / f"{backup_id}.qcow2"


def bitmap_usable(nodes: Sequence[Mapping[str, Any]], node: str) -> tuple[bool, bool]:
    """``(exists, usable)`` of the backup bitmap on ``node``, from
    ``query-named-block-nodes``: usable unless inconsistent or busy."""
    for n in nodes:
        if n.get("node-name") != node:
            continue
        for bitmap in n.get("dirty-bitmaps") or ():
            if bitmap.get("name") == BITMAP:
                usable = not bitmap.get("inconsistent") and not bitmap.get("busy")
                return True, usable and bool(bitmap.get("recording", True))
    return False, False


def virtual_size(nodes: Sequence[Mapping[str, Any]], node: str) -> int:
    """The virtual size in bytes of ``node``. Raises :class:`BackupError`."""
    for n in nodes:
        if n.get("node-name") == node:
            return int(n["image"]["virtual-size"])
    raise BackupError(f"QEMU has no block node {node!r} to back up")


def choose_mode(request: BackupRequest, *, bitmap: tuple[bool, bool]) -> tuple[str, str]:
    """The mode to run and, when it is not the one asked for, why."""
    if request.mode not in MODES:
        raise BackupError(f"backup mode {request.mode!r}: expected one of {MODES}")
    if request.mode == "full":
        return "full", ""
    if not request.parent_path:
        return "full", "no parent backup given"
    if not Path(request.parent_path).is_file():
        return "full", f"the parent backup {request.parent_path} is gone"
    exists, usable = bitmap
    if not exists:
        return "full", "no changes tracked on this volume since a backup"
    if not usable:
        return "full", "the change tracking is inconsistent (QEMU was killed?)"
    return "incremental", ""


def full_actions(node: str, bitmap: tuple[bool, bool]) -> list[dict[str, Any]]:
    """The one transaction of a full backup: (re)start change tracking at the same
    instant the copy's point in time is taken. An unusable bitmap must be removed
    before (QEMU checks an add against the bitmaps as they are before the transaction)."""
    exists, usable = bitmap
    key = {"node": node, "name": BITMAP}
    if exists and usable:
        track = {"type": "block-dirty-bitmap-clear", "data": key}
    else:
        track = {"type": "block-dirty-bitmap-add", "data": {**key, "persistent": True}}
    return [track, {"type": "blockdev-backup", "data": backup_job(node, "full")}]


def backup_job(node: str, mode: str) -> dict[str, Any]:
    """``blockdev-backup`` arguments; the job stays until dismissed, so its error is read."""
    args: dict[str, Any] = {
        "job-id": JOB,
        "device": node,
        "target": TARGET_NODE,
        "sync": mode,
        "auto-dismiss": False,
    }
    if mode == "incremental":
        args["bitmap"] = BITMAP  # bitmap-mode on-success: cleared only if the copy succeeds
    return args


def _qemu_img(qemu_img: str, *args: str) -> str:
    try:
        done = subprocess.run(
            [qemu_img, *args], capture_output=True, text=True, timeout=600, check=False
        )
    except FileNotFoundError as err:
        raise BackupError(f"{qemu_img} is not installed: apt-get install qemu-utils") from err
    except subprocess.TimeoutExpired as err:
        raise BackupError(f"qemu-img {args[0]} took over 10 minutes") from err
    if done.returncode != 0:
        raise BackupError(f"qemu-img {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _create_image(qemu_img: str, path: Path, size: int, backing: str | None) -> None:
    """A fresh qcow2 of ``size`` bytes; with ``backing``, reading through to that backup."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    args = ["create", "-q", "-f", "qcow2"]
    if backing is not None:  # absolute, so the chain reads the same from anywhere
        args += ["-b", str(Path(backing).resolve()), "-F", "qcow2"]
    _qemu_img(qemu_img, *args, str(path), str(size))


def _sync(path: Path) -> None:
    """fsync a file, then its folder (so the name is durable too)."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def existing(path: Path, backup_id: str, qemu_img: str) -> BackupResult | None:
    """The backup already at ``path`` (files appear there only once complete), or ``None``."""
    if not path.exists():
        return None
    info = json.loads(_qemu_img(qemu_img, "info", "--output=json", "-U", str(path)))
    mode = "incremental" if info.get("backing-filename") else "full"
    return BackupResult(backup_id, str(path), mode, path.stat().st_size, 0.0)


class Backup:
    """One backup of one guest's root volume through its QMP monitor."""

    def __init__(
        self,
        monitor: Commands,
        *,
        node: str,
        path: Path,
        request: BackupRequest,
        qemu_img: str,
        on_progress: Progress | None = None,
    ) -> None:
        self.monitor = monitor
        self.node = node
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        self.request = request
        self.qemu_img = qemu_img
        self.on_progress = on_progress
        self.mode = request.mode
        self._added = self._tracking_reset = False

    async def run(self) -> BackupResult:
        """Write the backup. Raises :class:`BackupError` (no file left behind)."""
        done = await asyncio.to_thread(existing, self.path, self.request.id, self.qemu_img)
        if done is not None:  # done before (an agent restarted): the same id, the same file
            return done
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._clear_leftovers()
            nodes = await self.monitor.execute("query-named-block-nodes", {"flat": True})
            bitmap = bitmap_usable(nodes, self.node)
            self.mode, why = choose_mode(self.request, bitmap=bitmap)
            if why:
                log.info("%s: full backup instead of incremental: %s", self.monitor.name, why)
            await self._create_target(virtual_size(nodes, self.node))
            await self._start(bitmap)
            await self._wait()
            await self.monitor.execute("blockdev-del", {"node-name": TARGET_NODE})
            self._added = False
            await asyncio.to_thread(_sync, self.partial)
            await asyncio.to_thread(self.partial.rename, self.path)
            await asyncio.to_thread(_sync, self.path)
        except BaseException as err:
            await self._undo()
            if isinstance(err, QmpError | OSError):
                raise BackupError(f"{self.monitor.name}: backup {self.request.id}: {err}") from err
            raise
        took = (loop.time() - started) * 1000
        size = self.path.stat().st_size
        return BackupResult(self.request.id, str(self.path), self.mode, size, took)

    async def _clear_leftovers(self) -> None:
        """A job or target node left by an agent that died mid-backup would block this one."""
        jobs = await self.monitor.execute("query-jobs")
        if any(j.get("id") == JOB for j in jobs):
            await self._end_job()
        nodes = await self.monitor.execute("query-named-block-nodes", {"flat": True})
        if any(n.get("node-name") == TARGET_NODE for n in nodes):
            await self.monitor.execute("blockdev-del", {"node-name": TARGET_NODE})

    async def _create_target(self, size: int) -> None:
        backing = self.request.parent_path if self.mode == "incremental" else None
        await asyncio.to_thread(_create_image, self.qemu_img, self.partial, size, backing)
        target = {
            "driver": "qcow2",
            "node-name": TARGET_NODE,
            "file": {"driver": "file", "filename": str(self.partial)},
        }
        await self.monitor.execute("blockdev-add", target)
        self._added = True

    async def _start(self, bitmap: tuple[bool, bool]) -> None:
        if self.mode == "full":
            exists, usable = bitmap
            if exists and not usable:  # inconsistent (QEMU was killed): it cannot be cleared
                key = {"node": self.node, "name": BITMAP}
                await self.monitor.execute("block-dirty-bitmap-remove", key)
            actions = full_actions(self.node, bitmap)
            await self.monitor.execute("transaction", {"actions": actions})
            self._tracking_reset = True
        else:
            await self.monitor.execute("blockdev-backup", backup_job(self.node, "incremental"))

    async def _wait(self) -> None:
        """Poll the job to its end, reporting progress. Raises :class:`BackupError`."""
        while True:
            jobs = await self.monitor.execute("query-jobs")
            job = next((j for j in jobs if j.get("id") == JOB), None)
            if job is None:
                raise BackupError(f"{self.monitor.name}: the backup job vanished")
            done, total = int(job.get("current-progress", 0)), int(job.get("total-progress", 0))
            if self.on_progress is not None:
                self.on_progress(done, total)
            if job.get("status") in ("concluded", "null"):
                await self.monitor.execute("job-dismiss", {"id": JOB})
                if job.get("error"):
                    raise BackupError(f"{self.monitor.name}: backup failed: {job['error']}")
                return
            await asyncio.sleep(POLL)

    async def _end_job(self) -> None:
        """Cancel the job if it runs, wait for it to conclude, dismiss it (bounded)."""
        with contextlib.suppress(QmpError):
            await self.monitor.execute("job-cancel", {"id": JOB})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            jobs = await self.monitor.execute("query-jobs")
            job = next((j for j in jobs if j.get("id") == JOB), None)
            if job is None:
                return
            if job.get("status") in ("concluded", "null"):
                await self.monitor.execute("job-dismiss", {"id": JOB})
                return
            await asyncio.sleep(POLL)

    async def _undo(self) -> None:
        """After a failure (or cancellation): no job, no target node, no partial file;
        a full backup's fresh change tracking is dropped (it would chain to nothing)."""
        with contextlib.suppress(QmpError):
            jobs = await self.monitor.execute("query-jobs")
            if any(j.get("id") == JOB for j in jobs):
                await self._end_job()
        if self._added:
            with contextlib.suppress(QmpError):
                await self.monitor.execute("blockdev-del", {"node-name": TARGET_NODE})
        if self._tracking_reset:
            with contextlib.suppress(QmpError):
                key = {"node": self.node, "name": BITMAP}
                await self.monitor.execute("block-dirty-bitmap-remove", key)
        self.partial.unlink(missing_ok=True)
