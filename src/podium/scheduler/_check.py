"""Checking placements, and the ``podium plan`` instance format (DESIGN.md).

The checks are vectorised (one ``bincount`` per dimension, one ``unique`` per spread
level), so a million placements verify in about a second, and they share no code with
the planner or the scheduler they check.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from podium.model import DIMENSIONS, Resources, Spread
from podium.scheduler._bounds import lower_bound
from podium.scheduler._framework import Scheduler
from podium.scheduler._instance import Instance, InstanceError, parse_instance
from podium.scheduler._planner import plan
from podium.scheduler._plugins import EPS
from podium.scheduler._table import (
    Bools,
    Floats,
    GuestRequest,
    HostTable,
    Ints,
    PlacementRequest,
    PlacementResult,
)

MAX_PROBLEMS = 50  # past this many, one line says how many more
SPREAD_LEVELS = (Spread.HOST, Spread.RACK, Spread.SITE)  # codes 1, 2, 3 in ``spread`` arrays


def check_assignment(
    table: HostTable,
    requests: Floats,
    host_of: Ints,
    *,
    app: Ints,
    spread: Ints,
    guest_names: Any,
    fixed: Bools | None = None,
) -> list[str]:
    """Every way an assignment breaks capacity or spread (empty: none). Vectorised.

    ``requests`` ``(m, 4)``; per guest ``host_of`` (row in ``table``, ``-1``: unplaced),
    ``app`` (code, ``-1``: none) and ``spread`` (0 none, 1 host, 2 rack, 3 site).
    ``table.allocated`` counts as used. ``fixed`` marks replicas placed before (zero
    requests: already in ``allocated``); two of them sharing a domain is not a problem.
    """
    problems: list[str] = []
    n = len(table)
    placed = host_of >= 0
    bad = placed & (host_of >= n)
    problems += [
        f"{guest_names[i]} placed on unknown host row {host_of[i]}"
        for i in np.flatnonzero(bad)[:MAX_PROBLEMS]
    ]
    fixed = np.zeros(len(host_of), dtype=np.bool_) if fixed is None else fixed
    rows = host_of[placed & ~bad]
    usable = table.ready & ~table.cordoned
    new = np.flatnonzero(placed & ~bad)[~usable[rows]]  # earlier replicas may sit anywhere
    for i in new[~fixed[new]][:MAX_PROBLEMS]:
        host = table.names[host_of[i]]
        problems.append(f"{guest_names[i]} placed on {host}, which is not ready or cordoned")
    used = table.allocated.copy()
    weights = requests[placed & ~bad]
    for d in range(len(DIMENSIONS)):
        used[:, d] += np.bincount(rows, weights=weights[:, d], minlength=n)
    over = np.argwhere(used > table.capacity + EPS)
    problems += [
        f"{table.names[r]} over capacity in {DIMENSIONS[d]}: "
        f"{used[r, d]:g} > {table.capacity[r, d]:g}"
        for r, d in over[:MAX_PROBLEMS]
    ]
    problems += _spread_problems(
        table, host_of, app=app, spread=spread, ok=placed & ~bad, fixed=fixed, names=guest_names
    )
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return problems


def _spread_problems(
    table: HostTable,
    host_of: Ints,
    *,
    app: Ints,
    spread: Ints,
    ok: Bools,
    fixed: Bools,
    names: Any,
) -> list[str]:
    problems: list[str] = []
    for code, level in enumerate(SPREAD_LEVELS, start=1):
        members = np.flatnonzero(ok & (spread == code) & (app >= 0))
        if members.size == 0:
            continue
        domain, ndomains = table.domain(level)
        key = app[members] * np.int64(ndomains + 1) + domain[host_of[members]]
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        both_fixed = fixed[members[order]][1:] & fixed[members[order]][:-1]
        clash = np.flatnonzero((sorted_key[1:] == sorted_key[:-1]) & ~both_fixed)
        for c in clash[:MAX_PROBLEMS]:
            first, second = members[order[c]], members[order[c + 1]]
            host = table.names[host_of[second]]
            problems.append(
                f"{names[second]} on {host} shares its {level.value} with "
                f"{names[first]} on {table.names[host_of[first]]} (spread {level.value})"
            )
    return problems


def verify(request: PlacementRequest, result: PlacementResult) -> list[str]:
    """Every way ``result`` breaks the scheduler contract for ``request`` (empty: none).

    Checks: each placed guest went to a known, ready, uncordoned host; no host
    exceeds its capacity in any dimension; no spread is broken by a placement (counting
    replicas placed before the batch); a guest pinned to a site is on a host of that
    site; every guest is either placed or unplaced, not both.
    """
    table = request.hosts
    guests = {g.name: g for g in request.guests}
    problems: list[str] = []
    for name in sorted(set(result.placements) & set(result.unplaced)):
        problems.append(f"{name} is both placed and unplaced")
    for name in sorted(set(guests) - set(result.placements) - set(result.unplaced)):
        problems.append(f"{name} is neither placed nor unplaced")
    for name, host in result.placements.items():
        if name not in guests:
            problems.append(f"{name} was placed but not requested")
        elif host not in table.index:
            problems.append(f"{name} placed on unknown host {host}")
        elif guests[name].site is not None:
            site = table.site_names[table.site[table.index[host]]]
            if site != guests[name].site:
                problems.append(f"{name} is pinned to site {guests[name].site}, placed in {site!r}")
    entries = [
        (g, table.index[result.placements[g.name]])
        for g in request.guests
        if table.index.get(result.placements.get(g.name, "")) is not None
    ]
    names: list[str] = [g.name for g, _ in entries]
    apps: dict[str, int] = {}
    rows = [row for _, row in entries]
    app = [apps.setdefault(g.app, len(apps)) if g.app else -1 for g, _ in entries]
    spread = [SPREAD_LEVELS.index(g.spread) + 1 if g.spread else 0 for g, _ in entries]
    vectors = [g.request.as_tuple() for g, _ in entries]
    # replicas placed before the batch: zero requests (already in ``allocated``), and a
    # spread for every level a guest of that app uses in this batch
    levels = {(g.app, g.spread) for g, _ in entries if g.app and g.spread}
    for app_name, level in sorted(levels):
        for host in request.placed.get(app_name, ()):
            if host in table.index:
                names.append(f"an earlier replica of {app_name}")
                rows.append(table.index[host])
                app.append(apps[app_name])
                spread.append(SPREAD_LEVELS.index(level) + 1)
                vectors.append((0.0,) * len(DIMENSIONS))
    fixed = np.arange(len(rows)) >= len(entries)
    problems += check_assignment(
        table,
        np.array(vectors, dtype=np.float64).reshape(len(vectors), len(DIMENSIONS)),
        np.array(rows, dtype=np.int64),
        app=np.array(app, dtype=np.int64),
        spread=np.array(spread, dtype=np.int64),
        guest_names=names,
        fixed=fixed,
    )
    return problems


def solve_instance(
    instance: Mapping[str, Any], scheduler: Scheduler | None = None, objective: str = "pack"
) -> dict[str, Any]:
    """Solve a ``podium plan`` instance; checks its own output (raises on a violation).

    Input and output formats are DESIGN.md's "Placement instance format"; the output
    adds ``lower_bound`` (hosts, and per dimension), ``ratio`` (hosts used / bound),
    ``objective`` and ``seconds`` (planning time). Raises ``ValueError`` (an
    :class:`InstanceError`) naming the bad entry and field for a malformed instance.
    ``scheduler``: place with that scheduler, one guest at a time, instead of the
    planner (slow on large instances; for comparisons).
    """
    try:
        parsed = parse_instance(instance)
    except InstanceError as err:
        raise InstanceError(f"bad placement instance: {err}") from err
    report, _ = solve_parsed(parsed, objective, scheduler)
    return report


def solve_parsed(
    instance: Instance, objective: str = "pack", scheduler: Scheduler | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Plan, verify (raises ``AssertionError`` on a violation) and report; with timings."""
    started = time.perf_counter()
    if scheduler is None:
        host_of = plan(instance, objective)
        rows, reasons = host_of.host_of, host_of.reasons
    else:
        rows, reasons = _with_scheduler(instance, scheduler)
    planned = time.perf_counter()
    problems = check_assignment(
        instance.hosts,
        instance.requests,
        rows,
        app=instance.app,
        spread=instance.spread,
        guest_names=instance.guest_names,
    )
    unexplained = np.flatnonzero(rows < 0)
    problems += [
        f"{instance.guest_names[g]} is unplaced without a reason"
        for g in unexplained[:MAX_PROBLEMS]
        if int(g) not in reasons
    ]
    if problems:
        raise AssertionError("the planner broke its contract: " + "; ".join(problems))
    verified = time.perf_counter()
    placed = rows >= 0
    bound = lower_bound(
        instance.hosts.capacity[instance.hosts.ready & ~instance.hosts.cordoned],
        instance.requests[placed],
        instance.app[placed],
        instance.spread[placed],
    )
    names = instance.hosts.names
    used = int(np.unique(rows[placed]).size)
    report: dict[str, Any] = {
        "placements": dict(
            zip(
                [instance.guest_names[g] for g in np.flatnonzero(placed).tolist()],
                [names[r] for r in rows[placed].tolist()],
                strict=True,
            )
        ),
        "unplaced": [
            {"name": instance.guest_names[g], "reason": reasons[g]} for g in sorted(reasons)
        ],
        "hosts_used": used,
        "lower_bound": bound.to_dict(),
        "ratio": round(used / bound.hosts, 4) if bound.hosts else (1.0 if used == 0 else None),
        "objective": objective if scheduler is None else "scheduler",
        "seconds": round(planned - started, 4),
    }
    return report, {"plan": planned - started, "verify": verified - planned}


def _with_scheduler(instance: Instance, scheduler: Scheduler) -> tuple[Ints, dict[int, str]]:
    spreads = (None, Spread.HOST, Spread.RACK, Spread.SITE)
    guests = [
        GuestRequest(
            name=name,
            request=Resources.from_dict(
                dict(zip(DIMENSIONS, instance.requests[i].tolist(), strict=True))
            ),
            app=instance.app_names[instance.app[i]] if instance.app[i] >= 0 else None,
            spread=spreads[int(instance.spread[i])],
            priority=int(instance.priority[i]),
        )
        for i, name in enumerate(instance.guest_names)
    ]
    result = scheduler.place(PlacementRequest(instance.hosts, guests))
    index = instance.hosts.index
    rows = np.array([index.get(result.placements.get(n, ""), -1) for n in instance.guest_names])
    reasons = {
        i: result.unplaced[n] for i, n in enumerate(instance.guest_names) if n in result.unplaced
    }
    return rows.astype(np.int64), reasons
