"""The driver protocol: how an agent runs guests on its host.

A driver owns the local reality of one host: guest processes (QEMU) or their model
(sim). The agent decides *what* should run; the driver only does it and says what is.
Beyond :class:`Driver`, a driver may offer :class:`LiveMigration`,
:class:`BlockBackup` and :class:`ConsoleSource` (check with ``isinstance``).

Live migration, seen from the two hosts::

    target: prepare_incoming ─> incoming (QEMU -incoming, vCPUs stopped) ──activate──> running
    source: running ──migrate_out──> (pre-copy, progress) ──> source QEMU gone ─> stopped
                                          └─ failed / stalled / cancelled ─> still running
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from podium.model import Resources


class DriverError(Exception):
    """Root of driver errors (``podium.drivers``).

    ::

        DriverError
        ├── GuestNotFound          the driver does not know the guest
        ├── GuestBusy              the guest is active; stop it first
        ├── InsufficientResources  the guest does not fit in what is free on the host
        ├── GuestKilled            the guest was killed (fenced, crashed) while starting
        ├── MigrationError         a live migration failed; the source still runs
        └── BackupError            a backup failed; the guest and earlier backups are intact
    """

    retryable: bool = False


class GuestNotFound(DriverError):
    """The driver does not know the guest (never created, or destroyed)."""


class GuestBusy(DriverError):
    """The operation needs a stopped guest, and this one is active."""


class InsufficientResources(DriverError):
    """Starting the guest would exceed the host's capacity in some dimension."""

    retryable = True  # capacity may free up


class GuestKilled(DriverError):
    """The guest was killed (fence, crash) before it finished starting."""

    retryable = True


class MigrationError(DriverError):
    """A live migration failed or stalled: the source is left running (or the incoming
    destination left waiting), and nothing ran twice."""

    retryable = True


class BackupError(DriverError):
    """A backup failed: the guest runs on, no partial backup file is left behind."""

    retryable = True


class DriverGuestState(enum.StrEnum):
    """A guest's state on its host, as the driver sees it."""

    DEFINED = "defined"  # created, never started
    STARTING = "starting"  # start in progress; counts against capacity
    RUNNING = "running"  # up; counts against capacity
    STOPPING = "stopping"  # graceful stop in progress; counts against capacity
    INCOMING = "incoming"  # migration destination: QEMU waits (vCPUs stopped); counts
    STOPPED = "stopped"  # not running (stopped, or killed); resources free
    FAILED = "failed"  # could not start, or died; resources free; see message

    @property
    def active(self) -> bool:
        """Whether the guest holds host resources (a process exists or is coming up)."""
        return self in (
            DriverGuestState.STARTING,
            DriverGuestState.RUNNING,
            DriverGuestState.STOPPING,
            DriverGuestState.INCOMING,
        )


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """What to run: one guest at one binding epoch. ``spec`` is the guest's JSON spec."""

    name: str
    uid: str
    epoch: int
    spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def request(self) -> Resources:
        return Resources.from_dict(dict(self.spec.get("request", {})))


@dataclass(frozen=True, slots=True)
class GuestInfo:
    """What the driver knows of one guest."""

    name: str
    uid: str
    epoch: int
    state: DriverGuestState
    message: str = ""
    since: float = 0.0  # clock time of the last state change


@runtime_checkable
class Driver(Protocol):
    """Runs guests on one host. One instance per host; the agent is its only caller.

    Contract shared by every implementation (``tests/unit/drivers`` runs one suite
    over each):

    - Async methods are called from one event loop; the agent never runs two
      operations on the same guest at once, but runs operations on different guests
      concurrently.
    - ``kill`` and ``kill_all`` are synchronous and thread-safe: the agent's watchdog
      thread calls them to fence the host even when the event loop is blocked. They
      must not wait on the event loop and must finish promptly (well under 100 ms).
    - Surviving an agent restart: a new driver instance on the same host reports the
      guests already running through ``list`` (adoption); creating the driver never
      stops anything.
    """

    @property
    def kind(self) -> str:
        """Registry name of the driver (``"sim"``, ``"qemu"``), sent at registration."""
        ...

    async def create(self, config: GuestConfig) -> GuestInfo:
        """Define a guest (or update a stopped one to ``config``'s epoch and spec).

        Idempotent: the same config again is a no-op. Raises :class:`GuestBusy` if the
        guest is active at another epoch (stop it first). Starts nothing.
        """
        ...

    async def start(self, name: str) -> GuestInfo:
        """Start a created guest; return once it runs.

        Idempotent: a running guest is returned as is. Raises :class:`GuestNotFound`;
        :class:`InsufficientResources` (nothing started, guest left ``failed`` with the
        reason); :class:`GuestKilled` if killed while starting (left ``stopped``); other
        :class:`DriverError` (left ``failed``). Cancelled: the guest is left ``stopped``.
        """
        ...

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        """Stop a guest gracefully, killing it after ``timeout`` seconds.

        Idempotent; stopping an unknown guest returns ``None``. Leaves it ``stopped``.
        """
        ...

    def kill(self, name: str) -> None:
        """Stop a guest now, without grace. Idempotent; unknown guests are ignored.

        Synchronous and thread-safe (see the class docstring). Leaves it ``stopped``;
        a start in progress then raises :class:`GuestKilled`.
        """
        ...

    def kill_all(self) -> list[str]:
        """Kill every active guest (self-fencing); return their names. Thread-safe."""
        ...

    async def destroy(self, name: str) -> None:
        """Forget a stopped guest and free what it held locally (not shared volumes).

        Idempotent. Raises :class:`GuestBusy` if the guest is active.
        """
        ...

    async def list(self) -> list[GuestInfo]:
        """Every guest the driver knows, active or not (sorted by name)."""
        ...

    async def status(self, name: str) -> GuestInfo | None:
        """One guest, or ``None`` if the driver does not know it."""
        ...


# -- live migration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    """One sample of a migration in flight (QEMU's ``query-migrate``)."""

    status: str  # QEMU's: setup | active | pre-switchover | device | completed | failed | ...
    transferred: int  # bytes of RAM sent so far
    remaining: int  # bytes of RAM still to send
    total: int  # bytes of guest RAM
    dirty_rate: float  # bytes/s the guest dirties (dirty-pages-rate * page size)
    expected_downtime_ms: float
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """A completed migration, in QEMU's own figures."""

    uri: str
    total_ms: float
    downtime_ms: float  # vCPUs stopped on both ends
    transferred: int  # bytes


@runtime_checkable
class LiveMigration(Protocol):
    """Moves a running guest to another host of the same driver, without stopping it."""

    async def prepare_incoming(self, config: GuestConfig, *, listen: str) -> str:
        """Start ``config`` as a migration destination listening on address ``listen``.

        The guest's vCPUs never run before :meth:`activate`. Checks capacity as ``start``
        does (:class:`InsufficientResources`, guest left ``failed``). Returns the URI the
        source sends to (``tcp:IP:PORT`` for QEMU). Leaves the guest ``incoming`` (active:
        ``stop``, ``kill`` and ``destroy`` work as usual). Idempotent for the same config
        while incoming (same URI, also after an agent restart); :class:`GuestBusy` if the
        guest is active otherwise.
        """
        ...

    async def migrate_out(
        self,
        name: str,
        uri: str,
        *,
        on_progress: Callable[[MigrationProgress], None] | None = None,
        stall_timeout: float = 30.0,
    ) -> MigrationResult:
        """Send a running guest to ``uri`` (pre-copy with auto-converge).

        Returns only once the source process is gone; the guest is then ``stopped``
        here with message ``migrated to <uri>``, and calling again returns the same
        result. Raises :class:`MigrationError` with the source still running if the
        migration fails, or moves no bytes for ``stall_timeout`` seconds (it is
        cancelled); also if the guest is not running. Cancelled: the migration is
        cancelled, the source runs on. A migration already in flight or completed
        (the agent restarted) is followed, not started again.
        """
        ...

    async def activate(self, name: str) -> GuestInfo:
        """Let an incoming guest whose migration completed run here: ``running``.

        Idempotent for a guest already running. Raises :class:`MigrationError` (guest
        left ``incoming``) if its incoming migration has not completed;
        :class:`GuestNotFound`.
        """
        ...


# -- backup ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupRequest:
    """One backup of all of a guest's volumes (root and LUNs), at one point in time."""

    id: str  # names the files: <backups_dir>/<guest>/<id>.qcow2 (root; see the driver)
    mode: str  # "full" | "incremental"
    parent_path: str | None = None  # incremental: the root's previous backup in the chain
    target: str = "local"  # "local": this host's backups folder; "replica": its replica folder
    # incremental: each LUN volume's ("<profile>/<volume>") previous backup in the chain
    parent_volumes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackupResult:
    """A backup written, whole and synced."""

    id: str
    path: str  # the root volume's backup
    mode: str  # the mode done: "full" when an incremental was not possible
    bytes: int  # size of the backup files, all volumes together
    duration_ms: float
    volumes: Mapping[str, str] = field(default_factory=dict)  # LUN volume id -> its backup


@runtime_checkable
class BlockBackup(Protocol):
    """Agentless backups: the hypervisor copies a running guest's disk (no guest agent)."""

    async def backup(
        self,
        name: str,
        request: BackupRequest,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> BackupResult:
        """Back up a running guest's volumes (root and LUNs) while it runs and writes,
        all at one point in time, into ``request.target``'s folder.

        Full: a point-in-time copy, and the start of the change tracking the next
        incremental to the same target uses. Incremental: only what changed since the
        previous backup to that target, each volume in a file backed by its previous
        backup (``parent_path``, ``parent_volumes``); a full one instead (``mode`` says
        so) when changes were not tracked on some volume (no previous backup there, QEMU
        was killed). ``on_progress(done, total)`` in bytes, all volumes together. The
        same id again returns the existing backup. Raises :class:`BackupError` (no file
        left behind; also for a target this host has no folder for),
        :class:`GuestNotFound`.
        """
        ...


@runtime_checkable
class ConsoleSource(Protocol):
    """Drivers whose guests have a serial console."""

    def console(self, name: str) -> str:
        """The console text of the guest's last boot on this host (empty if none)."""
        ...
