"""Measured usage: what each guest of a host uses, as its driver measures it.

::

    qemu: /proc/PID/stat (CPU s), -m (MiB), QMP query-blockstats (ops), tap bytes ─┐
    sim:  SimUsage model (a drifting fraction of the reservations)  ──────────────┤
                                                                                   v
    UsageSource.guest_usage() ── {guest: {cpu, memory_mib, iops, net_mbps}} ──> agent
        (at most every --usage-interval s, only when it moved) ──> the guest's status
        ──> the rebalancer: a host is *hot* by what its guests use, not only reserve

Units are the reservations' own: ``cpu`` in cores (CPU seconds per wall second),
``memory_mib`` in MiB, ``iops`` in operations/s, ``net_mbps`` in megabits/s (both
directions together). Rates are averaged since the previous call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from podium.model import DIMENSIONS, Resources

Usage = dict[str, float]  # one value per dimension of podium.model.DIMENSIONS


@runtime_checkable
class UsageSource(Protocol):
    """Drivers that measure what their guests use (check with ``isinstance``)."""

    async def guest_usage(self) -> dict[str, Resources | dict[str, float]] | None:
        """Per running guest, its usage over the four dimensions since the last call.

        The first call may answer only what needs no previous sample (memory), or
        nothing. Guests it cannot measure this time are left out. Returns ``None`` when
        this host measures nothing (the agent then stops asking). Must not block the
        event loop; raises :class:`~podium.drivers.DriverError` when the measurement
        failed as a whole (the agent tries again later).
        """
        ...


def as_usage(value: Resources | Mapping[str, float]) -> Usage:
    """``value`` as a :data:`Usage` (missing dimensions 0). Raises ``ValueError`` for a
    negative, infinite or non-numeric value, or an unknown dimension."""
    raw = value.to_dict() if isinstance(value, Resources) else dict(value)
    unknown = sorted(set(raw) - set(DIMENSIONS))
    if unknown:
        raise ValueError(f"unknown usage dimension(s) {', '.join(unknown)}: use {DIMENSIONS}")
    out: Usage = {}
    for dim in DIMENSIONS:
        number = float(raw.get(dim, 0.0))
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"usage {dim}={raw.get(dim)!r}: a finite number >= 0")
        out[dim] = number
    return out
