"""Host capacity accounting shared by the drivers: does one more guest fit?"""

from __future__ import annotations

from collections.abc import Iterable

from podium.model import DIMENSIONS, Resources


def shortfall(host: str, capacity: Resources, used: Iterable[Resources], request: Resources) -> str:
    """Empty if ``request`` fits in ``capacity`` minus ``used``; else why not, in one line."""
    total = Resources()
    for r in used:
        total = total + r
    free = capacity - total
    for dim, need, have in zip(DIMENSIONS, request.as_tuple(), free.as_tuple(), strict=True):
        if need > have + 1e-9:
            return f"does not fit on {host}: needs {dim} {need:g}, {have:g} free"
    return ""
