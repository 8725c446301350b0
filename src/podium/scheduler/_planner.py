"""The offline planner: a whole instance at once, whole groups of guests at a time.

::

    guests ──> classes (same request, priority, spread, app) ──> groups of apps alike
               (same request, spread and replica count: A apps x k replicas)
        │
        ▼ counts[host, group]: how many guests of each group each host takes
    pack:     patterns (a mix of groups for one host) copied to many hosts (_pack)
    balance:  per group (priority, then bigger first): fit[h] = min over dims
              floor(free[h] / request), capped by the spread (host: <= A; rack/site:
              <= A per domain), water-filled to the lowest common load level
        │
        ▼ per group: slots = host ids repeated count times, domain by domain;
          replica j of app i takes slot j*A + i: two replicas of one app are A slots
          apart, and no host or domain holds more than A slots, so none share one
        │ leftovers (no slot, or apps of mixed shapes): one guest at a time, with reasons
        ▼
    Plan(host_of, reasons)   (pack, small instances: several orderings + emptying hosts)

A million guests fall into a few hundred groups, so planning costs thousands of
vector operations over the hosts, not a million.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from podium.model import DIMENSIONS
from podium.scheduler._instance import SPREADS, Instance
from podium.scheduler._pack import pack_counts
from podium.scheduler._table import Bools, Floats, Ints

EPS = 1e-9
OBJECTIVES = ("pack", "balance")
SMALL = 200  # up to this many guests, the pack objective also searches (see _small)
MAX_ROUNDS = 64  # rounds per group (a round ends when a domain or host cap binds)
BIG = np.int64(1) << np.int64(40)
ROUNDS = 16  # chunks per group (see _groups)
WATER_STEPS = 24  # bisections of the water level (to ~1e-7 of a host's capacity)
MIN_CHUNK = 8  # apps per chunk at least


@dataclass(frozen=True, slots=True)
class Plan:
    """Per guest, its host row (``-1``: unplaced), and a reason for each unplaced one."""

    host_of: Ints
    reasons: dict[int, str]
    objective: str
    seconds: float


@dataclass(slots=True)
class _State:
    free: Floats
    capacity: Floats
    usable: Bools
    domains: tuple[Ints, Ints, Ints]  # host, rack, site code per host row
    ndomains: tuple[int, int, int]
    scale: Floats  # mean capacity per dimension, for dominant shares


def plan(
    instance: Instance, objective: str = "pack", *, one_by_one: bool = True, search: bool = True
) -> Plan:
    """Place every guest of ``instance`` it can, for ``objective`` (``pack``/``balance``).

    ``one_by_one=False`` skips the leftover pass: guests the groups did not place stay
    unplaced without a reason (the online bulk path explains them once per request,
    where the pass would try and explain each of perhaps 100,000 in turn).
    ``search=False`` skips the small-instance search (``_small``): it pays off for an
    offline plan, not for an online batch of a few dozen guests on thousands of hosts.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    start = time.perf_counter()
    state = _start(instance)
    host_of = np.full(len(instance), -1, dtype=np.int64)
    leftovers: list[Ints] = []
    groups = _groups(instance, state, rounds=1 if objective == "pack" else ROUNDS)
    if objective == "pack":
        regular = [(m, s) for m, s in groups if s.spread >= 0]
        sizes = np.array([m.size for m, _ in regular], dtype=np.int64)
        counts = pack_counts(state, [s for _, s in regular], sizes)
        for i, (members, shape) in enumerate(regular):
            leftovers.append(_assign(state, members, shape, counts[:, i], host_of))
        leftovers += [m for m, s in groups if s.spread < 0]
    else:
        for members, shape in groups:
            leftovers.append(_place_group(state, members, shape, host_of))
    rest = np.concatenate(leftovers) if leftovers else np.zeros(0, dtype=np.int64)
    reasons = _one_by_one(state, instance, np.sort(rest), host_of, objective) if one_by_one else {}
    if search and objective == "pack" and 0 < len(instance) <= SMALL:
        from podium.scheduler._small import improve  # noqa: PLC0415

        host_of, reasons = improve(instance, host_of, reasons)
    return Plan(host_of, reasons, objective, time.perf_counter() - start)


def _start(instance: Instance) -> _State:
    table = instance.hosts
    usable = table.ready & ~table.cordoned
    capacity = np.where(usable[:, None], table.capacity, 0.0)
    mean = capacity[usable].mean(axis=0) if usable.any() else np.ones(len(DIMENSIONS))
    n = len(table)
    return _State(
        free=capacity - np.where(usable[:, None], table.allocated, 0.0),
        capacity=capacity,
        usable=usable,
        domains=(np.arange(n, dtype=np.int64), table.rack, table.site),
        ndomains=(n, len(table.rack_names), len(table.site_names)),
        scale=np.where(mean > 0, mean, 1.0),
    )


@dataclass(frozen=True, slots=True)
class _Shape:
    request: Floats
    spread: int  # 0 none, 1 host, 2 rack, 3 site
    apps: int  # A: apps in the group (1 for a group without spread)
    replicas: int  # k


def _groups(instance: Instance, state: _State, rounds: int) -> list[tuple[Ints, _Shape]]:
    """Guests grouped (as an ``A x k`` matrix of guest rows, flattened) and ordered."""
    m = len(instance)
    if m == 0:
        return []
    spread, app = instance.spread, instance.app
    app_key = np.where(spread > 0, app, -1)
    columns = np.column_stack(
        [
            instance.requests,
            spread.astype(np.float64),
            app_key.astype(np.float64),
            -instance.priority.astype(np.float64),
        ]
    )
    keys, klass = _unique_rows(columns)
    # an app whose guests fall in several classes is placed one guest at a time
    spread_apps = app_key[app_key >= 0]
    irregular = np.zeros(len(instance.app_names) + 1, dtype=np.bool_)
    if spread_apps.size:
        pair_keys, _ = _unique_rows(np.column_stack([app_key, klass])[app_key >= 0])
        per_app = np.bincount(pair_keys[:, 0].astype(np.int64), minlength=len(irregular))
        irregular = per_app > 1
        irregular |= np.bincount(app[app >= 0], minlength=len(irregular)) > np.bincount(
            spread_apps, minlength=len(irregular)
        )  # some guests of the app spread, some do not
    size = np.bincount(klass, minlength=len(keys))
    # group key: class without its app, plus the replica count
    group_key = np.column_stack([keys[:, :5], keys[:, 6], np.where(keys[:, 5] >= 0, size, 0)])
    odd = (keys[:, 5] >= 0) & irregular[keys[:, 5].astype(np.int64)]
    gkeys, group_of_class = np.unique(group_key[~odd], axis=0, return_inverse=True)
    class_group = np.full(len(keys), -1, dtype=np.int64)
    class_group[~odd] = group_of_class.ravel()
    guest_group = class_group[klass]
    order = np.lexsort((np.arange(m), app_key, guest_group))
    bounds = np.searchsorted(guest_group[order], np.arange(len(gkeys) + 1))
    dominant = (gkeys[:, :4] / state.scale).max(axis=1)
    sequence = np.lexsort((gkeys[:, 4] == 0, -dominant, gkeys[:, 5]))
    groups = [(order[bounds[g] : bounds[g + 1]], gkeys[g]) for g in sequence]
    # each group in ROUNDS chunks of apps, chunk r of every group before chunk r + 1:
    # hosts then fill with a mix of shapes, as the whole demand does, instead of one
    # shape exhausting one dimension and stranding the others
    chunks: list[tuple[float, int, int, Ints, _Shape]] = []
    for position, (members, key) in enumerate(groups):
        k = max(int(key[6]), 1)
        rows = members.reshape(-1, k)
        parts = min(rounds, max(1, rows.shape[0] // MIN_CHUNK))
        for r, part in enumerate(np.array_split(rows, parts)):
            shape = _Shape(key[:4].copy(), int(key[4]), part.shape[0], k)
            chunks.append((float(key[5]), r, position, part.ravel(), shape))
    chunks.sort(key=lambda c: c[:3])
    out = [(members, shape) for *_, members, shape in chunks]
    odd_members = np.flatnonzero(guest_group < 0)
    if odd_members.size:
        out.append((odd_members, _Shape(np.zeros(4), -1, 0, 0)))  # straight to one by one
    return out


def _unique_rows(columns: np.ndarray) -> tuple[np.ndarray, Ints]:
    """``np.unique(columns, axis=0, return_inverse=True)``, column by column (far faster)."""
    inverse = np.zeros(len(columns), dtype=np.int64)
    for column in columns.T:
        values, codes = np.unique(column, return_inverse=True)
        _, inverse = np.unique(inverse * len(values) + codes.ravel(), return_inverse=True)
        inverse = inverse.ravel()
    first = np.zeros(int(inverse.max()) + 1 if inverse.size else 0, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    return columns[first], inverse


def _fit(free: Floats, request: Floats) -> Ints:
    """How many guests of ``request`` fit in each host's ``free`` (0 for none)."""
    positive = request > EPS
    if not positive.any():
        return np.full(len(free), BIG, dtype=np.int64)
    ratios = np.floor((free[:, positive] + EPS) / request[positive])
    fit: Ints = np.clip(ratios.min(axis=1), 0, BIG).astype(np.int64)
    return fit


def _place_group(state: _State, members: Ints, shape: _Shape, host_of: Ints) -> Ints:
    """Balance: water-fill a group; returns the guests it could not place."""
    if shape.spread < 0:
        return members
    want = members.size
    request = shape.request
    counts = np.zeros(len(state.free), dtype=np.int64)
    level = shape.spread
    domain = state.domains[level - 1] if level else None
    for _ in range(MAX_ROUNDS):
        remaining = want - int(counts.sum())
        if remaining <= 0:
            break
        fit = np.where(state.usable, _fit(state.free, request), 0)
        if level == 1:
            fit = np.minimum(fit, shape.apps - counts)
        elif domain is not None:
            left = shape.apps - np.bincount(
                domain, weights=counts, minlength=state.ndomains[level - 1]
            )
            fit = np.minimum(fit, left.astype(np.int64)[domain])
        if not fit.any():
            break
        take = _water_fill(state, fit, remaining, request)
        if domain is not None and level > 1:
            take = _cap_domains(take, domain, shape.apps, counts, state.ndomains[level - 1])
        if not take.any():
            break
        counts += take
        state.free -= take[:, None] * request[None, :]
    return _assign(state, members, shape, counts, host_of)


def _assign(state: _State, members: Ints, shape: _Shape, counts: Ints, host_of: Ints) -> Ints:
    """Give the group's guests the slots of ``counts`` (guests per host); the rest back.

    Slots run domain by domain (host by host within); guests go replica-major, so two
    replicas of one app are ``A`` slots apart, and no domain holds more than ``A`` slots.
    """
    level = shape.spread
    domain = state.domains[level - 1] if level else None
    hosts = np.flatnonzero(counts)
    if domain is not None:
        hosts = hosts[np.argsort(domain[hosts], kind="stable")]
    slots = np.repeat(hosts, counts[hosts])
    matrix = members.reshape(shape.apps, shape.replicas) if level else members[:, None]
    sequence = matrix.T.ravel()
    host_of[sequence[: slots.size]] = slots
    return sequence[slots.size :]


def _water_fill(state: _State, fit: Ints, remaining: int, request: Floats) -> Ints:
    """Fill the least-loaded hosts up to a common load level (binary search on it)."""
    positive = request > EPS
    capacity = np.where(state.capacity > 0, state.capacity, 1.0)
    load = ((state.capacity - state.free) / capacity).max(axis=1)

    def upto(target: float) -> Ints:
        if not positive.any():
            room = np.full(len(fit), BIG, dtype=np.int64)
        else:
            headroom = target * state.capacity[:, positive] - (
                state.capacity[:, positive] - state.free[:, positive]
            )
            room = np.floor(headroom / request[positive] + EPS).min(axis=1).astype(np.int64)
        take: Ints = np.clip(room, 0, fit)
        return take

    step = (request / capacity).max(axis=1)
    candidates = np.flatnonzero(fit > 0)
    if remaining <= candidates.size:  # one guest each for the least loaded after it
        after = load[candidates] + step[candidates]
        chosen = candidates[np.argpartition(after, remaining - 1)[:remaining]]
        one: Ints = np.zeros(len(fit), dtype=np.int64)
        one[chosen] = 1
        return one
    low, high = float(load[candidates].min()), 1.0 + EPS
    if int(upto(high).sum()) <= remaining:
        return upto(high)
    for _ in range(WATER_STEPS):
        middle = (low + high) / 2
        if int(upto(middle).sum()) >= remaining:
            high = middle
        else:
            low = middle
    take = upto(high)
    extra = int(take.sum()) - remaining
    if extra > 0:  # trim one guest from the hosts that would end up most loaded
        after = np.where(take > 0, load + take * step, -1.0)
        trim = np.argsort(-after, kind="stable")[:extra]
        take[trim] -= 1
    clipped: Ints = np.maximum(take, 0)
    return clipped


def _cap_domains(take: Ints, domain: Ints, apps: int, counts: Ints, ndomains: int) -> Ints:
    """Cut ``take`` so no rack/site domain holds more than ``apps`` guests of the group."""
    left = apps - np.bincount(domain, weights=counts, minlength=ndomains).astype(np.int64)
    rows = np.flatnonzero(take)
    rows = rows[np.argsort(domain[rows], kind="stable")]
    amounts = take[rows]
    codes = domain[rows]
    cumulative = np.cumsum(amounts)
    starts = np.searchsorted(codes, codes)  # first row of each domain in ``rows``
    before = cumulative - amounts - (cumulative[starts] - amounts[starts])
    capped = take.copy()
    capped[rows] = np.clip(left[codes] - before, 0, amounts)
    return capped


def _one_by_one(
    state: _State, instance: Instance, guests: Ints, host_of: Ints, objective: str
) -> dict[int, str]:
    """Place leftovers one guest at a time (with the app's taken domains); say why not."""
    reasons: dict[int, str] = {}
    if guests.size == 0:
        return reasons
    by_app = np.argsort(instance.app, kind="stable")
    edges = np.searchsorted(instance.app[by_app], np.arange(len(instance.app_names) + 1))
    capacity = np.where(state.capacity > 0, state.capacity, 1.0)
    for g in guests.tolist():
        request = instance.requests[g]
        fits = state.usable & np.all(state.free >= request - EPS, axis=1)
        level = int(instance.spread[g])
        clear = np.ones(len(fits), dtype=np.bool_)
        if level:
            domain = state.domains[level - 1]
            a = int(instance.app[g])
            others = host_of[by_app[edges[a] : edges[a + 1]]]
            taken = np.zeros(state.ndomains[level - 1], dtype=np.bool_)
            taken[domain[others[others >= 0]]] = True
            clear = ~taken[domain]
        rows = np.flatnonzero(fits & clear)
        if rows.size == 0:
            reasons[g] = _explain(state, instance, g, fits, clear)
            continue
        after = ((state.capacity[rows] - state.free[rows] + request) / capacity[rows]).max(axis=1)
        row = int(rows[np.argmax(after) if objective == "pack" else np.argmin(after)])
        host_of[g] = row
        state.free[row] -= request
    return reasons


def _explain(state: _State, instance: Instance, g: int, fits: Bools, clear: Bools) -> str:
    """``"0/8 hosts fit: 5 lacked memory_mib, 3 already hold a replica of app web ..."``."""
    n = len(fits)
    if n == 0:
        return "0/0 hosts fit: no hosts in the instance"
    phrases: list[str] = []
    unusable = int(np.count_nonzero(~state.usable))
    if unusable:
        phrases.append(f"{unusable} were not ready or cordoned")
    short = state.usable & ~fits
    lacking = state.free[short] < instance.requests[g] - EPS
    counts = np.bincount(np.argmax(lacking, axis=1), minlength=len(DIMENSIONS))
    phrases += [f"{c} lacked {d}" for d, c in zip(DIMENSIONS, counts, strict=True) if c]
    blocked = int(np.count_nonzero(state.usable & fits & ~clear))
    if blocked:
        app = instance.app_names[int(instance.app[g])]
        level = SPREADS[int(instance.spread[g]) - 1]
        if level == "host":
            phrases.append(f"{blocked} already hold a replica of app {app} (spread host)")
        else:
            phrases.append(
                f"{blocked} share a {level} with a replica of app {app} (spread {level})"
            )
    return f"0/{n} hosts fit: " + ", ".join(phrases)
