"""Search for small instances: several orderings, then try to empty hosts.

The grouped planner places whole classes at once, which is fast and close to the
bound on large instances; on a few dozen guests one wasted host is a big ratio, so the
pack objective there also tries first-fit/best-fit decreasing under several orderings
(by each dimension, by dominant share, and seeded shuffles) and then, host by host
from the least loaded, moves every guest of a host elsewhere to free it. It never
calls an exact solver: the benchmark compares this against CP-SAT's optimum.
"""

from __future__ import annotations

import numpy as np

from podium.scheduler._instance import Instance
from podium.scheduler._table import Floats, Ints

EPS = 1e-9
SHUFFLES = 24  # seeded random orderings on top of the sorted ones


def improve(
    instance: Instance, host_of: Ints, reasons: dict[int, str]
) -> tuple[Ints, dict[int, str]]:
    """A plan that places the same guests (or more) on fewer hosts, if one is found."""
    search = _Search(instance)
    best = search.empty_hosts(host_of.copy())
    for order in search.orderings():
        for biggest_first in (True, False):
            candidate = search.greedy(order, biggest_first)
            if (candidate < 0).sum() > (host_of < 0).sum():
                continue
            if not set(np.flatnonzero(candidate < 0)) <= set(np.flatnonzero(host_of < 0)):
                continue
            candidate = search.empty_hosts(candidate)
            if _hosts(candidate) < _hosts(best):
                best = candidate
    return best, {g: r for g, r in reasons.items() if best[g] < 0}


def _hosts(host_of: Ints) -> int:
    return int(np.unique(host_of[host_of >= 0]).size)


class _Search:
    def __init__(self, instance: Instance) -> None:
        table = instance.hosts
        usable = table.ready & ~table.cordoned
        self.capacity: Floats = np.where(usable[:, None], table.capacity - table.allocated, -1.0)
        self.requests = instance.requests
        self.spread = instance.spread
        self.app = instance.app
        n = len(table)
        self.domains = (np.arange(n), table.rack, table.site)
        mean = table.capacity.mean(axis=0) if n else np.ones(4)
        self.scale = np.where(mean > 0, mean, 1.0)
        self.size = (table.capacity / self.scale).sum(axis=1)
        self.priority = instance.priority

    def orderings(self) -> list[Ints]:
        shares = self.requests / self.scale
        keys = [shares.max(axis=1), shares.sum(axis=1), *shares.T]
        orders = [np.lexsort((-k, self.spread == 0, -self.priority)) for k in keys]
        rng = np.random.default_rng(len(self.requests))
        for _ in range(SHUFFLES):
            noisy = shares.max(axis=1) * rng.uniform(0.7, 1.3, len(shares))
            orders.append(np.lexsort((-noisy, -self.priority)))
        return orders

    def _allowed(self, g: int, host_of: Ints, free: Floats) -> Ints:
        ok = np.all(free >= self.requests[g] - EPS, axis=1)
        level = int(self.spread[g])
        if level:
            domain = self.domains[level - 1]
            mates = (self.app == self.app[g]) & (host_of >= 0)
            mates[g] = False
            ok &= ~np.isin(domain, domain[host_of[mates]])
        rows: Ints = np.flatnonzero(ok)
        return rows

    def _free(self, host_of: Ints) -> Floats:
        free = self.capacity.copy()
        placed = host_of >= 0
        for d in range(free.shape[1]):
            free[:, d] -= np.bincount(host_of[placed], self.requests[placed, d], len(free))
        return free

    def greedy(self, order: Ints, biggest_first: bool) -> Ints:
        """Best fit over open hosts; else open the biggest (or smallest) host that fits."""
        host_of = np.full(len(self.requests), -1, dtype=np.int64)
        free = self.capacity.copy()
        used = np.zeros(len(free), dtype=np.bool_)
        for g in order.tolist():
            rows = self._allowed(g, host_of, free)
            if rows.size == 0:
                continue
            open_rows = rows[used[rows]]
            if open_rows.size:
                left = ((free[open_rows] - self.requests[g]) / self.scale).sum(axis=1)
                row = int(open_rows[np.argmin(left)])
            else:
                row = int(
                    rows[
                        np.argmax(self.size[rows]) if biggest_first else np.argmin(self.size[rows])
                    ]
                )
            host_of[g] = row
            free[row] -= self.requests[g]
            used[row] = True
        return host_of

    def empty_hosts(self, host_of: Ints) -> Ints:
        """Free hosts, least loaded first, by moving all their guests to other used hosts."""
        improved = True
        while improved:
            improved = False
            free = self._free(host_of)
            hosts = np.unique(host_of[host_of >= 0])
            load = ((self.capacity[hosts] - free[hosts]) / self.scale).sum(axis=1)
            for victim in hosts[np.argsort(load)].tolist():
                trial = host_of.copy()
                trial_free = free.copy()
                movers = np.flatnonzero(trial == victim)
                trial[movers] = -1
                trial_free[victim] = -1.0  # closed
                for g in movers[np.argsort(-(self.requests[movers] / self.scale).max(axis=1))]:
                    rows = self._allowed(int(g), trial, trial_free)
                    rows = rows[np.isin(rows, hosts)]
                    if rows.size == 0:
                        break
                    left = ((trial_free[rows] - self.requests[g]) / self.scale).sum(axis=1)
                    row = int(rows[np.argmin(left)])
                    trial[g] = row
                    trial_free[row] -= self.requests[g]
                else:
                    host_of = trial
                    improved = True
                    break
        return host_of
