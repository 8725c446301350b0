"""The rebalancer: reads the cluster, asks the pure planner, requests live migrations.

::

    hosts, guests (views), guest statuses (measured usage), traffic, migration records
        ──> gather() ──> RebalanceInput ──> plan_rebalance (podium.scheduler, pure)
        ──> Rebalancer.apply: Migrations.request(guest, target, reason "rebalance")
            (the migration controller starts them, paced by --max-migrations)

    RebalanceController (--rebalance): key "rebalance", looked at every ``interval`` s

*Budget and hysteresis survive restarts*: they are derived from the migration records
(one per guest, its latest): a record's ``created`` is the guest's last move, its
``source`` the host it last left; records of reason ``rebalance`` created in the last
hour count against the hourly budget; active records (any reason) against the
concurrent one. A guest's later migration (a drain, an operator's) replaces its record,
so the hourly count can only miss moves of guests that moved again since: the
hysteresis window still holds for them.

*Usage*: a guest status may carry ``usage`` (``{cpu, memory_mib, iops, net_mbps}``, as
measured on its host); without it the guest is assumed to use its reservations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podium.model import DIMENSIONS, Kind
from podium.scheduler._migration import guest_request_of, host_row_of
from podium.scheduler._rebalance import (
    HOUR,
    RebalanceGuest,
    RebalanceInput,
    RebalancePlan,
    RebalancePolicy,
    Vector,
    plan_rebalance,
)
from podium.state import ClusterState, Conflict, Migrations, NotFound, keys, loads, read_traffic
from podium.store import Event

if TYPE_CHECKING:
    from podium.controller._controllers import Context, Controller

log = logging.getLogger("podium.controller")

JSON = dict[str, Any]
REBALANCE_KEY = "rebalance"
REASON = "rebalance"
ACTIVE = frozenset({"pending", "preparing", "transferring"})


def usage_of(status: JSON | None) -> Vector | None:
    """A guest status's measured ``usage`` as a vector, or None if absent or malformed."""
    raw = (status or {}).get("usage")
    if not isinstance(raw, dict):
        return None
    try:
        values = [float(raw.get(dim, 0.0)) for dim in DIMENSIONS]
    except (TypeError, ValueError):
        return None
    return (values[0], values[1], values[2], values[3])


def input_of(
    host_views: Sequence[JSON],
    guest_views: Sequence[JSON],
    statuses: Mapping[str, JSON],
    records: Sequence[JSON],
    traffic: Mapping[tuple[str, str], float],
    *,
    now: float,
    spares: Iterable[str] = (),
) -> RebalanceInput:
    """The planner's input from what the store holds (pure: unit-tested without a store).

    Only running guests with no active migration may move; every bound guest's
    reservations are in its host view's ``allocated`` already.
    """
    last_moved: dict[str, float] = {}
    last_source: dict[str, str] = {}
    in_flight = hour = 0
    for r in records:
        guest, created = str(r.get("guest")), float(r.get("created") or 0.0)
        last_moved[guest] = created
        if r.get("source"):
            last_source[guest] = str(r["source"])
        if r.get("state") in ACTIVE:
            in_flight += 1
        if r.get("reason") == REASON and now - created < HOUR:
            hour += 1
    guests = []
    for view in guest_views:
        status = view.get("status", {})
        if status.get("state") != "running" or status.get("migration") or not status.get("host"):
            continue
        name = str(view["name"])
        guests.append(
            RebalanceGuest(
                guest_request_of(view), str(status["host"]), usage_of(statuses.get(name))
            )
        )
    return RebalanceInput(
        hosts=[host_row_of(h) for h in host_views],
        guests=guests,
        traffic=dict(traffic),
        last_moved=last_moved,
        last_source=last_source,
        now=now,
        in_flight=in_flight,
        moves_last_hour=hour,
        spares=frozenset(spares),
    )


@dataclass
class Rebalancer:
    """Plans (dry run) and applies rebalancing passes over one cluster state."""

    policy: RebalancePolicy = field(default_factory=RebalancePolicy)
    spares: frozenset[str] = frozenset()

    async def plan(self, state: ClusterState) -> RebalancePlan:
        """What a pass would do now (reads only)."""
        host_views, _ = await state.list_objects(Kind.HOST)
        guest_views, _ = await state.list_objects(Kind.GUEST)
        res = await state.store.range(keys.GUEST_STATUS)
        statuses = {kv.key[len(keys.GUEST_STATUS) :]: loads(kv.value) for kv in res.kvs}
        records, _ = await Migrations(state).list_records()
        traffic = (await read_traffic(state)).rates()
        data = input_of(
            host_views, guest_views, statuses, records, traffic, now=state.now(), spares=self.spares
        )
        return plan_rebalance(data, self.policy)

    async def apply(self, state: ClusterState) -> tuple[RebalancePlan, list[JSON], list[str]]:
        """Request the plan's migrations; the records made, and why some were not."""
        plan = await self.plan(state)
        made: list[JSON] = []
        skipped: list[str] = []
        migrations = Migrations(state)
        for move in plan.moves:
            why = (
                f"rebalance ({move.reason}): benefit {move.benefit:.1f} for ~{move.cost:.0f} s "
                "of migration"
            )
            try:
                record = await migrations.request(
                    move.guest, move.target, reason=REASON, message=why
                )
            except (Conflict, NotFound) as err:
                skipped.append(f"{move.guest}: {err}")
                continue
            made.append(record)
            await state.emit(
                "Guest",
                move.guest,
                "RebalanceMove",
                f"live migration {record['id']} of {move.guest}: {move.source} -> {move.target}; "
                + why,
            )
        return plan, made, skipped

    async def plan_dict(self, state: ClusterState) -> JSON:
        """:meth:`plan` as the API answers it."""
        return {**(await self.plan(state)).to_dict(), "policy": self._policy()}

    async def apply_dict(self, state: ClusterState) -> JSON:
        """:meth:`apply` as the API answers it."""
        plan, made, skipped = await self.apply(state)
        return {
            **plan.to_dict(),
            "policy": self._policy(),
            "requested": [m["id"] for m in made],
            "skipped": skipped,
        }

    def _policy(self) -> JSON:
        p = self.policy
        return {
            "hot": p.hot,
            "imbalance": p.imbalance,
            "min_ratio": p.min_ratio,
            "max_concurrent": p.max_concurrent,
            "max_per_hour": p.max_per_hour,
            "window_s": p.window,
            "spares": sorted(self.spares),
        }


class RebalanceController:
    """Applies one rebalancing pass every ``interval`` seconds while this server leads."""

    name = "rebalance"
    workers = 1
    debounce = 0.0
    prefixes: tuple[str, ...] = ()  # no store event concerns it

    def __init__(self, ctx: Context, rebalancer: Rebalancer, interval: float) -> None:
        self.ctx = ctx
        self.rebalancer = rebalancer
        self.interval = interval
        self._last: float | None = None  # when the last pass ran (this term)

    def keys_for(self, event: Event) -> Iterable[str]:
        return ()  # periodic: the load it reacts to changes without store events

    async def all_keys(self) -> Iterable[str]:
        return [REBALANCE_KEY]

    async def reconcile(self, key: str) -> float | None:
        if self.ctx.leadership.lost.is_set():
            return None
        now = self.ctx.clock()
        if self._last is not None and now - self._last < self.interval:
            return self.interval - (now - self._last)  # a resync came early: keep the pace
        self._last = now
        plan, made, skipped = await self.rebalancer.apply(self.ctx.state)
        if made or skipped:
            log.info(
                "rebalance: %d migrations requested (hot hosts %d -> %d), %d skipped",
                len(made),
                plan.hot_before,
                plan.hot_after,
                len(skipped),
            )
        return self.interval


def rebalance_controller(
    rebalancer: Rebalancer, interval: float
) -> Callable[[Context], Controller]:
    """A controller factory for :class:`ControllerManager` (``--rebalance``)."""

    def make(ctx: Context) -> Controller:
        return RebalanceController(ctx, rebalancer, interval)

    return make
