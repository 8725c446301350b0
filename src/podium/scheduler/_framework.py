"""The scheduler protocol and the plugin framework that implements it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import groupby
from typing import Protocol, runtime_checkable

import numpy as np

from podium.scheduler._bulk import BULK_MIN, eligible_hosts, is_plain, place_plain, supports
from podium.scheduler._constraints import NearFilter, SiteFilter, TaintFilter
from podium.scheduler._plugins import (
    EPS,
    BatchState,
    BestFitScore,
    FilterPlugin,
    FitFilter,
    HostStateFilter,
    ScorePlugin,
    SpreadFilter,
)
from podium.scheduler._scores import HealthScore, SpreadScore, TrafficIndex, TrafficScore
from podium.scheduler._table import (
    NDIM,
    Bools,
    Floats,
    GuestRequest,
    PlacementRequest,
    PlacementResult,
    name_hash,
)

SCORE_TOLERANCE = 1e-9
_DIGITS = re.compile(r"(\d+)")


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
      them), then guests with a spread (the most constrained), then bigger ones. An
      implementation may place many interchangeable guests of one priority together
      (see :class:`FrameworkScheduler`); then, within that priority, guests moving or
      with a spread (and no ``near``) go before them and the other guests after.
    - Deterministic: the same request gives the same result, whatever the order of
      ``request.guests`` or of the host rows.
    - It does not mutate ``request``.
    """

    def place(self, request: PlacementRequest) -> PlacementResult:
        """Place every guest of ``request`` it can; say why for the others."""
        ...


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``web-2`` before ``web-10``."""
    # split on a capturing group alternates text and digit runs: the odd parts are digits
    parts = _DIGITS.split(name)
    return tuple([(0, int(p)) if i & 1 else (1, p) for i, p in enumerate(parts)])


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

    Bulk path (``_bulk``): when a priority holds at least ``bulk_min`` *plain* guests
    (no spread, near, talks_to or tolerations, not moving, no measured traffic for the
    guest or its app) and every plugin is one of the default kinds, that priority goes

        1. guests moving or with a spread (and no near), one by one, in the order above
        2. the plain guests, at once: the offline planner packs them on the hosts the
           filters allow a plain guest (a host at some risk is not avoided; replicas
           of an app are interleaved, not fanned out); those it leaves are retried one
           by one until one of each request vector fails, which explains the rest
        3. every other guest, one by one, in the order above

    Fewer plain guests, or ``bulk_min=None``: every guest one by one, as above.
    """

    def __init__(
        self,
        filters: Sequence[FilterPlugin],
        scores: Sequence[tuple[ScorePlugin, float]],
        bulk_min: int | None = BULK_MIN,
    ) -> None:
        if bulk_min is not None and bulk_min < 1:
            raise ValueError(
                f"bulk_min must be at least 1 (or None for no bulk path), got {bulk_min}"
            )
        self.filters = tuple(filters)
        self.scores = tuple(scores)
        self.bulk_min = bulk_min

    def place(self, request: PlacementRequest) -> PlacementResult:
        table = request.hosts
        batch = BatchState.start(request)
        guests = list(request.guests)
        vectors = np.array([g.request.as_tuple() for g in guests], dtype=np.float64)
        vectors = vectors.reshape(len(guests), NDIM)
        mean_capacity = table.capacity.mean(axis=0) if len(table) else np.ones(NDIM)
        scale = np.where(mean_capacity > 0, mean_capacity, 1.0)
        sizes = (vectors / scale).max(axis=1).tolist() if guests else []
        keys = [
            (
                -g.priority,
                not g.moving,
                bool(g.near),
                g.spread is None,
                -size,
                _natural(g.name),
                g.name,
            )
            for g, size in zip(guests, sizes, strict=True)
        ]
        order = sorted(range(len(guests)), key=keys.__getitem__)  # name last: a01 vs a1

        placements: dict[str, str] = {}
        unplaced: dict[str, str] = {}

        def one_by_one(indexes: list[int]) -> None:
            for i in indexes:
                guest, vector = guests[i], vectors[i]
                row, reason = self._place_one(batch, guest, vector)
                if row is None:
                    unplaced[guest.name] = reason
                else:
                    batch.commit(guest, vector, row)
                    placements[guest.name] = table.names[row]

        bulk = self.bulk_min is not None and len(guests) >= self.bulk_min
        bulk = bulk and supports(self.filters, [p for p, _ in self.scores])
        traffic = TrafficIndex.of(batch) if bulk else None
        eligible: Bools | None = None
        for _, level in groupby(order, key=lambda i: guests[i].priority):
            indexes = list(level)
            plain = [traffic is not None and is_plain(guests[i], traffic) for i in indexes]
            if self.bulk_min is None or sum(plain) < self.bulk_min:
                one_by_one(indexes)
                continue
            first = [
                i
                for i, p in zip(indexes, plain, strict=True)
                if not p
                and (guests[i].moving or (guests[i].spread is not None and not guests[i].near))
            ]
            one_by_one(first)
            chosen = [i for i, p in zip(indexes, plain, strict=True) if p]
            if eligible is None:  # guest-independent: host state, taints (none), overcommit
                eligible = eligible_hosts(batch, self.filters)
            else:  # only the overcommit part can change, and only by this batch
                eligible &= np.all(batch.free >= -EPS, axis=1)
            done, reasons = place_plain(
                batch,
                [guests[i] for i in chosen],
                vectors[chosen],
                eligible,
                lambda g, v: self._place_one(batch, g, v),
            )
            placements.update((g.name, table.names[row]) for g, row in done)
            unplaced.update(reasons)
            taken = set(first)
            one_by_one([i for i, p in zip(indexes, plain, strict=True) if not p and i not in taken])
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
    """Host state, site, taints, fit, spread and near filters (cheap first); four scores.

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
        filters=[
            HostStateFilter(),
            SiteFilter(),
            TaintFilter(),
            FitFilter(),
            SpreadFilter(),
            NearFilter(),
        ],
        scores=[
            (BestFitScore(), 1.0),
            (SpreadScore(), 0.5),
            (TrafficScore(), 1.0),
            (HealthScore(), 0.5),
        ],
    )
