"""SimUsage: a drifting usage model for simulated hosts, so simulations can run hot.

::

    SimUsage(seed=7, base=0.5, swing=0.3, period=600, guests={"db-0": 2.0})
    SimDriver(usage=model).guest_usage() ─> per running guest, per dimension:
        reservation * fraction(t)
        fraction = base + swing * sin(2π t / period + phase(seed, guest, dimension))
                   (a hot guest: its fixed factor instead), capped by the guest's limit

Deterministic: the phases come from ``crc32(seed/guest/dimension)`` and time from the
injected clock, so a run replays. A guest without a reservation in a dimension uses
none of it. A factor above 1 makes a guest use more than it reserved (up to its limit,
if it has one): that is how a host becomes hot by use while its reservations fit.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping

from podium.drivers._protocol import GuestConfig
from podium.drivers._usage import Usage
from podium.model import DIMENSIONS, limits_of


def _check(factor: float, what: str) -> float:
    if not math.isfinite(factor) or factor < 0:
        raise ValueError(f"{what} {factor!r}: a finite factor >= 0 (1.0: its reservation)")
    return float(factor)


class SimUsage:
    """Per-guest usage for simulated hosts. Thread-safe. See the module docstring.

    ``guests`` / ``apps``: fixed factors for chosen guests (or every guest of an app;
    a guest's own entry wins). Raises ``ValueError`` for negative factors, a swing
    larger than the base, or a period that is not positive.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        base: float = 0.5,
        swing: float = 0.2,
        period: float = 600.0,
        guests: Mapping[str, float] | None = None,
        apps: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base, self._swing = _check(base, "base"), _check(swing, "swing")
        if swing > base:
            raise ValueError(f"swing {swing} exceeds base {base}: usage would go negative")
        if not period > 0:
            raise ValueError(f"period {period} s: must be > 0")
        self._seed, self._period, self._clock = seed, float(period), clock
        self._lock = threading.Lock()
        self._guests = {g: _check(f, f"factor of guest {g}") for g, f in (guests or {}).items()}
        self._apps = {a: _check(f, f"factor of app {a}") for a, f in (apps or {}).items()}

    def set_hot(self, name: str, factor: float | None, *, app: bool = False) -> None:
        """Pin guest (or app) ``name`` at ``factor`` times its reservations from now (None:
        let it drift again)."""
        table = self._apps if app else self._guests
        with self._lock:
            if factor is None:
                table.pop(name, None)
            else:
                table[name] = _check(factor, f"factor of {name}")

    def _phase(self, guest: str, dim: str) -> float:
        key = f"{self._seed}/{guest}/{dim}".encode()
        return 2 * math.pi * (zlib.crc32(key) / 0xFFFFFFFF)

    def fraction(self, guest: str, app: str, dim: str, now: float) -> float:
        """The share of its reservation ``guest`` uses in ``dim`` at ``now``."""
        with self._lock:
            fixed = self._guests.get(guest, self._apps.get(app) if app else None)
        if fixed is not None:
            return fixed
        angle = 2 * math.pi * now / self._period + self._phase(guest, dim)
        return self._base + self._swing * math.sin(angle)

    def usage(self, configs: Iterable[GuestConfig]) -> dict[str, Usage]:
        """What each of ``configs`` (the running guests of one host) uses now."""
        now = self._clock()
        out: dict[str, Usage] = {}
        for c in configs:
            limits, app = limits_of(c.spec), str(c.spec.get("app", ""))
            reserved = c.request.to_dict()
            used: Usage = {}
            for dim in DIMENSIONS:
                value = float(reserved[dim]) * self.fraction(c.name, app, dim, now)
                used[dim] = round(min(value, limits.get(dim, math.inf)), 3)
            out[c.name] = used
        return out
