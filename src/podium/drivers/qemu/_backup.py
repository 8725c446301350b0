"""Agentless backup of a running guest's volumes (root and LUNs): QMP ``blockdev-backup``.

::

    per volume: <dir>/.<id>.qcow2.partial   qemu-img create (incremental: -b parent -F qcow2)
      ── blockdev-add (node podium-bk-target-<i>)
      ── ONE transaction for all volumes (one point in time, consistent across them):
         full:        [bitmap add | clear, blockdev-backup sync=full] per volume
         incremental: [blockdev-backup sync=incremental bitmap=<target's bitmap>] per volume
      ── query-jobs every POLL s ──> on_progress(done, total) ── all concluded ── job-dismiss
      ── blockdev-del ── fsync ── rename each to <id>.qcow2 ── fsync the folders

Where the files go (``backup_path``), per *target*:

    local    <backups>/<guest>/<id>.qcow2                  the root volume (as always)
             <backups>/<guest>/<volume-key>/<id>.qcow2     each LUN volume
    replica  <replica>/<guest>/<volume-key>/<id>.qcow2     every volume, the root too

The *volume key* is ``root`` for the root volume and the LUN's volume id with ``/``
replaced by ``+`` (``db/data`` -> ``db+data``): volume ids are two parts of lowercase
letters, digits, ``-``, ``_`` and ``.``, so a key never holds ``/`` or ``..``, and no LUN
key is ``root`` or is shared by two ids. The *replica* folder is the other site's
storage mounted on this host (``podium agent --replica-dir``).

Each volume has a persistent dirty bitmap per target (:data:`BITMAPS`: ``podium-backup``
for local, ``podium-replica`` for replica), so the two chains never steal each other's
changes. QEMU stores the bitmaps in the qcow2 when it lets go of the volume, so they
survive a stop and start, and a live migration over shared storage; a QEMU killed leaves
them *inconsistent*. An incremental backup copies only the clusters its bitmap marks,
into a qcow2 backed by that volume's previous backup, so each chain reads as the whole
volume. Without a usable bitmap (or a parent) on any one volume the whole backup becomes
full, so a backup is all full or all incremental. A backup that fails leaves no file;
the bitmaps it moved on are dropped (a failed full: all of them; a failed incremental:
those whose copy succeeded), since their start point has no backup to chain to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.drivers._protocol import BackupError, BackupRequest, BackupResult
from podium.drivers.qemu._errors import QmpError
from podium.drivers.qemu._qmp import Commands

log = logging.getLogger("podium.drivers.qemu")

TARGETS = ("local", "replica")
BITMAPS = {"local": "podium-backup", "replica": "podium-replica"}  # one per target
BITMAP = BITMAPS["local"]
TARGET_NODE = "podium-bk-target"  # + "-<i>": the i-th volume's backup file (0: the root)
JOB = "podium-bk"  # + "-<i>"
POLL = 0.1  # seconds between query-jobs samples
MODES = ("full", "incremental")
ROOT_KEY = "root"

Progress = Callable[[int, int], None]
Bitmap = tuple[bool, bool]  # (exists, usable)


@dataclass(frozen=True, slots=True)
class Volume:
    """One volume of a backup: what QEMU calls it, where its file goes, what it builds on."""

    volume: str  # "" for the root volume, else the LUN's volume id "<profile>/<volume>"
    node: str  # its block node in QEMU
    path: Path  # its backup file
    parent: str | None = None  # its previous backup in the chain (incremental)


def volume_key(volume: str) -> str:
    """The folder name of a volume's backups: ``root``, or ``db/data`` -> ``db+data``."""
    return volume.replace("/", "+") if volume else ROOT_KEY


def target_dir(target: str, backups_dir: Path, replica_dir: Path | None) -> Path:
    """The folder backups to ``target`` go to. Raises :class:`BackupError` for an unknown
    target, or ``replica`` on a host without a replica folder."""
    if target == "local":
        return backups_dir
    if target != "replica":
        raise BackupError(f"backup target {target!r}: expected one of {', '.join(TARGETS)}")
    if replica_dir is None:
        raise BackupError(
            "this host has no replica folder for replica backups: start its agent with "
            "--replica-dir DIR (the other site's storage, mounted here)"
        )
    return replica_dir


def backup_path(
    base: Path, guest: str, backup_id: str, volume: str = "", *, target: str = "local"
) -> Path:
    """Where ``volume``'s file (``""``: the root's) of backup ``backup_id`` of ``guest``
    lives under ``base`` (see the module docstring). Raises :class:`BackupError` for an
    id that is not a plain file name."""
    if not backup_id or "/" in backup_id or backup_id.startswith(".") or "\0" in backup_id:
        raise BackupError(f"backup id {backup_id!r} must be a plain file name")
    if target == "local" and not volume:
        return base / guest / f"{backup_id}.qcow2"
    return base / guest / volume_key(volume) / f"{backup_id}.qcow2"


def backup_volumes(
    base: Path, guest: str, request: BackupRequest, *, root_node: str, luns: Mapping[str, str]
) -> list[Volume]:
    """The root volume, then each LUN (``luns``: volume id -> block node), of ``request``."""

    def path(volume: str) -> Path:
        return backup_path(base, guest, request.id, volume, target=request.target)

    root = Volume("", root_node, path(""), request.parent_path)
    parents = request.parent_volumes
    return [root, *(Volume(v, node, path(v), parents.get(v)) for v, node in luns.items())]


def bitmap_usable(nodes: Sequence[Mapping[str, Any]], node: str, name: str = BITMAP) -> Bitmap:
    """``(exists, usable)`` of bitmap ``name`` on ``node``, from
    ``query-named-block-nodes``: usable unless inconsistent or busy."""
    for n in nodes:
        if n.get("node-name") != node:
            continue
        for bitmap in n.get("dirty-bitmaps") or ():
            if bitmap.get("name") == name:
                usable = not bitmap.get("inconsistent") and not bitmap.get("busy")
                return True, usable and bool(bitmap.get("recording", True))
    return False, False


def virtual_size(nodes: Sequence[Mapping[str, Any]], node: str) -> int:
    """The virtual size in bytes of ``node``. Raises :class:`BackupError`."""
    for n in nodes:
        if n.get("node-name") == node:
            return int(n["image"]["virtual-size"])
    raise BackupError(f"QEMU has no block node {node!r} to back up")


def _name(v: Volume) -> str:
    return f"LUN volume {v.volume}" if v.volume else "the root volume"


def choose_mode(
    mode: str, volumes: Sequence[Volume], bitmaps: Sequence[Bitmap], *, interrupted: bool = False
) -> tuple[str, str]:
    """The mode to run for all ``volumes`` (their ``bitmaps`` in the same order) and,
    when it is not ``mode``, why. ``interrupted``: an earlier attempt of this backup may
    have moved the bitmaps on (only a full backup is safe then)."""
    if mode not in MODES:
        raise BackupError(f"backup mode {mode!r}: expected one of {MODES}")
    if mode == "full":
        return "full", ""
    if interrupted:
        return "full", "an earlier attempt of this backup was interrupted"
    for v, (exists, usable) in zip(volumes, bitmaps, strict=True):
        if not v.parent:
            return "full", f"no parent backup given for {_name(v)}"
        if not Path(v.parent).is_file():
            return "full", f"the parent backup {v.parent} of {_name(v)} is gone"
        if not exists:
            return "full", f"no changes tracked on {_name(v)} since a backup"
        if not usable:
            return "full", f"the change tracking of {_name(v)} is inconsistent (QEMU was killed?)"
    return "incremental", ""


def backup_job(node: str, mode: str, *, index: int = 0, bitmap: str = BITMAP) -> dict[str, Any]:
    """``blockdev-backup`` arguments of the ``index``-th volume; the job stays until
    dismissed, so its error is read."""
    args: dict[str, Any] = {
        "job-id": f"{JOB}-{index}",
        "device": node,
        "target": f"{TARGET_NODE}-{index}",
        "sync": mode,
        "auto-dismiss": False,
    }
    if mode == "incremental":
        args["bitmap"] = bitmap  # bitmap-mode on-success: cleared only if the copy succeeds
    return args


def start_actions(
    mode: str, volumes: Sequence[Volume], bitmaps: Sequence[Bitmap], *, bitmap: str = BITMAP
) -> list[dict[str, Any]]:
    """The one transaction that starts every volume's copy at the same instant. A full
    backup also (re)starts each volume's change tracking at that instant; an unusable
    bitmap must be removed before (QEMU checks an add against the bitmaps as they are
    before the transaction)."""
    actions: list[dict[str, Any]] = []
    for i, (v, (exists, usable)) in enumerate(zip(volumes, bitmaps, strict=True)):
        if mode == "full":
            key = {"node": v.node, "name": bitmap}
            if exists and usable:
                actions.append({"type": "block-dirty-bitmap-clear", "data": key})
            else:
                add = {**key, "persistent": True}
                actions.append({"type": "block-dirty-bitmap-add", "data": add})
        job = backup_job(v.node, mode, index=i, bitmap=bitmap)
        actions.append({"type": "blockdev-backup", "data": job})
    return actions


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


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def existing(volumes: Sequence[Volume], backup_id: str, qemu_img: str) -> BackupResult | None:
    """The backup already there, if every volume's file is (files appear only once
    complete), or ``None``."""
    if not volumes or not all(v.path.exists() for v in volumes):
        return None
    root = volumes[0].path
    info = json.loads(_qemu_img(qemu_img, "info", "--output=json", "-U", str(root)))
    mode = "incremental" if info.get("backing-filename") else "full"
    size = sum(v.path.stat().st_size for v in volumes)
    luns = {v.volume: str(v.path) for v in volumes[1:]}
    return BackupResult(backup_id, str(root), mode, size, 0.0, luns)


def _interrupted(volumes: Sequence[Volume]) -> bool:
    """Whether an earlier attempt left files: partial ones, or some volumes' (not all)."""
    return any(_partial(v.path).exists() or v.path.exists() for v in volumes)


class Backup:
    """One backup of one guest's volumes (the root first) through its QMP monitor."""

    def __init__(
        self,
        monitor: Commands,
        *,
        volumes: Sequence[Volume],
        request: BackupRequest,
        qemu_img: str,
        on_progress: Progress | None = None,
    ) -> None:
        if not volumes:
            raise BackupError("a backup needs at least the root volume")
        self.monitor = monitor
        self.volumes = list(volumes)
        self.request = request
        self.bitmap = BITMAPS.get(request.target, "")
        self.qemu_img = qemu_img
        self.on_progress = on_progress
        self.mode = request.mode
        self._added: set[int] = set()  # volumes whose target node exists
        self._advanced: set[int] = set()  # volumes whose tracking moved to this backup
        self._jobs = [f"{JOB}-{i}" for i in range(len(self.volumes))]

    async def run(self) -> BackupResult:
        """Write the backup. Raises :class:`BackupError` (no file left behind)."""
        if not self.bitmap:
            raise BackupError(f"backup target {self.request.target!r}: expected one of {TARGETS}")
        done = await asyncio.to_thread(existing, self.volumes, self.request.id, self.qemu_img)
        if done is not None:  # done before (an agent restarted): the same id, the same files
            return done
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            interrupted = await self._clear_leftovers()
            nodes = await self.monitor.execute("query-named-block-nodes", {"flat": True})
            bitmaps = [bitmap_usable(nodes, v.node, self.bitmap) for v in self.volumes]
            self.mode, why = choose_mode(
                self.request.mode, self.volumes, bitmaps, interrupted=interrupted
            )
            if why:
                log.info("%s: full backup instead of incremental: %s", self.monitor.name, why)
            for i, v in enumerate(self.volumes):
                await self._create_target(i, v, virtual_size(nodes, v.node))
            await self._start(bitmaps)
            await self._wait()
            for i in sorted(self._added):
                await self.monitor.execute("blockdev-del", {"node-name": f"{TARGET_NODE}-{i}"})
                self._added.discard(i)
            for v in self.volumes:
                await asyncio.to_thread(_sync, _partial(v.path))
            for v in self.volumes:  # the root last: its file is what `existing` reads first
                if v.volume:
                    await asyncio.to_thread(_partial(v.path).rename, v.path)
            await asyncio.to_thread(_partial(self.volumes[0].path).rename, self.volumes[0].path)
            for v in self.volumes:
                await asyncio.to_thread(_sync, v.path)
        except BaseException as err:
            await self._undo()
            if isinstance(err, QmpError | OSError):
                raise BackupError(f"{self.monitor.name}: backup {self.request.id}: {err}") from err
            raise
        took = (loop.time() - started) * 1000
        size = sum(v.path.stat().st_size for v in self.volumes)
        luns = {v.volume: str(v.path) for v in self.volumes[1:]}
        root = str(self.volumes[0].path)
        return BackupResult(self.request.id, root, self.mode, size, took, luns)

    async def _clear_leftovers(self) -> bool:
        """Jobs or target nodes left by an agent that died mid-backup would block this one;
        return whether an earlier attempt left anything (it may have moved bitmaps on)."""
        jobs = await self.monitor.execute("query-jobs")
        left = [j["id"] for j in jobs if str(j.get("id", "")).startswith(JOB + "-")]
        for job in left:
            await self._end_job(job)
        nodes = await self.monitor.execute("query-named-block-nodes", {"flat": True})
        targets = [
            n["node-name"]
            for n in nodes
            if str(n.get("node-name", "")).startswith(TARGET_NODE + "-")
        ]
        for node in targets:
            await self.monitor.execute("blockdev-del", {"node-name": node})
        files = await asyncio.to_thread(_interrupted, self.volumes)
        return bool(left or targets or files)

    async def _create_target(self, index: int, v: Volume, size: int) -> None:
        backing = v.parent if self.mode == "incremental" else None
        partial = _partial(v.path)
        await asyncio.to_thread(v.path.unlink, missing_ok=True)  # an interrupted attempt's
        await asyncio.to_thread(_create_image, self.qemu_img, partial, size, backing)
        target = {
            "driver": "qcow2",
            "node-name": f"{TARGET_NODE}-{index}",
            "file": {"driver": "file", "filename": str(partial)},
        }
        await self.monitor.execute("blockdev-add", target)
        self._added.add(index)

    async def _start(self, bitmaps: Sequence[Bitmap]) -> None:
        if self.mode == "full":
            for v, (exists, usable) in zip(self.volumes, bitmaps, strict=True):
                if exists and not usable:  # inconsistent (QEMU was killed): cannot be cleared
                    key = {"node": v.node, "name": self.bitmap}
                    await self.monitor.execute("block-dirty-bitmap-remove", key)
        actions = start_actions(self.mode, self.volumes, bitmaps, bitmap=self.bitmap)
        await self.monitor.execute("transaction", {"actions": actions})
        if self.mode == "full":
            self._advanced = set(range(len(self.volumes)))

    async def _wait(self) -> None:
        """Poll the jobs to their end, reporting progress. Raises :class:`BackupError`."""
        while True:
            jobs = {j.get("id"): j for j in await self.monitor.execute("query-jobs")}
            missing = [j for j in self._jobs if j not in jobs]
            if missing:
                raise BackupError(f"{self.monitor.name}: backup job(s) {missing} vanished")
            ours = [jobs[j] for j in self._jobs]
            done = sum(int(j.get("current-progress", 0)) for j in ours)
            total = sum(int(j.get("total-progress", 0)) for j in ours)
            if self.on_progress is not None:
                self.on_progress(done, total)
            if all(j.get("status") in ("concluded", "null") for j in ours):
                errors = []
                for i, job in enumerate(ours):
                    await self.monitor.execute("job-dismiss", {"id": self._jobs[i]})
                    if job.get("error"):
                        errors.append(f"{_name(self.volumes[i])}: {job['error']}")
                    elif self.mode == "incremental":  # on-success: its bitmap was cleared
                        self._advanced.add(i)
                if errors:
                    raise BackupError(f"{self.monitor.name}: backup failed: {'; '.join(errors)}")
                return
            await asyncio.sleep(POLL)

    async def _end_job(self, job_id: str) -> None:
        """Cancel a job if it runs, wait for it to conclude, dismiss it (bounded)."""
        with contextlib.suppress(QmpError):
            await self.monitor.execute("job-cancel", {"id": job_id})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            jobs = await self.monitor.execute("query-jobs")
            job = next((j for j in jobs if j.get("id") == job_id), None)
            if job is None:
                return
            if job.get("status") in ("concluded", "null"):
                await self.monitor.execute("job-dismiss", {"id": job_id})
                return
            await asyncio.sleep(POLL)

    async def _undo(self) -> None:
        """After a failure (or cancellation): no job, no target node, no partial file;
        change tracking this backup moved on is dropped (it would chain to nothing)."""
        with contextlib.suppress(QmpError):
            jobs = await self.monitor.execute("query-jobs")
            for job in jobs:
                if job.get("id") not in self._jobs:
                    continue
                concluded = job.get("status") in ("concluded", "null")
                if self.mode == "incremental" and concluded and not job.get("error"):
                    self._advanced.add(self._jobs.index(job["id"]))
                await self._end_job(job["id"])
        for i in sorted(self._added):
            with contextlib.suppress(QmpError):
                await self.monitor.execute("blockdev-del", {"node-name": f"{TARGET_NODE}-{i}"})
        for i in sorted(self._advanced):
            with contextlib.suppress(QmpError):
                key = {"node": self.volumes[i].node, "name": self.bitmap}
                await self.monitor.execute("block-dirty-bitmap-remove", key)
        for v in self.volumes:
            _partial(v.path).unlink(missing_ok=True)
