"""Score plugins beyond packing: soft spread, traffic affinity, health.

::

    SpreadScore    fewer replicas of the app: host 50, rack 30, site 20 (vs the most crowded)
    TrafficScore   expected bytes/s to guests on each host (bincount over host rows)
                   ──> 100 * local / max(all, heavy)
    HealthScore    100 * (1 - health risk)

Each returns 0..100 for the candidate rows and costs O(hosts) numpy work per guest
(plus, for traffic, O(the guest's measured partners)).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from podium.scheduler._plugins import BatchState
from podium.scheduler._table import Floats, GuestRequest, Ints, PlacementRequest

HEAVY_BPS = 1_000_000.0  # 1 MB/s (8 Mbit/s): a pair this busy counts as a heavy talker
# A new guest expects its app's traffic to at most TOP_APPS apps, each at least
# MIN_APP_SHARE of HEAVY_BPS: smaller rates move a score by under a point.
TOP_APPS = 8
MIN_APP_SHARE = 0.01


class SpreadScore:
    """Prefer hosts (then racks, then sites) with fewer replicas of the guest's app.

    The soft side of spread: with no hard ``spread`` (or inside the domains a hard
    spread still allows), replicas of one app fan out, so one host's loss takes few.
    Each level scores ``1 - count / most`` over the candidates (the emptiest 1, the
    most crowded 0), weighted host 50, rack 30, site 20.
    """

    name = "spread"

    def score(self, batch: BatchState, guest: GuestRequest, vector: Floats, rows: Ints) -> Floats:
        counts = batch.app_counts.get(guest.app) if guest.app is not None else None
        if counts is None or rows.size == 0 or not counts.any():
            return np.full(rows.size, 100.0)
        table = batch.table
        weights = counts.astype(np.float64)
        on_rack = np.bincount(table.rack, weights=weights, minlength=len(table.rack_names))
        on_site = np.bincount(table.site, weights=weights, minlength=len(table.site_names))
        score: Floats = np.zeros(rows.size, dtype=np.float64)
        for points, level in (
            (50.0, weights[rows]),
            (30.0, on_rack[table.rack[rows]]),
            (20.0, on_site[table.site[rows]]),
        ):
            most = float(level.max())
            score += points * (1.0 - level / most) if most > 0 else points
        return score


@dataclass(frozen=True)
class TrafficIndex:
    """Measured traffic of one batch, indexed once (O(pairs)) for every guest's score.

    ``partners[g]``: ``(other guest, bytes/s)``; ``app_rates[a][b]``: bytes/s an average
    guest of app ``a`` exchanges with app ``b`` (what a new guest of ``a`` will likely
    do); ``talked_by[a]``: apps in the batch that declare ``talks_to: [a]``.
    """

    partners: dict[str, list[tuple[str, float]]]
    app_rates: dict[str, dict[str, float]]
    talked_by: dict[str, set[str]]

    @classmethod
    def build(cls, request: PlacementRequest) -> TrafficIndex:
        apps = dict(request.guest_apps)
        apps.update({g.name: g.app for g in request.guests if g.app is not None})
        partners: dict[str, list[tuple[str, float]]] = defaultdict(list)
        totals: dict[tuple[str, str], float] = defaultdict(float)
        members: dict[tuple[str, str], set[str]] = defaultdict(set)
        for (a, b), bps in sorted(request.traffic.items()):  # sorted: sums replay exactly
            if a == b or not bps > 0:
                continue
            partners[a].append((b, float(bps)))
            partners[b].append((a, float(bps)))
            app_a, app_b = apps.get(a), apps.get(b)
            if app_a is not None and app_b is not None:
                for me, my_app, their_app in ((a, app_a, app_b), (b, app_b, app_a)):
                    totals[(my_app, their_app)] += float(bps)
                    members[(my_app, their_app)].add(me)
        rates: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for (mine, theirs), total in totals.items():
            rate = total / len(members[(mine, theirs)])
            if rate >= HEAVY_BPS * MIN_APP_SHARE:
                rates[mine].append((rate, theirs))
        # each partner app costs an O(hosts) pass per guest: keep the few that matter
        app_rates = {
            mine: {
                theirs: rate
                for rate, theirs in sorted(pairs, key=lambda p: (-p[0], p[1]))[:TOP_APPS]
            }
            for mine, pairs in rates.items()
        }
        talked_by: dict[str, set[str]] = defaultdict(set)
        for g in request.guests:
            for other in g.talks_to:
                if g.app is not None:
                    talked_by[other].add(g.app)
        return cls(dict(partners), dict(app_rates), dict(talked_by))

    @classmethod
    def of(cls, batch: BatchState) -> TrafficIndex:
        """The batch's index, built on first use."""
        index = batch.cache.get("traffic")
        if not isinstance(index, TrafficIndex):
            request = batch.request or PlacementRequest(batch.table, ())
            index = batch.cache["traffic"] = cls.build(request)
        return index


class TrafficScore:
    """Prefer hosts running the guests this guest talks to, so their traffic stays local.

    Expected bytes/s to each host: the guest's own measured traffic to guests placed
    there (including this batch's); for a guest with no history, its app's average
    traffic to each app, shared over that app's replicas; plus ``declared_bps`` per
    declared ``talks_to`` app (either direction, shared likewise). Score: the share
    kept on the host, against at least ``heavy_bps``, so light talkers barely move a
    placement and a heavy pair outweighs packing.
    """

    name = "traffic"

    def __init__(self, heavy_bps: float = HEAVY_BPS, declared_bps: float = HEAVY_BPS) -> None:
        self.heavy_bps = heavy_bps
        self.declared_bps = declared_bps

    def expected(self, batch: BatchState, guest: GuestRequest) -> Floats:
        """Expected bytes/s between ``guest`` and each host's guests (every row)."""
        index = TrafficIndex.of(batch)
        n = len(batch.table)
        expected = np.zeros(n, dtype=np.float64)
        own = index.partners.get(guest.name)
        if own:
            placed = [(batch.where[o], bps) for o, bps in own if o in batch.where]
            if placed:
                rows, rates = zip(*placed, strict=True)
                expected += np.bincount(rows, weights=rates, minlength=n)
        elif guest.app is not None:
            for app, rate in index.app_rates.get(guest.app, {}).items():
                expected += rate * self._share(batch, app)
        declared = set(guest.talks_to)
        if guest.app is not None:
            declared |= index.talked_by.get(guest.app, set())
        for app in sorted(declared):
            expected += self.declared_bps * self._share(batch, app)
        return expected

    @staticmethod
    def _share(batch: BatchState, app: str) -> Floats:
        counts = batch.app_counts.get(app)
        total = int(counts.sum()) if counts is not None else 0
        if counts is None or total == 0:
            return np.zeros(len(batch.table), dtype=np.float64)
        share: Floats = counts / total
        return share

    def score(self, batch: BatchState, guest: GuestRequest, vector: Floats, rows: Ints) -> Floats:
        index = TrafficIndex.of(batch)
        if not (index.partners or index.talked_by or guest.talks_to):  # nothing to go by
            return np.zeros(rows.size, dtype=np.float64)
        expected = self.expected(batch, guest)
        total = float(expected.sum())
        if total <= 0.0:
            return np.zeros(rows.size, dtype=np.float64)
        score: Floats = 100.0 * expected[rows] / max(total, self.heavy_bps)
        return score


class HealthScore:
    """Prefer healthy hosts: 100 * (1 - risk). Hosts past the threshold are filtered."""

    name = "health"

    def score(self, batch: BatchState, guest: GuestRequest, vector: Floats, rows: Ints) -> Floats:
        if not batch.table.at_risk:
            return np.full(rows.size, 100.0)
        score: Floats = 100.0 * (1.0 - batch.table.health_risk[rows])
        return score
