"""The rebalancer's planner: which live migrations are worth their cost, right now.

::

    RebalanceInput: hosts (capacity, reservations placed), guests (host, request, usage),
                    traffic (sorted pair -> bytes/s), last moves, budget used
        │  budget = min(max_concurrent - in flight, max_per_hour - moves in the last hour)
        ▼  repeat while budget is left (each step re-reads the state the last move left):
      1 hot        a host above ``hot`` (usage / capacity, any dimension): move the guest
                   whose leaving cuts the most hot excess per second of copying
      2 traffic    heavy talkers on two hosts: move one next to the other
      3 imbalance  std dev of dominant usage above ``imbalance``: hottest -> coolest
      4 consolidate  a lightly used host whose guests all fit elsewhere: empty it
        ▼
    Move(guest, source, target, reason, benefit, cost) only if benefit / cost >= min_ratio

Units. *benefit* is in points: 100 per unit of hot excess removed (sum over hosts of
usage share above ``hot``), 100 per unit of dominant-share gap closed between source and
target, 100 per host freed (shared by its moves), 1 per MiB/s of traffic kept on one
host. *cost* is the migration time in seconds: ``setup_s + memory_mib / copy_mib_s``.

Hysteresis: a guest moved less than ``window`` seconds ago is not moved; a guest never
goes back to the host it last left while ``2 * window`` has not passed (no ping-pong).
Every target is chosen by the scheduler's filters (reservations, spreads, ready,
cordoned) over all hosts but the source, plus a usage headroom filter (no move makes
its target hot). Pure: no I/O; the same code runs in the controller, the API's
``/rebalance/plan`` and ``bench/rebalance.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from podium.scheduler._rebalance_fit import choose_target, utilisation
from podium.scheduler._table import Bools, Floats, GuestRequest, HostRow, HostTable

HOUR = 3600.0
MIB = float(1 << 20)
Vector = tuple[float, float, float, float]


class PolicyError(ValueError):
    """A rebalance setting is out of range; ``str()`` names it and the accepted range."""


@dataclass(frozen=True, slots=True)
class RebalancePolicy:
    """Thresholds, budget and hysteresis of the rebalancer (see the module docstring)."""

    hot: float = 0.85  # usage share above which a host is hot (any dimension)
    imbalance: float = 0.15  # std dev of the hosts' dominant usage share that triggers
    min_ratio: float = 0.01  # benefit points per second of migration, at least
    max_concurrent: int = 2  # migrations in flight, cluster-wide
    max_per_hour: int = 12  # migrations started by the rebalancer in any hour
    window: float = 1800.0  # seconds before a moved guest may move again
    copy_mib_s: float = 128.0  # migration bandwidth (QEMU's default)
    setup_s: float = 1.0  # fixed cost of a migration (target start, switch-over)
    traffic_min: float = 1_000_000.0  # bytes/s between two guests worth co-locating
    consolidate: bool = True

    def check(self) -> RebalancePolicy:
        """Itself, or :class:`PolicyError` naming the setting at fault."""
        if not 0.0 < self.hot <= 1.0:
            raise PolicyError(f"rebalance hot threshold {self.hot} must be in (0, 1], e.g. 0.85")
        if self.max_concurrent < 0 or self.max_per_hour < 0:
            raise PolicyError("rebalance budgets (concurrent, per hour) must be 0 or more")
        if self.window < 0 or self.copy_mib_s <= 0 or self.min_ratio < 0:
            raise PolicyError(
                "rebalance window and min ratio must be 0 or more, copy bandwidth above 0"
            )
        return self


@dataclass(frozen=True, slots=True)
class RebalanceGuest:
    """A placed guest: its request (reservations, app, spread), host and measured usage."""

    request: GuestRequest
    host: str
    usage: Vector | None = None  # per dimension; None: assume its reservations


@dataclass(frozen=True)
class RebalanceInput:
    """What the planner decides on. ``hosts[*].allocated``: reservations placed there."""

    hosts: Sequence[HostRow]
    guests: Sequence[RebalanceGuest]
    traffic: Mapping[tuple[str, str], float] = field(default_factory=dict)
    last_moved: Mapping[str, float] = field(default_factory=dict)  # guest -> time
    last_source: Mapping[str, str] = field(default_factory=dict)  # guest -> host it left
    now: float = 0.0
    in_flight: int = 0  # migrations in flight now (any reason)
    moves_last_hour: int = 0  # rebalancer migrations started in the last hour
    spares: frozenset[str] = frozenset()  # dedicated spares: never targets


@dataclass(frozen=True, slots=True)
class Move:
    """One proposed live migration and why."""

    guest: str
    source: str
    target: str
    reason: str  # hot | traffic | imbalance | consolidate
    benefit: float  # points (module docstring)
    cost: float  # seconds of migration

    def to_dict(self) -> dict[str, Any]:
        return {
            "guest": self.guest,
            "from": self.source,
            "to": self.target,
            "reason": self.reason,
            "benefit": round(self.benefit, 3),
            "cost": round(self.cost, 3),
        }


@dataclass(frozen=True)
class RebalancePlan:
    """The moves, in order, and the cluster's figures before and after them."""

    moves: tuple[Move, ...]
    budget: int  # moves allowed this pass
    hot_before: int
    hot_after: int
    imbalance_before: float
    imbalance_after: float
    notes: tuple[str, ...] = ()  # why the plan is short (budget, hysteresis, nothing to do)

    def to_dict(self) -> dict[str, Any]:
        return {
            "moves": [m.to_dict() for m in self.moves],
            "budget": self.budget,
            "hot_before": self.hot_before,
            "hot_after": self.hot_after,
            "imbalance_before": round(self.imbalance_before, 4),
            "imbalance_after": round(self.imbalance_after, 4),
            "notes": list(self.notes),
        }


class _Cluster:
    """Arrays of the input, updated virtually as moves are accepted."""

    def __init__(self, data: RebalanceInput, policy: RebalancePolicy) -> None:
        self.policy = policy
        self.table = HostTable.build(list(data.hosts))
        t = self.table
        self.spare: Bools = np.array([n in data.spares for n in t.names], dtype=np.bool_)
        self.active: Bools = t.ready & ~t.cordoned & ~self.spare
        self.alloc: Floats = t.allocated.copy()
        placed = [g for g in data.guests if g.host in t.index]
        self.guests = sorted(placed, key=lambda g: g.request.name)  # order-independent
        self.gidx = {g.request.name: i for i, g in enumerate(self.guests)}
        self.where = np.array([t.index[g.host] for g in self.guests], dtype=np.int64)
        req = [g.request.request.as_tuple() for g in self.guests]
        self.req: Floats = np.array(req, dtype=np.float64).reshape(-1, 4)
        use = [g.usage if g.usage is not None else r for g, r in zip(self.guests, req, strict=True)]
        self.use: Floats = np.array(use, dtype=np.float64).reshape(-1, 4)
        self.usage: Floats = np.zeros_like(self.alloc)
        np.add.at(self.usage, self.where, self.use)
        self.frozen: Bools = np.array(
            [
                data.now - data.last_moved.get(g.request.name, -np.inf) < policy.window
                for g in self.guests
            ],
            dtype=np.bool_,
        )
        self.no_return = {
            g: h
            for g, h in data.last_source.items()
            if data.now - data.last_moved.get(g, -np.inf) < 2 * policy.window
        }
        self.by_app: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(self.guests):
            if g.request.app:
                self.by_app[g.request.app].append(i)

    # -- figures -------------------------------------------------------------------

    def share(self) -> Floats:
        return utilisation(self.usage, self.table.capacity)

    def dominant(self) -> Floats:
        out: Floats = self.share().max(axis=1) if len(self.table) else np.zeros(0)
        return out

    def hot_count(self) -> int:
        return int(np.count_nonzero((self.dominant() > self.policy.hot) & self.table.ready))

    def in_use(self) -> Bools:
        used: Bools = self.active & (np.bincount(self.where, minlength=len(self.table)) > 0)
        return used

    def imbalance(self) -> float:
        dom = self.dominant()[self.in_use()]
        return float(dom.std()) if dom.size else 0.0

    def excess(self, rows: Sequence[int], usage: Floats) -> float:
        share = utilisation(usage[list(rows)], self.table.capacity[list(rows)])
        return float(np.clip(share - self.policy.hot, 0.0, None).sum())

    def cost(self, i: int) -> float:
        return self.policy.setup_s + float(self.req[i, 1]) / self.policy.copy_mib_s

    # -- moves ---------------------------------------------------------------------

    def target(
        self, i: int, *, only: int | None = None, pack: bool = False, used: bool = False
    ) -> int | None:
        """Where guest ``i`` may go (``only`` that host; ``used``: hosts in use only)."""
        t = self.table
        exclude = ~(self.in_use() if used else self.active)
        exclude[self.where[i]] = True
        back = self.no_return.get(self.guests[i].request.name)
        if back in t.index:
            exclude[t.index[back]] = True
        if only is not None:
            keep = exclude[only]
            exclude[:] = True
            exclude[only] = keep
        guest = self.guests[i].request
        placed: dict[str, list[str]] = {}
        if guest.app:
            placed[guest.app] = [t.names[self.where[j]] for j in self.by_app[guest.app] if j != i]
        name = choose_target(
            t,
            self.alloc,
            self.usage,
            guest,
            self.use[i],
            placed,
            exclude=exclude,
            hot=self.policy.hot,
            pack=pack,
        )
        return None if name is None else t.index[name]

    def after(self, i: int, dst: int) -> Floats:
        usage = self.usage.copy()
        usage[self.where[i]] -= self.use[i]
        usage[dst] += self.use[i]
        return usage

    def apply(self, i: int, dst: int) -> None:
        src = int(self.where[i])
        self.alloc[src] -= self.req[i]
        self.alloc[dst] += self.req[i]
        self.usage[src] -= self.use[i]
        self.usage[dst] += self.use[i]
        self.where[i] = dst
        self.frozen[i] = True

    def move(self, i: int, dst: int, reason: str, benefit: float) -> Move:
        t = self.table
        g = self.guests[i].request.name
        return Move(g, t.names[self.where[i]], t.names[dst], reason, benefit, self.cost(i))


CANDIDATES = 6  # guests tried per hot or unbalanced host (best estimated ratio first)


def _best_from(c: _Cluster, src: int, reason: str) -> tuple[int, int, float] | None:
    """The move off ``src`` with the best benefit/cost ratio, if one passes the threshold."""
    rows = np.flatnonzero((c.where == src) & ~c.frozen)
    if rows.size == 0:
        return None
    cap = c.table.capacity[src]
    share = utilisation(c.use[rows], np.broadcast_to(cap, c.use[rows].shape)).max(axis=1)
    gain = np.minimum(share, max(float(c.dominant()[src]) - c.policy.hot, 0.0) or 1.0)
    weight = gain / (c.policy.setup_s + c.req[rows, 1] / c.policy.copy_mib_s)
    best: tuple[float, int, int, float] | None = None
    for i in rows[np.argsort(-weight, kind="stable")][:CANDIDATES]:
        dst = c.target(int(i), used=reason != "hot")
        if dst is None:
            continue
        pair = [src, dst]
        if reason == "hot":
            benefit = 100.0 * (c.excess(pair, c.usage) - c.excess(pair, c.after(int(i), dst)))
        else:
            before = utilisation(c.usage[pair], c.table.capacity[pair]).max(axis=1)
            new = c.after(int(i), dst)
            after = utilisation(new[pair], c.table.capacity[pair]).max(axis=1)
            benefit = 100.0 * (float(before[0] - before[1]) - abs(float(after[0] - after[1])))
        ratio = benefit / c.cost(int(i))
        if benefit > 0 and ratio >= c.policy.min_ratio and (best is None or ratio > best[0]):
            best = (ratio, int(i), dst, benefit)
    return None if best is None else (best[1], best[2], best[3])


def _hot_step(c: _Cluster) -> Move | None:
    dom = c.dominant()
    for src in np.argsort(-dom, kind="stable"):
        if dom[src] <= c.policy.hot:
            break
        found = _best_from(c, int(src), "hot")
        if found is not None:
            i, dst, benefit = found
            return c.move(i, dst, "hot", benefit)
    return None


def _traffic_step(c: _Cluster, traffic: Mapping[tuple[str, str], float]) -> Move | None:
    heavy = sorted(
        ((rate, a, b) for (a, b), rate in traffic.items() if rate >= c.policy.traffic_min),
        reverse=True,
    )
    for rate, a, b in heavy:
        ia, ib = c.gidx.get(a), c.gidx.get(b)
        if ia is None or ib is None or c.where[ia] == c.where[ib]:
            continue
        for mover, stay in ((ia, ib), (ib, ia)):
            if c.frozen[mover]:
                continue
            dst = c.target(mover, only=int(c.where[stay]))
            if dst is None:
                continue
            name = c.guests[mover].request.name
            lost = sum(
                r
                for (x, y), r in traffic.items()
                if name in (x, y)
                and (other := c.gidx.get(y if x == name else x)) is not None
                and other != mover
                and c.where[other] == c.where[mover]
            )
            benefit = (rate - lost) / MIB
            if benefit > 0 and benefit / c.cost(mover) >= c.policy.min_ratio:
                return c.move(mover, dst, "traffic", benefit)
    return None


def _imbalance_step(c: _Cluster) -> Move | None:
    if c.imbalance() <= c.policy.imbalance:
        return None
    dom = np.where(c.in_use(), c.dominant(), -np.inf)
    found = _best_from(c, int(np.argmax(dom)), "imbalance")
    if found is None:
        return None
    i, dst, benefit = found
    return c.move(i, dst, "imbalance", benefit)


def _consolidate_step(c: _Cluster, budget: int) -> list[Move]:
    """Empty the least used host whose guests all fit elsewhere, within ``budget`` moves."""
    counts = np.bincount(c.where, minlength=len(c.table))
    dom = np.where(c.active & (counts > 0), c.dominant(), np.inf)
    for src in np.argsort(dom, kind="stable")[:3]:
        if not np.isfinite(dom[src]):
            break
        if counts[src] > budget:
            continue
        rows = np.flatnonzero(c.where == src)
        if c.frozen[rows].any():
            continue
        saved = (c.alloc.copy(), c.usage.copy(), c.where.copy(), c.frozen.copy())
        moves: list[Move] = []
        for i in rows:
            dst = c.target(int(i), pack=True, used=True)
            if dst is None:
                break
            benefit = 100.0 / rows.size
            if benefit / c.cost(int(i)) < c.policy.min_ratio:
                break
            moves.append(c.move(int(i), dst, "consolidate", benefit))
            c.apply(int(i), dst)
        if len(moves) == rows.size:
            return moves
        c.alloc, c.usage, c.where, c.frozen = saved
    return []


def plan_rebalance(data: RebalanceInput, policy: RebalancePolicy) -> RebalancePlan:
    """The live migrations worth making now, within the budget and the hysteresis."""
    policy.check()
    c = _Cluster(data, policy)
    hot0, imb0 = c.hot_count(), c.imbalance()
    budget = max(
        0,
        min(
            policy.max_concurrent - data.in_flight,
            policy.max_per_hour - data.moves_last_hour,
        ),
    )
    notes: list[str] = []
    if budget == 0:
        notes.append(
            f"no budget: {data.in_flight} migrations in flight (max {policy.max_concurrent}), "
            f"{data.moves_last_hour} in the last hour (max {policy.max_per_hour})"
        )
    moves: list[Move] = []
    while len(moves) < budget:
        move = _hot_step(c) or _traffic_step(c, data.traffic) or _imbalance_step(c)
        if move is None:
            break
        c.apply(c.gidx[move.guest], c.table.index[move.target])
        moves.append(move)
    if policy.consolidate and len(moves) < budget and c.hot_count() == 0:
        moves += _consolidate_step(c, budget - len(moves))
    held = int(np.count_nonzero(c.frozen)) - len(moves)
    if held:
        notes.append(f"{held} guests moved within the last {policy.window:g} s stay put")
    if not moves and budget:
        notes.append("nothing worth moving: no hot host, heavy talkers apart, or imbalance")
    return RebalancePlan(
        tuple(moves), budget, hot0, c.hot_count(), imb0, c.imbalance(), tuple(notes)
    )
