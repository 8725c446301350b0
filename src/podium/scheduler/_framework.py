"""The scheduler protocol and the plugin framework that implements it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from podium.scheduler._constraints import NearFilter, TaintFilter
from podium.scheduler._plugins import (
    BatchState,
    BestFitScore,
    FilterPlugin,
    FitFilter,
    HostStateFilter,
    ScorePlugin,
    SpreadFilter,
)
from podium.scheduler._scores import HealthScore, SpreadScore, TrafficScore
from podium.scheduler._table import (
    Floats,
    GuestRequest,
    PlacementRequest,
    PlacementResult,
    name_hash,
)

SCORE_TOLERANCE = 1e-9


@runtime_checkable
class Scheduler(Protocol):
    """Decides where guests go. Pure: reads its input, writes nothing anywhere.

    - ``place`` never puts a guest on a host that is not ready, cordoned, draining or
      unhealthy, or whose taints it does not tolerate; never exceeds any host's
      capacity in any dimension (counting ``hosts.allocated`` and every guest placed
      earlier in the same batch); never breaks a spread (counting ``request.placed``)
      or a ``near`` (once a guest of a near app is placed, in or before the batch).
    - Guests are placed in priority order (higher first); a guest that does not fit
      does not stop the others. Within a priority, guests moving off a lost host go
      first, then guests without ``near`` (so the apps they follow are placed before
      them), then guests with a spread (the most constrained), then bigger ones.
    - Deterministic: the same request gives the same result, whatever the order of
      ``request.guests`` or of the host rows.
    - It does not mutate ``request``.
    """

    def place(self, request: PlacementRequest) -> PlacementResult:
        """Place every guest of ``request`` it can; say why for the others."""
        ...


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``web-2`` before ``web-10``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)
    )


def _mix(
    values: np.ndarray[tuple[int], np.dtype[np.uint64]],
) -> np.ndarray[tuple[int], np.dtype[np.uint64]]:
    """splitmix64 finaliser, vectorised (uint64 arithmetic wraps, as intended)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class FrameworkScheduler:
    """Filters, then weighted scores, then a tie-break seeded from the guest's name.

    ::

        for each guest (priority; moving, no near, spread, big first; then name):
            mask  = AND of filters (cheap first)       ──none──> reason from per-filter counts
            score = sum of weight * score plugin (0..100) over the hosts left
            host  = best score; ties: hash(guest, host)  ──> commit (consume virtually)
    """

    def __init__(
        self,
        filters: Sequence[FilterPlugin],
        scores: Sequence[tuple[ScorePlugin, float]],
    ) -> None:
        self.filters = tuple(filters)
        self.scores = tuple(scores)

    def place(self, request: PlacementRequest) -> PlacementResult:
        table = request.hosts
        batch = BatchState.start(request)
        mean_capacity = table.capacity.mean(axis=0) if len(table) else np.ones(4)
        scale = np.where(mean_capacity > 0, mean_capacity, 1.0)

        def order(
            g: GuestRequest,
        ) -> tuple[int, bool, bool, bool, float, tuple[tuple[int, int | str], ...]]:
            size = float((np.array(g.request.as_tuple()) / scale).max())
            near = bool(g.near)
            return (-g.priority, not g.moving, near, g.spread is None, -size, _natural(g.name))

        placements: dict[str, str] = {}
        unplaced: dict[str, str] = {}
        for guest in sorted(request.guests, key=order):
            vector: Floats = np.array(guest.request.as_tuple(), dtype=np.float64)
            row, reason = self._place_one(batch, guest, vector)
            if row is None:
                unplaced[guest.name] = reason
            else:
                batch.commit(guest, vector, row)
                placements[guest.name] = table.names[row]
        return PlacementResult(placements, unplaced)

    def _place_one(
        self, batch: BatchState, guest: GuestRequest, vector: Floats
    ) -> tuple[int | None, str]:
        table = batch.table
        masks = [f.filter(batch, guest, vector) for f in self.filters]
        feasible = np.logical_and.reduce(masks) if masks else np.ones(len(table), dtype=bool)
        rows = np.flatnonzero(feasible)
        if rows.size == 0:
            return None, self._explain(batch, guest, vector, masks)
        if rows.size == 1:  # no choice to score
            return int(rows[0]), ""
        total = np.zeros(rows.size, dtype=np.float64)
        for plugin, weight in self.scores:
            score = plugin.score(batch, guest, vector, rows)
            total += weight * np.minimum(np.maximum(score, 0.0), 100.0)  # ufuncs: no wrappers
        best = rows[total >= total.max() - SCORE_TOLERANCE]
        if best.size == 1:
            return int(best[0]), ""
        seed = np.uint64(name_hash(guest.name))
        ties = _mix(table.host_hash[best] ^ seed)
        return int(best[int(np.argmin(ties))]), ""

    def _explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, masks: list[np.ndarray]
    ) -> str:
        n = len(batch.table)
        if n == 0:
            return "0/0 hosts fit: no hosts have joined the cluster"
        phrases: list[str] = []
        remaining = np.ones(n, dtype=bool)
        for plugin, mask in zip(self.filters, masks, strict=True):
            rejected = remaining & ~mask
            if rejected.any():
                phrases += [
                    f"{count} {text}"
                    for count, text in plugin.explain(batch, guest, vector, rejected)
                    if count
                ]
            remaining &= mask
        return f"0/{n} hosts fit: " + ", ".join(phrases)


def default_scheduler() -> FrameworkScheduler:
    """Host state, taints, fit, spread and near filters (cheap first); four scores.

    Weights, in points of a 0..100 score:

    - best-fit 1.0: the base. Packing keeps whole hosts free for big guests, for
      failover and to power down; a host 60% full beats an empty one by 60 points.
    - spread 0.5: the host holding the most replicas of the app loses 25 points
      (up to 50 with its rack and site), so replicas fan out over hosts about as
      full, yet do not open empty hosts when fuller ones are 25-50 points ahead (a
      hard ``spread`` is a filter, not a score).
    - traffic 1.0: a host keeping all of a heavy talker's traffic local gains up to
      100, more than any packing difference: local traffic spares the NICs and the
      network and is faster; light talkers (well under 1 MB/s) gain next to nothing.
    - health 0.5: a host at risk 0.5 loses 25 points, so it gets new guests only
      when clearly the better fit; at 0.8 and above the host-state filter drops it.
    """
    return FrameworkScheduler(
        filters=[HostStateFilter(), TaintFilter(), FitFilter(), SpreadFilter(), NearFilter()],
        scores=[
            (BestFitScore(), 1.0),
            (SpreadScore(), 0.5),
            (TrafficScore(), 1.0),
            (HealthScore(), 0.5),
        ],
    )
