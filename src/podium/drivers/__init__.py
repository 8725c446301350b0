"""Drivers: how an agent makes guests real on its host.

::

    agent ──plan──> Driver protocol ──┬── SimDriver  (sim: in-process model, capacity + timing)
                                      └── QemuDriver (qemu: real QEMU guests over QMP)

    create ──> start ──> (running) ──> stop | kill ──> destroy
                    kill_all (watchdog thread: self-fencing, works while the loop is blocked)

    optional protocols: LiveMigration (prepare_incoming, migrate_out, activate),
                        BlockBackup (backup), ConsoleSource (console),
                        FlowSource (flow_counters: bytes between guests; _flows)
                        UsageSource (guest_usage: what each guest uses; _usage)

Vocabulary: a *config* is one guest at one binding epoch (what to run); an *info* is
what the driver observes of it. Drivers live in the explicit :data:`DRIVERS` registry,
keyed by the name ``podium agent --driver`` takes; each factory is called as
``factory(name=host, capacity=resources, data_dir=path)`` (``podium agent --data-dir``;
drivers that keep nothing on disk ignore it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from podium.drivers._flows import FlowSource
from podium.drivers._protocol import (
    BackupError,
    BackupRequest,
    BackupResult,
    BlockBackup,
    ConsoleSource,
    Driver,
    DriverError,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestInfo,
    GuestKilled,
    GuestNotFound,
    InsufficientResources,
    LiveMigration,
    MigrationError,
    MigrationProgress,
    MigrationResult,
)
from podium.drivers._qos import GuestQos
from podium.drivers._sim_traffic import SimTraffic
from podium.drivers._sim_usage import SimUsage
from podium.drivers._usage import Usage, UsageSource, as_usage
from podium.drivers.qemu import qemu_driver
from podium.drivers.sim import SimDriver
from podium.model import Resources


class DriverFactory(Protocol):
    """Builds the driver of one host; ``data_dir`` is where it may keep state on disk."""

    def __call__(
        self, *, name: str, capacity: Resources, data_dir: Path | None = None
    ) -> Driver: ...


DRIVERS: dict[str, DriverFactory] = {"qemu": qemu_driver, "sim": SimDriver}

__all__ = [
    "DRIVERS",
    "BackupError",
    "BackupRequest",
    "BackupResult",
    "BlockBackup",
    "ConsoleSource",
    "Driver",
    "DriverError",
    "DriverFactory",
    "DriverGuestState",
    "FlowSource",
    "GuestBusy",
    "GuestConfig",
    "GuestInfo",
    "GuestKilled",
    "GuestNotFound",
    "GuestQos",
    "InsufficientResources",
    "LiveMigration",
    "MigrationError",
    "MigrationProgress",
    "MigrationResult",
    "SimDriver",
    "SimTraffic",
    "SimUsage",
    "Usage",
    "UsageSource",
    "as_usage",
]
