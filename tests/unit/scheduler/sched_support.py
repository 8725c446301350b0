"""Shared by the scheduler tests: a Hypothesis strategy for resource vectors, and an
independent check of a placement result that replays the placements in order."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from podium.model import DIMENSIONS, Resources, toleration_matches
from podium.scheduler import UNHEALTHY_RISK, PlacementRequest, PlacementResult


@st.composite
def resources(draw: st.DrawFn, top: int) -> Resources:
    return Resources(
        cpu=draw(st.integers(0, top)) / 2,
        memory_mib=draw(st.integers(0, top)) * 256,
        iops=draw(st.integers(0, top)) * 100,
        net_mbps=draw(st.integers(0, top)) * 10,
    )


def constraint_problems(request: PlacementRequest, result: PlacementResult) -> list[str]:
    """Every broken constraint: lost or doubled guests, ineligible hosts, untolerated
    taints, ``near`` and spreads (counting ``request.placed``), and capacity on every
    host that took a guest (existing allocations plus the batch's)."""
    table = request.hosts
    guests = {g.name: g for g in request.guests}
    used = table.allocated.copy()
    touched: set[int] = set()
    app_rows: dict[str, list[int]] = {
        app: [table.index[h] for h in hosts if h in table.index]
        for app, hosts in request.placed.items()
    }
    problems = [
        f"{g} both placed and unplaced" for g in set(result.placements) & set(result.unplaced)
    ]
    problems += [f"{g} lost" for g in set(guests) - set(result.placements) - set(result.unplaced)]
    for name, host in result.placements.items():
        g, r = guests[name], table.index[host]
        if not table.ready[r] or table.cordoned[r] or table.draining[r]:
            problems.append(f"{name} on {host}: not ready, cordoned or draining")
        if table.health_risk[r] >= UNHEALTHY_RISK:
            problems.append(f"{name} on {host}: unhealthy")
        for (key, value), has in zip(table.taint_names, table.tainted[r], strict=True):
            if has and not any(toleration_matches(t, key, value) for t in g.tolerations):
                problems.append(f"{name} on {host}: taint {key}={value} not tolerated")
        near_rows = {x for app in g.near for x in app_rows.get(app, [])}
        if near_rows and r not in near_rows:
            problems.append(f"{name} on {host}: runs no guest of {g.near}")
        if g.app and g.spread:
            domain, _ = table.domain(g.spread)
            if any(domain[x] == domain[r] for x in app_rows.get(g.app, [])):
                problems.append(f"{name} on {host}: breaks spread {g.spread.value}")
        used[r] += np.array(g.request.as_tuple())
        touched.add(r)
        if g.app:
            app_rows.setdefault(g.app, []).append(r)
    problems += [
        f"{table.names[r]} over {DIMENSIONS[d]}"
        for r in sorted(touched)
        for d in np.flatnonzero(used[r] > table.capacity[r] + 1e-9)
    ]
    return problems
