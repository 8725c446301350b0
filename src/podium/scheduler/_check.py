"""Checking placements, and the ``podium plan`` instance format (DESIGN.md)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from podium.model import DIMENSIONS, Resources, Spread
from podium.scheduler._framework import Scheduler, default_scheduler
from podium.scheduler._plugins import EPS
from podium.scheduler._table import (
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    PlacementResult,
)


def verify(request: PlacementRequest, result: PlacementResult) -> list[str]:
    """Every way ``result`` breaks the scheduler contract for ``request`` (empty: none).

    Checks: each placed guest went to a known, ready, uncordoned host; no host
    exceeds its capacity in any dimension; no spread is broken by a placement; every
    guest is either placed or unplaced, not both.
    """
    table = request.hosts
    guests = {g.name: g for g in request.guests}
    problems: list[str] = []
    used = table.allocated.copy()
    for name in sorted(set(result.placements) & set(result.unplaced)):
        problems.append(f"{name} is both placed and unplaced")
    for name in sorted(set(guests) - set(result.placements) - set(result.unplaced)):
        problems.append(f"{name} is neither placed nor unplaced")
    for name, host in result.placements.items():
        row = table.index.get(host)
        if name not in guests:
            problems.append(f"{name} was placed but not requested")
        elif row is None:
            problems.append(f"{name} placed on unknown host {host}")
        elif not table.ready[row] or table.cordoned[row]:
            problems.append(f"{name} placed on {host}, which is not ready or cordoned")
        else:
            used[row] += np.array(guests[name].request.as_tuple())
    over = np.argwhere(used > table.capacity + EPS)
    problems += [
        f"{table.names[r]} over capacity in {DIMENSIONS[d]}: "
        f"{used[r, d]:g} > {table.capacity[r, d]:g}"
        for r, d in over
    ]
    problems += _spread_problems(request, result)
    return problems


def _spread_problems(request: PlacementRequest, result: PlacementResult) -> list[str]:
    table = request.hosts
    problems: list[str] = []
    taken: dict[tuple[str, Spread], dict[int, str]] = defaultdict(dict)
    for guest in request.guests:
        if guest.app is None or guest.spread is None or guest.name not in result.placements:
            continue
        domain, _ = table.domain(guest.spread)
        seen = taken[(guest.app, guest.spread)]
        if not seen:  # replicas placed before this batch occupy their domains
            for host in request.placed.get(guest.app, ()):
                if host in table.index:
                    seen[int(domain[table.index[host]])] = f"an earlier replica on {host}"
        host = result.placements[guest.name]
        code = int(domain[table.index[host]])
        if code in seen:
            problems.append(
                f"{guest.name} on {host} shares its {guest.spread.value} with {seen[code]} "
                f"(app {guest.app}, spread {guest.spread.value})"
            )
        seen[code] = guest.name
    return problems


def solve_instance(
    instance: Mapping[str, Any], scheduler: Scheduler | None = None
) -> dict[str, Any]:
    """Solve a ``podium plan`` instance; checks its own output (raises on a violation).

    Input and output formats are DESIGN.md's "Placement instance format". Raises
    ``ValueError`` with a one-line message for a malformed instance.
    """
    try:
        rows = [
            HostRow(
                name=str(h["name"]),
                capacity=Resources.from_dict(h["capacity"]),
                labels={str(k): str(v) for k, v in h.get("labels", {}).items()},
            )
            for h in instance["hosts"]
        ]
        guests = [
            GuestRequest(
                name=str(g["name"]),
                request=Resources.from_dict(g["request"]),
                app=g.get("app"),
                spread=Spread(g["spread"]) if g.get("spread") else None,
                priority=int(g.get("priority", 0)),
            )
            for g in instance["guests"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"bad placement instance ({type(err).__name__}: {err}); expected "
            '{"hosts": [{"name", "capacity", "labels"}], "guests": [{"name", "request", ...}]}'
        ) from err
    request = PlacementRequest(HostTable.build(rows), guests)
    result = (scheduler or default_scheduler()).place(request)
    problems = verify(request, result)
    if problems:
        raise AssertionError("scheduler broke its contract: " + "; ".join(problems))
    return {
        "placements": dict(result.placements),
        "unplaced": [{"name": n, "reason": r} for n, r in result.unplaced.items()],
        "hosts_used": len(set(result.placements.values())),
    }
