"""Filter and score plugins, and the batch state they read.

A filter returns a boolean mask over hosts (True: the host may take the guest); its
``explain`` turns the hosts it rejected into counted phrases, and is only called for
guests that end up unplaced. A score returns 0..100 per candidate host (higher is
better). Plugins read :class:`BatchState`, never the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from podium.model import DIMENSIONS, Spread
from podium.scheduler._table import Bools, Floats, GuestRequest, HostTable, Ints, PlacementRequest

EPS = 1e-9


@dataclass(eq=False)
class BatchState:
    """What one ``place`` call sees and changes: capacity consumed virtually in the batch."""

    table: HostTable
    free: Floats  # capacity - allocated, updated as the batch places guests
    app_counts: dict[str, Ints] = field(default_factory=dict)  # replicas per host, per app
    memo: dict[str, Bools] = field(default_factory=dict)  # guest-independent masks
    where: dict[str, int] = field(default_factory=dict)  # guest -> row, placed or in batch
    request: PlacementRequest | None = None
    cache: dict[str, object] = field(default_factory=dict)  # plugins' per-batch indexes

    @classmethod
    def start(cls, request: PlacementRequest) -> BatchState:
        table = request.hosts
        state = cls(table, table.capacity - table.allocated, request=request)
        for app, hosts in request.placed.items():
            rows = [table.index[h] for h in hosts if h in table.index]
            if rows:
                state.counts(app)[:] += np.bincount(rows, minlength=len(table))
        state.where = {
            g: table.index[h] for g, h in request.guest_hosts.items() if h in table.index
        }
        return state

    def counts(self, app: str) -> Ints:
        """Replicas of ``app`` per host (created on first use)."""
        counts = self.app_counts.get(app)
        if counts is None:
            counts = self.app_counts[app] = np.zeros(len(self.table), dtype=np.int64)
        return counts

    def commit(self, guest: GuestRequest, vector: Floats, row: int) -> None:
        """Consume ``guest``'s request on host ``row`` for the rest of the batch."""
        self.free[row] -= vector
        self.where[guest.name] = row
        if guest.app is not None:
            self.counts(guest.app)[row] += 1


Phrases = list[tuple[int, str]]


class FilterPlugin(Protocol):
    """A hard constraint. ``filter`` must be pure and cost O(hosts) numpy work."""

    name: str

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        """Mask of hosts that may take ``guest`` (``vector`` is its request as an array)."""
        ...

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        """Counted phrases for the hosts in ``rejected``, e.g. ``[(5, "lacked memory_mib")]``.

        The counts sum to ``rejected.sum()``.
        """
        ...


class ScorePlugin(Protocol):
    """A preference. Scores are 0..100 for each candidate row; higher is better."""

    name: str

    def score(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rows: Ints
    ) -> Floats: ...


UNHEALTHY_RISK = 0.8  # health risk at or above which a host takes no new guests


class HostStateFilter:
    """Only hosts that are ready (lease alive), not cordoned, not draining, not unhealthy.

    ``unhealthy``: telemetry puts the host's risk of failing at ``unhealthy_risk`` or
    more; below that the health score only makes it less attractive.
    """

    name = "host-state"

    def __init__(self, unhealthy_risk: float = UNHEALTHY_RISK) -> None:
        self.unhealthy_risk = unhealthy_risk

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        mask = batch.memo.get(self.name)
        if mask is None:
            t = batch.table
            mask = t.ready & ~t.cordoned & ~t.draining & (t.health_risk < self.unhealthy_risk)
            batch.memo[self.name] = mask
        return mask

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        t = batch.table
        left = rejected.copy()
        phrases: Phrases = []
        for why, bad in (
            ("were not ready", ~t.ready),
            ("were cordoned", t.cordoned),
            ("were draining", t.draining),
            ("were unhealthy", t.health_risk >= self.unhealthy_risk),
        ):  # each host counted once, by the first reason that applies
            phrases.append((int(np.count_nonzero(left & bad)), why))
            left &= ~bad
        return phrases


ReadyFilter = HostStateFilter  # its name before draining and health joined it


class FitFilter:
    """Only hosts with room for the request in every dimension (after this batch so far)."""

    name = "fit"

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        fits: Bools = np.all(batch.free >= vector - EPS, axis=1)
        return fits

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        lacking = batch.free[rejected] < vector - EPS
        first = np.argmax(lacking, axis=1)  # each host counted once, by its first shortage
        counts = np.bincount(first, minlength=len(DIMENSIONS))
        return [(int(c), f"lacked {dim}") for dim, c in zip(DIMENSIONS, counts, strict=True)]


class SpreadFilter:
    """Replicas of one app with a spread never share that failure domain."""

    name = "spread"

    def _occupied(self, batch: BatchState, app: str, spread: Spread) -> Bools:
        counts = batch.app_counts.get(app)
        if counts is None:
            return np.zeros(len(batch.table), dtype=np.bool_)
        if spread is Spread.HOST:
            occupied: Bools = counts > 0
            return occupied
        domain, ndomains = batch.table.domain(spread)
        per_domain = np.bincount(domain, weights=counts, minlength=ndomains)
        taken: Bools = per_domain[domain] > 0
        return taken

    def filter(self, batch: BatchState, guest: GuestRequest, vector: Floats) -> Bools:
        if guest.app is None or guest.spread is None:
            return np.ones(len(batch.table), dtype=np.bool_)
        return ~self._occupied(batch, guest.app, guest.spread)

    def explain(
        self, batch: BatchState, guest: GuestRequest, vector: Floats, rejected: Bools
    ) -> Phrases:
        count = int(np.count_nonzero(rejected))
        if guest.spread is Spread.HOST:
            phrase = f"already hold a replica of app {guest.app} (spread host)"
        else:
            level = guest.spread.value if guest.spread else "?"
            phrase = f"share a {level} with a replica of app {guest.app} (spread {level})"
        return [(count, phrase)]


class BestFitScore:
    """Prefer the host left fullest: 100 * the dominant-resource fraction after placement.

    Packing guests tightly keeps whole hosts free for large guests (and for failover).
    """

    name = "best-fit"

    def score(self, batch: BatchState, guest: GuestRequest, vector: Floats, rows: Ints) -> Floats:
        inverse = batch.cache.get(self.name)
        if not isinstance(inverse, np.ndarray):  # once per batch: 1/capacity, 0 where none
            capacity = batch.table.capacity
            inverse = np.divide(1.0, capacity, out=np.zeros_like(capacity), where=capacity > 0)
            batch.cache[self.name] = inverse
        scale = inverse[rows]
        # used / capacity = (capacity - free + request) / capacity = 1 - (free - request) / capacity
        fraction = (scale > 0) - (batch.free[rows] - vector) * scale
        dominant: Floats = np.minimum(np.maximum(fraction.max(axis=1), 0.0), 1.0) * 100.0
        return dominant
