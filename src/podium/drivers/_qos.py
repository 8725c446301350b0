"""The QoS a driver holds a guest to, as it reports it (``driver.qos(name)``).

Read from the stored spec (``qos: {DIM: {limit?, shares?}}``, see
:mod:`podium.model`); each driver says in ``notes`` what it was asked for and does not
enforce, and why (the qemu driver: see ``podium.drivers.qemu._qos``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podium.model import limits_of, shares_of


@dataclass(frozen=True, slots=True)
class GuestQos:
    """Limits (by dimension, only those set) and shares (every dimension) of one guest."""

    limits: Mapping[str, float] = field(default_factory=dict)
    shares: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what is asked for and not enforced, and why

    @classmethod
    def of(cls, spec: Mapping[str, Any], notes: tuple[str, ...] = ()) -> GuestQos:
        return cls(limits_of(spec), shares_of(spec), notes)

    def summary(self) -> str:
        """A short line for a guest's status message (empty when nothing is noted)."""
        return "qos: " + "; ".join(self.notes) if self.notes else ""
