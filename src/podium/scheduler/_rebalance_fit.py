"""How the rebalancer picks a live migration's target: the scheduler's own filters, plus
a headroom filter on measured usage, over a copy of the host table without the source.

::

    HostTable (reservations placed) ──replace(allocated=now, cordoned=+source/+avoid)──>
    FrameworkScheduler(filters = default filters + Headroom(usage), score = Cool or BestFit)
        ──> one guest placed, or none (the reservations, spreads and usage say no)

Every filter of :func:`podium.scheduler.default_scheduler` applies, so a proposal never
breaks a reservation or a spread; :class:`HeadroomFilter` also keeps the target below
the hot threshold by measured usage, so a move never just makes another host hot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from podium.scheduler._framework import FrameworkScheduler, default_scheduler
from podium.scheduler._plugins import EPS, BatchState, BestFitScore, Phrases, ScorePlugin
from podium.scheduler._table import (
    Bools,
    Floats,
    GuestRequest,
    HostTable,
    Ints,
    PlacementRequest,
)


def utilisation(used: Floats, capacity: Floats) -> Floats:
    """``used / capacity`` per host and dimension (0 where a host lacks the dimension)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: Floats = np.where(capacity > 0, used / np.where(capacity > 0, capacity, 1.0), 0.0)
    return out


class HeadroomFilter:
    """Hosts whose measured usage stays at or below ``limit`` of capacity with the guest."""

    name = "headroom"

    def __init__(self, usage: Floats, guest_usage: Floats, limit: float) -> None:
        self.usage = usage  # (n, 4) measured (or reserved) usage per host
        self.guest_usage = guest_usage  # (4,)
        self.limit = limit

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        cap = batch.table.capacity
        ok: Bools = np.all(
            (self.usage + self.guest_usage <= self.limit * cap + EPS) | (self.guest_usage <= 0),
            axis=1,
        )
        return ok

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        count = int(np.count_nonzero(rejected))
        return [(count, f"would run above {self.limit:.0%} of capacity by usage")]


class CoolScore:
    """Prefer the host whose dominant usage share stays lowest (spreads heat out)."""

    name = "cool"

    def __init__(self, usage: Floats, guest_usage: Floats) -> None:
        self.usage = usage
        self.guest_usage = guest_usage

    def score(self, batch: BatchState, guest: GuestRequest, vector: Floats, rows: Ints) -> Floats:
        cap = batch.table.capacity[rows]
        share = utilisation(self.usage[rows] + self.guest_usage, cap).max(axis=1)
        out: Floats = np.clip(100.0 * (1.0 - share), 0.0, 100.0)
        return out


def choose_target(  # noqa: PLR0917 (the arrays the planner holds, in one call)
    table: HostTable,
    allocated: Floats,
    usage: Floats,
    guest: GuestRequest,
    guest_usage: Floats,
    placed: Mapping[str, Sequence[str]],
    *,
    exclude: Bools,
    hot: float,
    pack: bool = False,
) -> str | None:
    """The best host for ``guest`` among those not in ``exclude``, or None.

    ``allocated``: reservations per host now (the guest's own still on its source, which
    ``exclude`` must hold); ``placed``: hosts of the app's other replicas (spreads).
    ``pack``: best-fit (consolidation) instead of the coolest host.
    """
    view = replace(table, allocated=allocated, cordoned=table.cordoned | exclude)
    base = default_scheduler()
    score: ScorePlugin = CoolScore(usage, guest_usage)
    if pack:
        score = BestFitScore()
    scheduler = FrameworkScheduler(
        filters=[*base.filters, HeadroomFilter(usage, guest_usage, hot)],
        scores=[(score, 1.0)],
    )
    result = scheduler.place(PlacementRequest(view, [guest], dict(placed)))
    return result.placements.get(guest.name)
