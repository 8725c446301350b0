"""One guest as the driver tracks it in memory, and how it is read back from disk.

The driver's lock guards every field but ``monitor``, ``connecting`` and
``qmp_retry_at``, which only the event loop touches (``kill`` from another thread never
does: it bumps ``generation`` and sends SIGKILL by PID).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podium.drivers._protocol import DriverGuestState, GuestConfig, GuestInfo, MigrationResult
from podium.drivers._qos import GuestQos
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._argv import CONSOLE, PIDFILE, QMP_SOCKET
from podium.drivers.qemu._errors import QemuStartError, QmpError
from podium.drivers.qemu._initramfs import find_ready_line
from podium.drivers.qemu._qmp import Monitor, MonitorState
from podium.drivers.qemu._record import Record, load_record

log = logging.getLogger("podium.drivers.qemu")
S = DriverGuestState


@dataclass(slots=True)
class Guest:
    """A guest's config, observed state and QEMU (PID, monitor) on this host."""

    config: GuestConfig
    uuid: str  # QEMU's -uuid
    volume: Path
    state: DriverGuestState
    message: str
    since: float  # clock time of the last state change
    pid: int | None = None
    started: bool = False  # started and not stopped since (persisted)
    taps: tuple[str, ...] = ()
    generation: int = 0  # bumped by every stop/kill, so a start in flight knows it lost
    monitor: Monitor | None = None
    connecting: bool = False  # a monitor connection is being made (event loop only)
    qmp_retry_at: float = 0.0
    paused: bool = False
    guest_shutdown: bool = False  # QMP said the guest powered itself off
    ready: str = ""  # the ready line of the current boot
    incoming: str | None = None  # a migration destination: its URI ("" until known)
    migrated: MigrationResult | None = None  # the guest left this host (source side)
    # The URI this QEMU was told to migrate to. Only such a migration is ever followed: a
    # QEMU that arrived here by migration reports that *incoming* one as "completed".
    outgoing: str | None = None
    qos: GuestQos | None = None  # what its current QEMU is held to (None: not started here)

    @property
    def name(self) -> str:
        return self.config.name

    def info(self) -> GuestInfo:
        c = self.config
        return GuestInfo(c.name, c.uid, c.epoch, self.state, self.message, self.since)

    def running_message(self) -> str:
        """A running guest's status message: paused, or what of its QoS is not enforced."""
        return "paused" if self.paused else (self.qos.summary() if self.qos else "")

    def set(self, state: DriverGuestState, message: str, now: float) -> None:
        self.state, self.message, self.since = state, message, now

    def owned_by(self, generation: int) -> bool:
        """Whether the start at ``generation`` still owns the guest (no stop or kill since)."""
        return self.generation == generation and self.state is S.STARTING

    def record(self, folder: Path) -> Record:
        return Record(
            self.config, self.uuid, self.volume, self.pid, self.started, self.taps,
            folder / QMP_SOCKET, self.incoming, self.migrated, self.outgoing,
        )  # fmt: skip

    async def close_monitor(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            await monitor.close()

    async def wait_gone(self, timeout: float) -> bool:
        """Wait until this guest's QEMU is gone (or ``timeout``); whether it is gone."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while proc.is_running(self.pid, self.uuid):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def reap_previous(self) -> None:
        """Never two runners: the QEMU of a previous start (killed a moment ago, say) must
        be gone before another one starts. Raises :class:`QemuStartError`."""
        if await self.wait_gone(5.0):
            return
        proc.sigkill(self.pid, self.uuid)
        if not await self.wait_gone(5.0):
            raise QemuStartError(f"{self.name}: the previous QEMU (pid {self.pid}) does not exit")

    async def power_off(self, timeout: float) -> bool:
        """Press the ACPI power button (again every second: a press can be lost while the
        guest boots) until QEMU exits or ``timeout``; return whether it exited."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            monitor = self.monitor
            if monitor is not None and monitor.state is MonitorState.CONNECTED:
                with contextlib.suppress(QmpError):
                    await monitor.execute("system_powerdown", timeout=min(timeout, 5.0))
            left = deadline - asyncio.get_running_loop().time()
            if await self.wait_gone(max(0.0, min(1.0, left))):
                return True
            if left <= 1.0:
                return False


def adopt(state_dir: Path, now: Callable[[], float]) -> dict[str, Guest]:
    """Every guest the state folders record; running (or incoming) if its QEMU (PID +
    uuid) still runs."""
    guests: dict[str, Guest] = {}
    for folder in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        rec = load_record(folder)
        if rec is None:
            continue
        pid = rec.pid or proc.read_pidfile(folder / PIDFILE)
        g = Guest(rec.config, rec.uuid, rec.volume, S.DEFINED, "", now(), pid=pid)
        g.started, g.taps, g.migrated = rec.started, rec.taps, rec.migrated
        g.outgoing = rec.outgoing
        alive = proc.is_running(pid, rec.uuid)
        if rec.migrated is not None:
            if alive:  # a source QEMU left stopped after its migration completed: a `cont`
                proc.sigkill(pid, rec.uuid)  # would run the guest twice; it has no use
            g.set(S.STOPPED, f"migrated to {rec.migrated.uri}", now())
            g.started = False
        elif alive and rec.incoming is not None:
            g.incoming = rec.incoming
            g.set(S.INCOMING, f"adopted (pid {pid}): waiting for a migration", now())
        elif alive:
            g.set(S.RUNNING, f"adopted (pid {pid})", now())
            g.started = True
            with contextlib.suppress(OSError):
                g.ready = find_ready_line((folder / CONSOLE).read_text(errors="replace"))
            log.info("adopted guest %s (QEMU pid %s)", rec.config.name, pid)
        elif rec.started or rec.pid:
            g.set(S.STOPPED, f"QEMU (pid {pid}) is gone", now())
        guests[rec.config.name] = g
    return guests
