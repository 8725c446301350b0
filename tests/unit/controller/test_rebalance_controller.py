"""The rebalance controller over a memory store: requests, budget, hysteresis from records."""

from __future__ import annotations

from typing import Any

from podium.controller._controllers import Context
from podium.controller._events import EventRecorder
from podium.controller._rebalance import (
    REBALANCE_KEY,
    RebalanceController,
    Rebalancer,
    input_of,
    usage_of,
)
from podium.model import GuestState, Kind, Manifest
from podium.scheduler import default_scheduler
from podium.scheduler._rebalance import RebalancePolicy
from podium.state import ClusterState, Migrations, dumps, keys, loads
from tests.unit.controller.ctrl_support import FakeClock, join, lead_by_fiat

REQ = {"cpu": 2, "memory_mib": 1024}


async def running(state: ClusterState, name: str, on: str, cpu_used: float) -> None:
    """A running guest whose status reports measured usage (as an agent would)."""
    await state.apply([Manifest(Kind.GUEST, name, {"image": "tiny", "request": REQ})])
    bound = await state.bind(name, on, expected_revision=0)
    assert bound is not None
    await state.report_guest_status(on, name, bound.epoch, GuestState.RUNNING)
    kv = await state.store.get(keys.guest_status_key(name))
    assert kv is not None
    status = loads(kv.value) | {"usage": {"cpu": cpu_used, "memory_mib": 512}}
    await state.store.put(keys.guest_status_key(name), dumps(status))


async def hot_h1(state: ClusterState) -> None:
    for h in ("h1", "h2", "h3"):
        await join(state, h, ttl=600)
    for i in range(4):
        await running(state, f"g{i}", "h1", 2.0)  # 8 of 8 cpu used: hot


async def controller(state: ClusterState, clock: FakeClock, policy: RebalancePolicy) -> Any:
    ctx = Context(
        state, await lead_by_fiat(state), EventRecorder(state), default_scheduler(), 10, clock
    )
    return RebalanceController(ctx, Rebalancer(policy), interval=30.0)


def test_usage_comes_from_the_status_or_is_absent() -> None:
    assert usage_of({"usage": {"cpu": 1.5, "iops": 10}}) == (1.5, 0.0, 10.0, 0.0)
    assert usage_of({"usage": "lots"}) is None and usage_of(None) is None


def test_input_counts_in_flight_and_last_hour_and_remembers_moves() -> None:
    records = [
        {
            "guest": "a",
            "created": 900.0,
            "source": "h1",
            "state": "transferring",
            "reason": "drain",
        },
        {
            "guest": "b",
            "created": 100.0,
            "source": "h2",
            "state": "completed",
            "reason": "rebalance",
        },
        {
            "guest": "c",
            "created": 3000.0,
            "source": "h3",
            "state": "completed",
            "reason": "rebalance",
        },
    ]
    data = input_of([], [], {}, records, {}, now=4000.0, spares=["s"])
    assert (data.in_flight, data.moves_last_hour) == (1, 1)
    assert data.last_moved == {"a": 900.0, "b": 100.0, "c": 3000.0}
    assert data.last_source["c"] == "h3" and data.spares == frozenset({"s"})


async def test_a_pass_requests_migrations_within_the_budget_and_says_why(
    state: ClusterState, clock: FakeClock
) -> None:
    await hot_h1(state)
    policy = RebalancePolicy(max_concurrent=2, consolidate=False)
    rc = await controller(state, clock, policy)
    assert await rc.reconcile(REBALANCE_KEY) == 30.0  # periodic
    records, _ = await Migrations(state).list_records()
    assert len(records) == 2
    assert {r["reason"] for r in records} == {"rebalance"}
    assert {r["source"] for r in records} == {"h1"} and {r["target"] for r in records} <= {
        "h2",
        "h3",
    }
    reasons = sorted(r["message"].partition(":")[0] for r in records)
    assert "rebalance (hot)" in reasons, reasons  # h1 is hot; the second may even it out
    assert all("benefit" in r["message"] for r in records)
    assert await rc.reconcile(REBALANCE_KEY) == 30.0  # too early: waits out the interval
    clock.advance(10)
    assert await rc.reconcile(REBALANCE_KEY) == 20.0
    # the two in flight use the whole budget: the next pass requests nothing
    plan = await rc.rebalancer.plan(state)
    assert plan.budget == 0 and plan.moves == ()


async def test_hysteresis_holds_across_a_new_rebalancer_from_the_records(
    state: ClusterState, clock: FakeClock
) -> None:
    await hot_h1(state)
    policy = RebalancePolicy(max_concurrent=1, window=100, consolidate=False)
    first = await controller(state, clock, policy)
    await first.reconcile(REBALANCE_KEY)
    migrations = Migrations(state)
    (record,) = (await migrations.list_records())[0]
    assert await migrations.fail(record["guest"], record["id"], "test: give up")
    clock.advance(60)
    # a restarted server: a fresh rebalancer, only the store remembers
    plan = await Rebalancer(policy).plan(state)
    assert plan.moves and all(m.guest != record["guest"] for m in plan.moves)
    clock.advance(100)  # past the window (within the hosts' leases)
    later = await Rebalancer(policy).plan(state)
    assert record["guest"] in {m.guest for m in later.moves}  # free to move again
