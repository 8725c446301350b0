"""Lower bounds on the number of hosts a set of guests needs.

Per dimension: the fewest hosts whose capacities add up to the total demand, taking
the largest hosts first (for identical hosts, ``ceil(demand / capacity)``). A spread
adds one more bound: an app with ``k`` replicas spread over hosts needs ``k`` hosts.
The bound is the maximum of these; no placement can use fewer hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from podium.model import DIMENSIONS
from podium.scheduler._table import Floats, Ints

EPS = 1e-9


@dataclass(frozen=True, slots=True)
class LowerBound:
    """The bound (``hosts``) and what each dimension (and spread) alone requires."""

    hosts: int
    per_dimension: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"hosts": self.hosts, "per_dimension": dict(self.per_dimension)}


def hosts_for(capacity: Floats, demand: float) -> int:
    """Fewest of these hosts (largest first) whose capacities add up to ``demand``.

    ``capacity`` is one dimension over the usable hosts. When even all of them fall
    short, the answer is ``len(capacity) + 1`` (more hosts than there are).
    """
    if demand <= EPS:
        return 0
    cumulative = np.cumsum(np.sort(capacity)[::-1])
    k = int(np.searchsorted(cumulative, demand - EPS * max(1.0, demand)))
    return k + 1


def lower_bound(
    capacity: Floats, requests: Floats, app: Ints | None = None, spread_host: Ints | None = None
) -> LowerBound:
    """The lower bound for placing ``requests`` (``(m, 4)``) on hosts of ``capacity``.

    ``app``/``spread_host``: per guest, an app code (``-1``: none) and whether its app
    spreads over hosts (any level: a rack or site spread also needs distinct hosts).
    """
    demand = requests.sum(axis=0) if len(requests) else np.zeros(len(DIMENSIONS))
    per = {d: hosts_for(capacity[:, i], float(demand[i])) for i, d in enumerate(DIMENSIONS)}
    if app is not None and spread_host is not None:
        spread_apps = app[(spread_host > 0) & (app >= 0)]
        per["spread"] = int(np.bincount(spread_apps).max()) if spread_apps.size else 0
    return LowerBound(hosts=max(per.values(), default=0), per_dimension=per)
