"""Dedicated spare hosts (``podium server --spare-host NAME``): idle until a failover.

::

    SpareScheduler(inner, spares).place(request)
      pass 1: guests with ``moving`` (their host was lost, or a live migration / drain
              target is chosen) over every host, spares included
      pass 2: every other guest over the hosts with the spares cordoned, after what
              pass 1 consumed (capacity and spreads)

So a new guest never lands on a spare ("N were cordoned" in its reason), while the
guests of a lost host, and live migrations, may. Pure, like the scheduler it wraps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from podium.scheduler._framework import Scheduler
from podium.scheduler._table import PlacementRequest, PlacementResult


class SpareScheduler:
    """Wraps a :class:`Scheduler`; keeps ``spares`` for guests that are moving."""

    def __init__(self, inner: Scheduler, spares: Iterable[str]) -> None:
        self.inner = inner
        self.spares = frozenset(spares)

    def place(self, request: PlacementRequest) -> PlacementResult:
        table = request.hosts
        spare = np.array([n in self.spares for n in table.names], dtype=np.bool_)
        if not spare.any():
            return self.inner.place(request)
        moving = [g for g in request.guests if g.moving]
        rest = [g for g in request.guests if not g.moving]
        first = self.inner.place(replace(request, guests=moving))
        allocated = table.allocated.copy()
        placed: dict[str, list[str]] = defaultdict(list)
        for app, hosts in request.placed.items():
            placed[app] += hosts
        for g in moving:
            host = first.placements.get(g.name)
            if host is not None:
                allocated[table.index[host]] += g.request.as_tuple()
                if g.app:
                    placed[g.app].append(host)
        closed = replace(table, allocated=allocated, cordoned=table.cordoned | spare)
        second = self.inner.place(replace(request, hosts=closed, guests=rest, placed=dict(placed)))
        return PlacementResult(
            {**first.placements, **second.placements}, {**first.unplaced, **second.unplaced}
        )
