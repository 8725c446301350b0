"""Drivers: how an agent makes guests real on its host.

::

    agent ──plan──> Driver protocol ──┬── SimDriver  (sim: in-process model, capacity + timing)
                                      └── QemuDriver (qemu: QEMU over QMP; next issue)

    create ──> start ──> (running) ──> stop | kill ──> destroy
                    kill_all (watchdog thread: self-fencing, works while the loop is blocked)

Vocabulary: a *config* is one guest at one binding epoch (what to run); an *info* is
what the driver observes of it. Drivers live in the explicit :data:`DRIVERS` registry,
keyed by the name ``podium agent --driver`` takes; each factory is called as
``factory(name=host, capacity=resources)``.
"""

from __future__ import annotations

from typing import Protocol

from podium.drivers._protocol import (
    Driver,
    DriverError,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestInfo,
    GuestKilled,
    GuestNotFound,
    InsufficientResources,
)
from podium.drivers.sim import SimDriver
from podium.model import Resources


class DriverFactory(Protocol):
    """Builds the driver of one host."""

    def __call__(self, *, name: str, capacity: Resources) -> Driver: ...


DRIVERS: dict[str, DriverFactory] = {"sim": SimDriver}

__all__ = [
    "DRIVERS",
    "Driver",
    "DriverError",
    "DriverFactory",
    "DriverGuestState",
    "GuestBusy",
    "GuestConfig",
    "GuestInfo",
    "GuestKilled",
    "GuestNotFound",
    "InsufficientResources",
    "SimDriver",
]
