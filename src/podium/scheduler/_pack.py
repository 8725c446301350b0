"""Packing onto few hosts: patterns (a mix of guests for one host) copied widely.

::

    open the fewest hosts the remaining demand needs (largest first, round-robin
    over racks so spreads can hold; _bounds)
    repeat:
        template = the open host with the most room
        pattern  = greedy for the template: again and again the group that fits (and
                   keeps its spread) with the best norm-based score (the guest that
                   leaves the least room, in units of the demand's own mix), spreads
                   first; each group at most its fair share over the open hosts
        copy the pattern to every open host it fits (host and domain caps kept);
        a group running short goes to the first hosts only
        hosts that take nothing are done; none left: open more hosts

A pattern is a sample of the whole demand's mix, so a host does not fill up in one
dimension while another stays empty, and hosts used stay close to the lower bound;
copying it costs one vector operation over the hosts, not one per guest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from podium.scheduler._bounds import hosts_for
from podium.scheduler._table import Floats, Ints

if TYPE_CHECKING:
    from podium.scheduler._planner import _Shape, _State

EPS = 1e-9
PROFILE_FLOOR = 0.25
MAX_STEPS = 10_000_000  # a bound for the loop; each step places a guest or retires a host
MAX_PATTERN = 100_000  # guests in one host's pattern, at most


def pack_counts(state: _State, shapes: list[_Shape], sizes: Ints) -> Ints:
    """Guests of each group per host, ``(hosts, groups)``; updates ``state.free``."""
    n, g = len(state.free), len(shapes)
    counts = np.zeros((n, g), dtype=np.int64)
    if g == 0 or n == 0:
        return counts
    packer = _Packer(state, shapes, sizes, counts)
    closed = state.usable.copy()
    size = (state.capacity / state.scale).sum(axis=1)
    active = np.zeros(n, dtype=np.bool_)
    for _ in range(MAX_STEPS):
        if packer.remaining.sum() == 0:
            break
        if not active.any():
            opened = _open(state, closed, size, packer.request, packer.remaining)
            if opened.size == 0:
                break
            closed[opened] = False
            active[opened] = True
        rows = np.flatnonzero(active)
        template = int(
            rows[np.argmax(size[rows] * 0 + (state.free[rows] / state.scale).sum(axis=1))]
        )
        pattern = packer.pattern(template, rows.size)
        if not pattern.any():
            active[template] = False
            continue
        packer.replicate(pattern, template, rows)
    return counts


class _Packer:
    """Patterns (a mix of guests for one host), built greedily and copied to many hosts."""

    def __init__(self, state: _State, shapes: list[_Shape], sizes: Ints, counts: Ints) -> None:
        g = len(shapes)
        self.state = state
        self.counts = counts
        self.request = np.array([s.request for s in shapes], dtype=np.float64).reshape(g, -1)
        self.apps = np.array([s.apps for s in shapes], dtype=np.int64)
        self.level = np.array([s.spread for s in shapes], dtype=np.int64)
        self.remaining = sizes.astype(np.int64).copy()
        # room in units of the demand's own profile (its share of each dimension,
        # relative to the scarcest): the norm-based fit then steers each host toward
        # the demand's mix instead of filling one dimension and stranding the others
        share = (sizes @ self.request) / np.maximum(state.capacity[state.usable].sum(axis=0), EPS)
        self.unit = state.scale * np.clip(share / max(float(share.max()), EPS), PROFILE_FLOOR, 1.0)
        self.weights = self.request / self.unit
        self.norms = (self.weights**2).sum(axis=1)
        # the most constrained first (site, rack, host spreads); free guests fill the gaps
        self.bonus = 10.0 + 10.0 * self.level.astype(np.float64)
        self.domain_counts = {
            lvl: np.zeros((state.ndomains[lvl - 1], g), dtype=np.int64) for lvl in (2, 3)
        }

    def _cap(self, host: int) -> Ints:
        """How many more of each group this host may take (spreads, guests left)."""
        cap = self.remaining.copy()
        cap = np.where(self.level == 1, np.minimum(cap, self.apps - self.counts[host]), cap)
        for lvl, table in self.domain_counts.items():
            code = self.state.domains[lvl - 1][host]
            cap = np.where(self.level == lvl, np.minimum(cap, self.apps - table[code]), cap)
        return cap

    def pattern(self, host: int, hosts: int) -> Ints:
        """A greedy mix for ``host``: the best-scoring guest that fits, again and again.

        Each group gives at most its fair share over the ``hosts`` open (rounded up), so
        a pattern is a sample of the whole demand's mix and can be copied widely.
        """
        free = self.state.free[host].copy()
        cap = np.minimum(self._cap(host), -(-self.remaining // max(hosts, 1)))
        pattern = np.zeros(len(cap), dtype=np.int64)
        for _ in range(MAX_PATTERN):
            ok = (pattern < cap) & np.all(free >= self.request - EPS, axis=1)
            if not ok.any():
                break
            score = 2.0 * self.weights @ (free / self.unit) - self.norms + self.bonus
            best = int(np.argmax(np.where(ok, score, -np.inf)))
            pattern[best] += 1
            free -= self.request[best]
        return pattern

    def replicate(self, pattern: Ints, template: int, rows: Ints) -> None:
        """Give ``pattern`` to the template and as many similar hosts as allow it."""
        state, used = self.state, np.flatnonzero(pattern)
        need = pattern @ self.request
        fits = np.all(state.free[rows] >= need - EPS, axis=1)
        spread_host = used[self.level[used] == 1]
        if spread_host.size:
            room = self.apps[spread_host] - self.counts[np.ix_(rows, spread_host)]
            fits &= np.all(room >= pattern[spread_host], axis=1)
        candidates = rows[fits]
        slack = ((state.free[candidates] - need) / self.unit).sum(axis=1)
        slack[candidates == template] = -np.inf  # the template first
        candidates = candidates[np.argsort(slack, kind="stable")]
        keep = np.ones(candidates.size, dtype=np.bool_)
        for lvl, table in self.domain_counts.items():
            spread = used[self.level[used] == lvl]
            if spread.size == 0:
                continue
            per_domain = ((self.apps[spread] - table[:, spread]) // pattern[spread]).min(axis=1)
            keep &= _first(
                state.domains[lvl - 1][candidates], per_domain[state.domains[lvl - 1][candidates]]
            )
        # the i-th host gets group g while i < remaining_g // pattern_g: hosts past
        # that get the pattern without g (they stay open for the next pattern)
        hosts = candidates[keep]
        limit = self.remaining[used] // pattern[used]
        take = (np.arange(hosts.size)[:, None] < limit[None, :]) * pattern[used][None, :]
        state.free[hosts] -= take @ self.request[used]
        self.counts[np.ix_(hosts, used)] += take
        self.remaining[used] -= take.sum(axis=0)
        for lvl, table in self.domain_counts.items():
            spread = self.level[used] == lvl
            if spread.any():
                codes = state.domains[lvl - 1][hosts]
                np.add.at(table, (codes[:, None], used[spread][None, :]), take[:, spread])


def _first(key: Ints, allowed: Ints) -> np.ndarray:
    """True for the first ``allowed`` entries of each key (in the order given)."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.searchsorted(sorted_key, sorted_key)
    rank = np.arange(key.size) - starts
    keep = np.zeros(key.size, dtype=np.bool_)
    keep[order] = rank < allowed[order]
    return keep


def _open(
    state: _State, closed: np.ndarray, size: Floats, request: Floats, remaining: Ints
) -> Ints:
    """The largest closed hosts, as many as the remaining demand needs at least."""
    candidates = np.flatnonzero(closed)
    if candidates.size == 0:
        return candidates
    demand = remaining @ request
    need = max(
        (hosts_for(state.free[candidates, d], float(demand[d])) for d in range(len(demand))),
        default=1,
    )
    # largest first; among equals, round-robin over racks (a host's rank in its rack
    # first), so opened hosts span racks and sites and spreads can hold
    rack = state.domains[1][candidates]
    by_rack = np.lexsort((candidates, rack))
    rank = np.empty(candidates.size, dtype=np.int64)
    starts = np.searchsorted(rack[by_rack], rack[by_rack])
    rank[by_rack] = np.arange(candidates.size) - starts
    order = candidates[np.lexsort((rack, rank, -size[candidates]))]
    return order[: max(1, min(need, order.size))]
