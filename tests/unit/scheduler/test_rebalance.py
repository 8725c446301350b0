"""The rebalance planner: triggers, benefit/cost, budget, hysteresis, and a drifting run."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from podium.model import Resources, Spread
from podium.scheduler import GuestRequest, HostRow, HostTable, PlacementRequest, default_scheduler
from podium.scheduler._rebalance import (
    HOUR,
    PolicyError,
    RebalanceGuest,
    RebalanceInput,
    RebalancePolicy,
    plan_rebalance,
)

CAP = Resources(cpu=10, memory_mib=10240, iops=1000, net_mbps=1000)
SMALL = Resources(cpu=2, memory_mib=1024, iops=100, net_mbps=100)


def hosts_with(guests: list[RebalanceGuest], names: list[str], **kw: object) -> list[HostRow]:
    """Host rows whose ``allocated`` is the sum of the reservations placed on them."""
    alloc: dict[str, Resources] = defaultdict(Resources)
    for g in guests:
        alloc[g.host] = alloc[g.host] + g.request.request
    return [HostRow(n, CAP, allocated=alloc[n], **kw) for n in names]  # type: ignore[arg-type]


def guest(name: str, host: str, load: float, *, app: str | None = None) -> RebalanceGuest:
    request = GuestRequest(name, SMALL, app=app, spread=Spread.HOST if app else None)
    usage = tuple(x * load for x in SMALL.as_tuple())
    return RebalanceGuest(request, host, usage)  # type: ignore[arg-type]


def hot_cluster() -> tuple[list[HostRow], list[RebalanceGuest]]:
    """h1 runs four guests at full load (cpu 8/10 reserved, 0.8 used... plus one more)."""
    guests = [guest(f"g{i}", "h1", 1.0) for i in range(5)]  # cpu 10/10: hot
    guests += [guest("c1", "h2", 0.2), guest("c2", "h3", 0.2)]
    return hosts_with(guests, ["h1", "h2", "h3"]), guests


def test_a_hot_host_sheds_a_guest_to_the_coolest_host_that_fits() -> None:
    hosts, guests = hot_cluster()
    plan = plan_rebalance(RebalanceInput(hosts, guests), RebalancePolicy(consolidate=False))
    assert plan.hot_before == 1 and plan.hot_after == 0
    first = plan.moves[0]
    assert (first.source, first.reason) == ("h1", "hot")
    assert first.target in ("h2", "h3") and first.benefit > 0 and first.cost > 0


def test_targets_respect_spreads_and_reservations() -> None:
    guests = [guest(f"w{i}", "h1", 1.0, app="web") for i in range(1)]
    guests += [guest(f"g{i}", "h1", 1.0) for i in range(4)]
    guests += [guest("w9", "h2", 0.1, app="web")]  # h2 holds a web replica already
    full = [guest(f"f{i}", "h3", 0.1) for i in range(5)]  # h3 reserved to the brim
    guests += full
    hosts = hosts_with(guests, ["h1", "h2", "h3", "h4"])
    plan = plan_rebalance(
        RebalanceInput(hosts, guests), RebalancePolicy(max_concurrent=5, consolidate=False)
    )
    assert plan.moves
    for m in plan.moves:
        assert m.target != "h3", "h3 has no reservation room left"
        if m.guest == "w0":
            assert m.target != "h2", "web replicas are spread over hosts"
    # the plan never overcommits a reservation: replay it
    alloc = {h.name: np.array(h.allocated.as_tuple()) for h in hosts}
    for m in plan.moves:
        alloc[m.source] -= SMALL.as_tuple()
        alloc[m.target] += SMALL.as_tuple()
    assert all((a <= np.array(CAP.as_tuple()) + 1e-9).all() for a in alloc.values())


def test_a_guest_moved_inside_the_window_stays_and_never_goes_back() -> None:
    hosts, guests = hot_cluster()
    names = [g.request.name for g in guests if g.host == "h1"]
    recent = dict.fromkeys(names, 900.0)  # every guest of h1 moved 100 s ago
    policy = RebalancePolicy(window=1800, consolidate=False)
    plan = plan_rebalance(RebalanceInput(hosts, guests, last_moved=recent, now=1000.0), policy)
    assert plan.moves == () and plan.hot_after == 1
    assert any("stay put" in note for note in plan.notes)
    # after the window, they may move, but not back to the host each one left
    left = dict.fromkeys(names, "h2")
    later = RebalanceInput(hosts, guests, last_moved=recent, last_source=left, now=3000.0)
    plan = plan_rebalance(later, policy)
    assert plan.moves and all(m.target != "h2" for m in plan.moves)


def test_the_budget_counts_migrations_in_flight_and_in_the_last_hour() -> None:
    hosts, guests = hot_cluster()
    policy = RebalancePolicy(max_concurrent=2, max_per_hour=3, consolidate=False)
    busy = plan_rebalance(RebalanceInput(hosts, guests, in_flight=2), policy)
    assert busy.moves == () and busy.budget == 0 and "no budget" in busy.notes[0]
    hour = plan_rebalance(RebalanceInput(hosts, guests, moves_last_hour=2), policy)
    assert hour.budget == 1 and len(hour.moves) <= 1


def test_moves_below_the_benefit_cost_ratio_are_not_proposed() -> None:
    hosts, guests = hot_cluster()
    plan = plan_rebalance(RebalanceInput(hosts, guests), RebalancePolicy(min_ratio=1e6))
    assert plan.moves == () and plan.hot_after == plan.hot_before == 1


def test_heavy_talkers_on_two_hosts_end_up_on_one() -> None:
    guests = [guest("a", "h1", 0.3), guest("b", "h2", 0.3), guest("c", "h3", 0.3)]
    hosts = hosts_with(guests, ["h1", "h2", "h3"])
    traffic = {("a", "b"): 50e6, ("a", "c"): 1e3}
    policy = RebalancePolicy(consolidate=False)
    plan = plan_rebalance(RebalanceInput(hosts, guests, traffic), policy)
    assert plan.moves[0].reason == "traffic"
    moved = plan.moves[0]
    assert {moved.guest, moved.target} in ({"a", "h2"}, {"b", "h1"})


def test_consolidation_frees_a_whole_host_and_spares_never_take_guests() -> None:
    guests = [guest("a", "h1", 0.2), guest("b", "h2", 0.2), guest("c", "h2", 0.2)]
    hosts = hosts_with(guests, ["h1", "h2", "spare"])
    plan = plan_rebalance(
        RebalanceInput(hosts, guests, spares=frozenset({"spare"})), RebalancePolicy()
    )
    assert [m.reason for m in plan.moves] == ["consolidate"]
    assert (plan.moves[0].guest, plan.moves[0].target) == ("a", "h2")


def test_a_policy_out_of_range_says_which_setting() -> None:
    with pytest.raises(PolicyError, match="hot threshold"):
        RebalancePolicy(hot=1.5).check()


def drifting_run(hosts_n: int, rounds: int, seed: int) -> dict[str, object]:
    """A small version of bench/rebalance.py: packed guests, drifting load, rounds."""
    rng = np.random.default_rng(seed)
    rows = [HostRow(f"h{i:02d}", CAP) for i in range(hosts_n)]
    reqs = [
        GuestRequest(f"a{a}-{r}", SMALL, app=f"a{a}", spread=Spread.HOST)
        for a in range(hosts_n * 3 // 4)
        for r in range(2)
    ]
    where = dict(
        default_scheduler().place(PlacementRequest(HostTable.build(rows), reqs)).placements
    )
    assert len(where) == len(reqs)
    mean = rng.uniform(0.7, 1.0, len(reqs))
    load = mean.copy()
    policy = RebalancePolicy(max_concurrent=3, max_per_hour=10, window=1800)
    moves: list[tuple[float, str]] = []
    last: dict[str, float] = {}
    source: dict[str, str] = {}
    hot_base, hot_after = [], []
    for k in range(rounds):
        now = 300.0 * (k + 1)
        load = np.clip(load + 0.4 * (mean - load) + rng.normal(0, 0.08, load.size), 0.05, 1.0)
        guests = [
            RebalanceGuest(g, where[g.name], tuple(x * load[i] for x in SMALL.as_tuple()))  # type: ignore[arg-type]
            for i, g in enumerate(reqs)
        ]
        hosts = hosts_with(guests, [r.name for r in rows])
        hour = sum(1 for t, _ in moves if now - t < HOUR)
        data = RebalanceInput(hosts, guests, {}, last, source, now, 0, hour)
        plan = plan_rebalance(data, policy)
        assert len(plan.moves) <= policy.max_concurrent
        assert hour + len(plan.moves) <= policy.max_per_hour
        hot_base.append(plan.hot_before)
        for m in plan.moves:
            where[m.guest] = m.target
            moves.append((now, m.guest))
            last[m.guest], source[m.guest] = now, m.source
        hot_after.append(plan.hot_after)
    times: dict[str, list[float]] = defaultdict(list)
    for t, g in moves:
        times[g].append(t)
    gaps = [b - a for ts in times.values() for a, b in itertools.pairwise(ts)]
    return {"moves": moves, "gaps": gaps, "before": hot_base, "after": hot_after}


def test_a_drifting_cluster_has_fewer_hot_hosts_within_budget_and_window() -> None:
    run = drifting_run(16, 24, seed=3)
    before, after = run["before"], run["after"]
    assert isinstance(before, list) and isinstance(after, list) and isinstance(run["gaps"], list)
    assert sum(before) > 0, "the scenario must make hosts hot"
    assert sum(after) < sum(before)
    assert all(gap >= 1800 for gap in run["gaps"])
    assert run["moves"]


def test_the_planner_is_deterministic() -> None:
    hosts, guests = hot_cluster()
    a = plan_rebalance(RebalanceInput(hosts, list(reversed(guests))), RebalancePolicy())
    b = plan_rebalance(RebalanceInput(list(reversed(hosts)), guests), RebalancePolicy())
    assert a.moves == b.moves


def test_unknown_hosts_and_unready_hosts_are_never_targets() -> None:
    hosts, guests = hot_cluster()
    hosts = [replace(h, ready=False) if h.name == "h2" else h for h in hosts]
    plan = plan_rebalance(RebalanceInput(hosts, guests), RebalancePolicy(consolidate=False))
    assert plan.moves and all(m.target == "h3" for m in plan.moves)
