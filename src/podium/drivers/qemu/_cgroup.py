"""CPU limits and shares for QEMU processes: one cgroup per guest, v1 or v2 behind one interface.

::

    <cpu hierarchy>/podium/<host>/<guest>      QEMU's PID (every thread) moved in at start
        v1 (cgroup "cpu" controller):  cpu.cfs_period_us  cpu.cfs_quota_us  cpu.shares
        v2 (unified, "cpu" enabled):   cpu.max ("QUOTA PERIOD" | "max PERIOD")  cpu.weight

A *quota* is a number of CPUs (``qos.cpu.limit``; 1.5 = 150 ms of CPU time per 100 ms
period, counting QEMU's own threads with the vCPUs). *Shares* are podium's (default
:data:`~podium.model.DEFAULT_SHARES`): v1 ``cpu.shares = 1024 * shares / DEFAULT_SHARES``,
v2 ``cpu.weight = 100 * shares / DEFAULT_SHARES`` (both clamped to the kernel's range).
Guests compete under ``podium/<host>``, so shares weigh guests of one host against each
other. :func:`detect` finds a usable hierarchy in ``/proc/self/mounts`` or says why not.
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from podium.model import DEFAULT_SHARES

PERIOD_US = 100_000
BASE = "podium"
MOUNTS = Path("/proc/self/mounts")


class CgroupError(Exception):
    """A cgroup could not be made, set or removed (the message says which file and why)."""


@dataclass(frozen=True, slots=True)
class CpuSettings:
    """What a guest's cgroup holds, read back from its files."""

    path: Path
    quota: float | None  # CPUs; None: unlimited
    weight: int  # the kernel's unit: v1 cpu.shares, v2 cpu.weight
    pids: tuple[int, ...]


class CpuControl(Protocol):
    """One cgroup hierarchy with the cpu controller. Synchronous; safe from any thread."""

    @property
    def version(self) -> int:
        """1 or 2."""
        ...

    @property
    def root(self) -> Path:
        """Where the hierarchy is mounted."""
        ...

    def place(self, group: str, pid: int, *, quota: float | None, shares: int) -> Path:
        """Make (or reuse) cgroup ``group``, set its quota and weight, move ``pid`` (the
        whole process) in. Idempotent. Returns its folder. Raises :class:`CgroupError`."""
        ...

    def read(self, group: str) -> CpuSettings | None:
        """The settings of ``group``, or None if it does not exist."""
        ...

    def remove(self, group: str) -> None:
        """Remove ``group`` once empty; a missing group is no error. Raises
        :class:`CgroupError` if processes are still in it."""
        ...


def group_name(host: str, guest: str) -> str:
    """The cgroup of ``guest`` on ``host`` (relative to the hierarchy's root)."""
    return f"{BASE}/{host}/{guest}"


def v1_shares(shares: int) -> int:
    return max(2, min(262_144, round(1024 * shares / DEFAULT_SHARES)))


def v2_weight(shares: int) -> int:
    return max(1, min(10_000, round(100 * shares / DEFAULT_SHARES)))


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as err:
        raise CgroupError(f"writing {value!r} to {path}: {err.strerror or err}") from err


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise CgroupError(f"reading {path}: {err.strerror or err}") from err


def _make(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CgroupError(f"creating cgroup {folder}: {err.strerror or err}") from err


def _rmdir(root: Path, group: str) -> None:
    folder = root / group
    try:
        folder.rmdir()
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno == errno.EBUSY:
            raise CgroupError(f"cgroup {folder} still holds processes") from err
        raise CgroupError(f"removing cgroup {folder}: {err.strerror or err}") from err


def _pids(folder: Path) -> tuple[int, ...]:
    raw = _read(folder / "cgroup.procs")
    return tuple(int(p) for p in raw.split())


@dataclass(frozen=True, slots=True)
class CgroupV1Cpu:
    """The v1 ``cpu`` controller mounted at ``root`` (e.g. ``/sys/fs/cgroup/cpu``)."""

    root: Path
    version: int = 1

    def place(self, group: str, pid: int, *, quota: float | None, shares: int) -> Path:
        folder = self.root / group
        _make(folder)
        _write(folder / "cpu.cfs_period_us", str(PERIOD_US))
        limit = -1 if quota is None else max(1000, math.ceil(quota * PERIOD_US))
        _write(folder / "cpu.cfs_quota_us", str(limit))
        _write(folder / "cpu.shares", str(v1_shares(shares)))
        _write(folder / "cgroup.procs", str(pid))
        return folder

    def read(self, group: str) -> CpuSettings | None:
        folder = self.root / group
        if not folder.is_dir():
            return None
        quota = int(_read(folder / "cpu.cfs_quota_us"))
        period = int(_read(folder / "cpu.cfs_period_us"))
        cpus = None if quota < 0 else quota / period
        return CpuSettings(folder, cpus, int(_read(folder / "cpu.shares")), _pids(folder))

    def remove(self, group: str) -> None:
        _rmdir(self.root, group)


@dataclass(frozen=True, slots=True)
class CgroupV2Cpu:
    """A cgroup v2 (unified) hierarchy at ``root`` whose controllers include ``cpu``."""

    root: Path
    version: int = 2

    def place(self, group: str, pid: int, *, quota: float | None, shares: int) -> Path:
        folder = self.root / group
        _make(folder)
        # v2 hands a controller down only where every ancestor enables it for its children
        parent = self.root
        for part in Path(group).parts[:-1]:
            control = parent / "cgroup.subtree_control"
            if "cpu" not in _read(control).split():
                _write(control, "+cpu")
            parent = parent / part
        if "cpu" not in _read(parent / "cgroup.subtree_control").split():
            _write(parent / "cgroup.subtree_control", "+cpu")
        limit = "max" if quota is None else str(max(1000, math.ceil(quota * PERIOD_US)))
        _write(folder / "cpu.max", f"{limit} {PERIOD_US}")
        _write(folder / "cpu.weight", str(v2_weight(shares)))
        _write(folder / "cgroup.procs", str(pid))
        return folder

    def read(self, group: str) -> CpuSettings | None:
        folder = self.root / group
        if not folder.is_dir():
            return None
        limit, period = _read(folder / "cpu.max").split()
        cpus = None if limit == "max" else int(limit) / int(period)
        return CpuSettings(folder, cpus, int(_read(folder / "cpu.weight")), _pids(folder))

    def remove(self, group: str) -> None:
        _rmdir(self.root, group)


def detect(mounts: Path = MOUNTS) -> CpuControl | str:
    """A writable hierarchy with the cpu controller (v1 first: this platform's is), or
    the reason there is none."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError as err:
        return f"cannot read {mounts}: {err.strerror or err}"
    v2: Path | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point, kind, options = Path(fields[1]), fields[2], fields[3].split(",")
        if kind == "cgroup" and "cpu" in options:
            return _writable(CgroupV1Cpu(point))
        if kind == "cgroup2" and v2 is None:
            try:
                if "cpu" in (point / "cgroup.controllers").read_text().split():
                    v2 = point
            except OSError:
                continue
    if v2 is not None:
        return _writable(CgroupV2Cpu(v2))
    return "no cgroup hierarchy offers the cpu controller (v1 cpu, or v2 with cpu enabled)"


def _writable(control: CpuControl) -> CpuControl | str:
    if not os.access(control.root, os.W_OK):
        return (
            f"cgroup v{control.version} at {control.root} is not writable (the agent runs as root)"
        )
    return control
