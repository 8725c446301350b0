"""The bulk path: many plain replicas of one priority placed by the offline planner.

::

    plain guests of one priority (at least bulk_min of them)
        │ order: replica rank within its app, then the given (canonical) order,
        │ so apps interleave and one host's slots hold a few replicas of many apps
        ▼
    Instance(hosts: rows the filters reject for a plain guest marked cordoned,
             allocated = capacity - the batch's free) ──plan(pack)──> host_of
        │ commit into BatchState (free, app counts, where); check free >= -EPS
        ▼ left unplaced: by request vector, place one by one (full filters, scores);
          the first that fails gives its reason to the rest with that vector

Vocabulary:

- *plain* guest: no ``spread``, ``near``, ``talks_to``, tolerations or site, not moving, no
  measured traffic of its own and none for its app (no app talks to it either): only
  the filters, best-fit, health and the soft spread score could tell hosts apart for
  it. The planner packs like best-fit and ignores the other two: hosts at some risk
  below the unhealthy threshold are not avoided, and replicas of one app are only
  interleaved, not fanned out (a hard ``spread`` is how to demand that).

The planner sees one vector operation per group of identical requests, not one pass
over the hosts per guest, so a batch of 100,000 replicas costs well under a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from podium.model import DIMENSIONS, Resources
from podium.scheduler._constraints import NearFilter, SiteFilter, TaintFilter
from podium.scheduler._instance import Instance
from podium.scheduler._planner import plan
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
from podium.scheduler._table import Bools, Floats, GuestRequest, Ints

# Plain guests of one priority from which the planner places them: one by one costs
# ~1.4 ms a guest on 5,000 hosts, the planner (without its small-instance search) a few
# ms a batch, so from a few dozen guests on whole groups at a time are cheaper.
BULK_MIN = 64
# The plugins whose behaviour for a plain guest the bulk path reproduces; a scheduler
# with any other plugin places every guest one by one.
KNOWN_FILTERS = (HostStateFilter, SiteFilter, TaintFilter, FitFilter, SpreadFilter, NearFilter)
KNOWN_SCORES = (BestFitScore, SpreadScore, TrafficScore, HealthScore)

PlaceOne = Callable[[GuestRequest, Floats], tuple[int | None, str]]


def supports(filters: Sequence[FilterPlugin], scores: Sequence[ScorePlugin]) -> bool:
    """Whether the bulk path can stand in for these plugins (fit among the filters)."""
    return (
        all(isinstance(f, KNOWN_FILTERS) for f in filters)
        and any(isinstance(f, FitFilter) for f in filters)
        and all(isinstance(s, KNOWN_SCORES) for s in scores)
    )


def is_plain(guest: GuestRequest, traffic: TrafficIndex) -> bool:
    """Whether no plugin but fit, best-fit, health and soft spread looks at ``guest``."""
    if guest.spread is not None or guest.near or guest.talks_to or guest.tolerations or guest.site:
        return False
    if guest.moving or guest.name in traffic.partners:
        return False
    app = guest.app
    return app is None or (app not in traffic.app_rates and app not in traffic.talked_by)


def eligible_hosts(batch: BatchState, filters: Sequence[FilterPlugin]) -> Bools:
    """Rows every filter allows for a plain guest asking for nothing.

    With the known filters: ready, not cordoned, draining or unhealthy, no taint, and
    no dimension already overcommitted (fit of a zero request).
    """
    probe = GuestRequest("", Resources())
    zero = np.zeros(len(DIMENSIONS), dtype=np.float64)
    mask = np.ones(len(batch.table), dtype=np.bool_)
    for f in filters:
        mask &= f.filter(batch, probe, zero)
    return mask


def place_plain(
    batch: BatchState,
    guests: Sequence[GuestRequest],
    vectors: Floats,
    eligible: Bools,
    place_one: PlaceOne,
) -> tuple[list[tuple[GuestRequest, int]], dict[str, str]]:
    """Place plain ``guests`` (canonical order; ``vectors`` their requests) in bulk.

    Commits every placement into ``batch``; returns them, in commit order, and a
    reason for each guest left unplaced. Raises AssertionError if the planner put a
    guest on an ineligible host or past a host's free room (a bug, never a result).
    """
    m = len(guests)
    if m == 0:
        return [], {}
    app_names = sorted({g.app for g in guests if g.app is not None})
    code = {a: i for i, a in enumerate(app_names)}
    app = np.array([-1 if g.app is None else code[g.app] for g in guests], dtype=np.int64)
    sequence = _interleave(app)
    table = batch.table
    hosts = dataclasses.replace(
        table, allocated=table.capacity - batch.free, cordoned=table.cordoned | ~eligible
    )
    instance = Instance(
        hosts=hosts,
        guest_names=[guests[i].name for i in sequence.tolist()],
        requests=vectors[sequence],
        app=app[sequence],
        app_names=app_names,
        spread=np.zeros(m, dtype=np.int64),
        priority=np.zeros(m, dtype=np.int64),
    )
    host_of = plan(instance, "pack", one_by_one=False, search=False).host_of
    done = host_of >= 0
    members, rows = sequence[done], host_of[done]
    _commit(batch, instance, done, rows, eligible)
    placed = [(guests[i], r) for i, r in zip(members.tolist(), rows.tolist(), strict=True)]
    left = sequence[~done]
    more, unplaced = _leftovers(batch, [guests[i] for i in left.tolist()], vectors[left], place_one)
    return placed + more, unplaced


def _interleave(app: Ints) -> Ints:
    """Guest indexes by rank within their app, then index: replicas 0 of every app first.

    The planner gives a host a run of consecutive guests of one request; interleaved,
    that run holds a few replicas of many apps instead of hundreds of one.
    """
    index = np.arange(app.size)
    by_app = np.lexsort((index, app))
    starts = np.searchsorted(app[by_app], app[by_app])
    rank = np.empty(app.size, dtype=np.int64)
    rank[by_app] = index - starts
    order: Ints = np.lexsort((index, rank))
    return order


def _commit(
    batch: BatchState, instance: Instance, done: Bools, rows: Ints, eligible: Bools
) -> None:
    """Consume the planner's placements in ``batch``, then check no host went short."""
    table = batch.table
    if rows.size and not eligible[rows].all():
        bad = int(rows[~eligible[rows]][0])
        raise AssertionError(f"bulk placement chose host {table.names[bad]}, which is ineligible")
    n = len(table)
    requests = instance.requests[done]
    used = np.column_stack(
        [np.bincount(rows, weights=requests[:, d], minlength=n) for d in range(len(DIMENSIONS))]
    ).reshape(n, len(DIMENSIONS))
    batch.free -= used
    names = np.array(instance.guest_names, dtype=object)[done]
    batch.where.update(zip(names.tolist(), rows.tolist(), strict=True))
    codes = instance.app[done]
    order = np.argsort(codes, kind="stable")
    edges = np.searchsorted(codes[order], np.arange(len(instance.app_names) + 1))
    for a, name in enumerate(instance.app_names):  # one bincount per app, not per guest
        if edges[a + 1] > edges[a]:
            batch.counts(name)[:] += np.bincount(rows[order[edges[a] : edges[a + 1]]], minlength=n)
    touched = np.unique(rows)
    short = batch.free[touched] < -EPS
    if short.any():
        host, dim = np.argwhere(short)[0]
        raise AssertionError(
            f"bulk placement overcommitted host {table.names[int(touched[host])]}: "
            f"{DIMENSIONS[int(dim)]} free {batch.free[touched[host], dim]:g}"
        )


def _leftovers(
    batch: BatchState, guests: Sequence[GuestRequest], vectors: Floats, place_one: PlaceOne
) -> tuple[list[tuple[GuestRequest, int]], dict[str, str]]:
    """Guests the planner did not place: one by one until one of a request fails.

    For a plain guest only the request vector decides which hosts pass the filters,
    and room only shrinks, so once one fails every later guest asking for the same
    fails too, for the same reason: one explanation per distinct request, not per guest.
    """
    placed: list[tuple[GuestRequest, int]] = []
    unplaced: dict[str, str] = {}
    failed: dict[tuple[float, ...], str] = {}
    for guest, vector in zip(guests, vectors, strict=True):  # bounded: one try each at most
        key = tuple(vector.tolist())
        reason = failed.get(key)
        if reason is None:
            row, why = place_one(guest, vector)
            if row is not None:
                batch.commit(guest, vector, row)
                placed.append((guest, row))
                continue
            reason = failed[key] = why
        unplaced[guest.name] = reason
    return placed, unplaced
