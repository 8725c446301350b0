"""The bulk path: plain replicas placed by the planner keep every promise of ``place``."""

from __future__ import annotations

import random
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import podium.scheduler._bulk as bulk
from podium.model import Resources, Spread
from podium.scheduler import (
    FrameworkScheduler,
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    PlacementResult,
    TrafficIndex,
    default_scheduler,
)
from podium.scheduler._instance import Instance
from podium.scheduler._planner import Plan, plan
from tests.unit.scheduler.sched_support import constraint_problems, resources

BULK = 4  # bulk_min in these tests: small batches still take the bulk path
PLAIN_APPS = ["batch", "worker"]
SPREAD_APPS = ["web", "db"]
TAINTS = [("gpu", "a100"), ("dedicated", "batch")]
TOLERATIONS = ["gpu", "dedicated=batch"]
RISKS = [0.0, 0.0, 0.3, 0.8, 0.95]


def scheduler(bulk_min: int | None = BULK) -> FrameworkScheduler:
    base = default_scheduler()
    return FrameworkScheduler(base.filters, base.scores, bulk_min=bulk_min)


@st.composite
def bulk_requests(draw: st.DrawFn) -> PlacementRequest:
    """Hosts in every state; per priority, at least BULK plain guests mixed with others."""
    rows = []
    for i in range(draw(st.integers(0, 8))):
        capacity = draw(resources(16))
        allocated = draw(resources(10))  # may exceed capacity: an overcommitted host
        rows.append(
            HostRow(
                f"h{i}",
                capacity,
                allocated,
                ready=draw(st.integers(0, 5)) > 0,
                cordoned=draw(st.integers(0, 6)) == 0,
                labels={"rack": f"r{draw(st.integers(0, 2))}", "site": f"s{i % 2}"},
                draining=draw(st.integers(0, 6)) == 0,
                taints=dict(draw(st.lists(st.sampled_from(TAINTS), max_size=1))),
                health_risk=draw(st.sampled_from(RISKS)),
            )
        )
    table = HostTable.build(rows)
    shapes = draw(st.lists(resources(4), min_size=1, max_size=3))  # few shapes: groups
    spreads = {app: draw(st.sampled_from(list(Spread))) for app in SPREAD_APPS + PLAIN_APPS}
    guests: list[GuestRequest] = []
    for priority in draw(st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True)):
        for _ in range(draw(st.integers(BULK, BULK + 6))):
            guests.append(
                GuestRequest(
                    f"p{len(guests)}",
                    draw(st.sampled_from(shapes)),
                    draw(st.sampled_from([None, *PLAIN_APPS])),
                    priority=priority,
                )
            )
        for _ in range(draw(st.integers(0, 5))):
            app = draw(st.sampled_from(SPREAD_APPS + PLAIN_APPS))
            guests.append(
                GuestRequest(
                    f"c{len(guests)}",
                    draw(resources(4)),
                    app,
                    spreads.get(app) if draw(st.booleans()) else None,
                    priority,
                    moving=draw(st.integers(0, 3)) == 0,
                    near=tuple(draw(st.lists(st.sampled_from(PLAIN_APPS), max_size=1))),
                    tolerations=tuple(draw(st.lists(st.sampled_from(TOLERATIONS), unique=True))),
                )
            )
    placed: dict[str, list[str]] = {}
    if table.names:
        for app in SPREAD_APPS:
            placed[app] = draw(st.lists(st.sampled_from(table.names), max_size=2))
    return PlacementRequest(table, guests, placed)


def priority_inversions(request: PlacementRequest, result: PlacementResult) -> list[str]:
    """A higher-priority guest left out while a lower one asking for as much got a place.

    Only for guests whose hosts the lower one's allow (no spread or near on either, no
    tolerations on the lower one): room only shrinks as a batch goes on, so the higher
    one, tried first, would have fit where the lower one went.
    """
    free_of_rules = [
        g for g in request.guests if g.spread is None and not g.near and not g.tolerations
    ]
    found = []
    for high in request.guests:
        if high.name not in result.unplaced or high.spread is not None or high.near:
            continue
        need = np.array(high.request.as_tuple())
        found += [
            f"{high.name} unplaced, {low.name} placed"
            for low in free_of_rules
            if low.priority < high.priority
            and low.name in result.placements
            and (np.array(low.request.as_tuple()) >= need).all()
        ]
    return found


def reason_problems(request: PlacementRequest, result: PlacementResult) -> list[str]:
    """Reasons not of the form ``0/N hosts fit: ...`` with counts summing to N."""
    n = len(request.hosts)
    found = []
    for name, reason in result.unplaced.items():
        head, _, tail = reason.partition(": ")
        counts = [int(c) for c in re.findall(r"(?:^|, )(\d+) ", tail)]
        if head != f"0/{n} hosts fit" or (n and sum(counts) != n):
            found.append(f"{name}: {reason}")
    return found


# The planner searches small instances (<= 200 guests) hard, ~20 ms a batch: examples
# are kept few and small so these run in a few seconds.
@settings(max_examples=80, deadline=None)
@given(bulk_requests())
def test_bulk_placements_keep_capacity_eligibility_spreads_priority_and_reasons(
    request: PlacementRequest,
) -> None:
    result = scheduler().place(request)
    assert constraint_problems(request, result) == []
    assert priority_inversions(request, result) == []
    assert reason_problems(request, result) == []


def rows_of(table: HostTable) -> list[HostRow]:
    return [
        HostRow(
            name,
            Resources(*table.capacity[i]),
            Resources(*table.allocated[i]),
            ready=bool(table.ready[i]),
            cordoned=bool(table.cordoned[i]),
            labels={
                "rack": table.rack_names[table.rack[i]],
                "site": table.site_names[table.site[i]],
            },
            draining=bool(table.draining[i]),
            taints={
                k: v for (k, v), has in zip(table.taint_names, table.tainted[i], strict=True) if has
            },
            health_risk=float(table.health_risk[i]),
        )
        for i, name in enumerate(table.names)
    ]


@settings(max_examples=30, deadline=None)
@given(bulk_requests(), st.randoms(use_true_random=False))
def test_bulk_placement_replays_under_any_permutation(
    request: PlacementRequest, rnd: random.Random
) -> None:
    rows = rows_of(request.hosts)
    rnd.shuffle(rows)
    guests = list(request.guests)
    rnd.shuffle(guests)
    shuffled = PlacementRequest(HostTable.build(rows), guests, request.placed)
    assert scheduler().place(request) == scheduler().place(shuffled)


# -- the path itself ---------------------------------------------------------------------

ONE = Resources(cpu=1, memory_mib=1024, iops=10, net_mbps=10)
HOST = Resources(cpu=4, memory_mib=65536, iops=10_000, net_mbps=10_000)


def plain(
    n: int, app: str = "batch", priority: int = 0, request: Resources = ONE
) -> list[GuestRequest]:
    return [GuestRequest(f"{app}-{i}", request, app, priority=priority) for i in range(n)]


def test_default_scheduler_takes_the_bulk_path() -> None:
    assert default_scheduler().bulk_min == bulk.BULK_MIN


def test_plain_guests_go_through_the_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def spy(instance: Instance, objective: str, *, one_by_one: bool, search: bool) -> Plan:
        calls.append(len(instance))
        assert not search  # an online batch skips the offline search
        return plan(instance, objective, one_by_one=one_by_one, search=search)

    monkeypatch.setattr(bulk, "plan", spy)
    rows = [HostRow(f"h{i}", HOST) for i in range(3)]
    others = [GuestRequest("web-0", ONE, "web", Spread.HOST), GuestRequest("x", ONE, near=("a",))]
    result = scheduler().place(PlacementRequest(HostTable.build(rows), plain(6) + others))
    assert calls == [6]  # the plain ones; spread and near one by one
    assert len(result.placements) == 8


def test_fewer_plain_guests_than_bulk_min_go_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "plan", lambda *a, **k: pytest.fail("planner called"))
    rows = [HostRow(f"h{i}", HOST) for i in range(3)]
    request = PlacementRequest(HostTable.build(rows), plain(BULK - 1, priority=1) + plain(2, "b"))
    result = scheduler().place(request)
    assert result == scheduler(None).place(request)
    assert len(result.placements) == BULK + 1


def test_unplaced_plain_guests_get_the_one_by_one_reason() -> None:
    rows = [
        HostRow("h0", HOST),
        HostRow("h1", HOST),
        HostRow("h2", HOST, cordoned=True),
        HostRow("h3", HOST, taints={"gpu": "a100"}),
        HostRow("h4", HOST, health_risk=0.9),
    ]
    request = PlacementRequest(HostTable.build(rows), plain(10))
    result = scheduler().place(request)
    assert len(result.placements) == 8
    assert set(result.placements.values()) == {"h0", "h1"}
    reason = (
        "0/5 hosts fit: 1 were cordoned, 1 were unhealthy, "
        "1 had taint gpu=a100 not tolerated, 2 lacked cpu"
    )
    assert result.unplaced == {"batch-8": reason, "batch-9": reason}
    assert scheduler(None).place(request).unplaced == result.unplaced


def test_spread_and_moving_guests_go_before_the_bulk_and_near_after() -> None:
    rows = [HostRow("h0", HOST)]  # room for 4
    guests = [
        *plain(4),
        GuestRequest("web-0", ONE, "web", Spread.HOST),
        GuestRequest("lost-0", ONE, "lost", moving=True),
        GuestRequest("follower", ONE, "f", near=("batch",)),
    ]
    result = scheduler().place(PlacementRequest(HostTable.build(rows), guests))
    assert list(result.placements)[:2] == ["lost-0", "web-0"]
    assert len(result.placements) == 4
    assert "follower" in result.unplaced


def test_higher_priority_plain_guests_are_placed_first() -> None:
    rows = [HostRow("h0", HOST), HostRow("h1", HOST)]  # room for 8
    guests = plain(6, "low", priority=0) + plain(6, "high", priority=5)
    result = scheduler().place(PlacementRequest(HostTable.build(rows), guests))
    assert {g for g in result.placements if g.startswith("high")} == {f"high-{i}" for i in range(6)}
    assert len(result.placements) == 8


def test_bulk_counts_the_batch_and_existing_allocations() -> None:
    rows = [HostRow("h0", HOST, allocated=Resources(cpu=3)), HostRow("h1", HOST)]
    guests = [GuestRequest("web-0", ONE, "web", Spread.HOST), *plain(6)]
    result = scheduler().place(PlacementRequest(HostTable.build(rows), guests))
    request = PlacementRequest(HostTable.build(rows), guests)
    assert constraint_problems(request, result) == []
    assert len(result.placements) == 5  # 1 + 4 cpus free


def test_replicas_of_one_app_interleave_across_hosts() -> None:
    rows = [HostRow(f"h{i}", HOST) for i in range(4)]  # room for 16: full
    guests = plain(4, "a") + plain(4, "b") + plain(4, "c") + plain(4, "d")
    result = scheduler().place(PlacementRequest(HostTable.build(rows), guests))
    per_host: dict[tuple[str, str], int] = {}
    for name, host in result.placements.items():
        per_host[(host, name[0])] = per_host.get((host, name[0]), 0) + 1
    assert len(result.placements) == 16
    assert max(per_host.values()) == 1  # not four of one app on one host


def test_plain_means_no_plugin_but_fit_could_tell_hosts_apart() -> None:
    guests = [
        GuestRequest("a-0", ONE, "a"),
        GuestRequest("a-1", ONE, "a", tolerations=("gpu",)),
        GuestRequest("a-2", ONE, "a", moving=True),
        GuestRequest("b-0", ONE, "b"),  # app b talks (its old guests measured)
        GuestRequest("c-0", ONE, "c"),  # app c is talked to (declared by d)
        GuestRequest("d-0", ONE, "d", talks_to=("c",)),
        GuestRequest("e-0", ONE, "e"),  # its own traffic
        GuestRequest("n-0", ONE),
    ]
    request = PlacementRequest(
        HostTable.build([HostRow("h0", HOST)]),
        guests,
        traffic={("b-old0", "x-old0"): 5e6, ("e-0", "x-old0"): 5e6},
        guest_hosts={"b-old0": "h0", "x-old0": "h0"},
        guest_apps={"b-old0": "b", "x-old0": "x"},
    )
    index = TrafficIndex.build(request)
    assert [g.name for g in guests if bulk.is_plain(g, index)] == ["a-0", "n-0"]


def test_a_planner_overcommit_raises_instead_of_placing(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [HostRow("h0", HOST), HostRow("h1", HOST)]
    request = PlacementRequest(HostTable.build(rows), plain(6))
    monkeypatch.setattr(
        bulk, "plan", lambda inst, *a, **k: Plan(np.zeros(len(inst), dtype=np.int64), {}, "pack", 0)
    )
    with pytest.raises(AssertionError, match="overcommitted host h0: cpu"):
        scheduler().place(request)


def test_a_planner_choice_of_an_ineligible_host_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [HostRow("h0", HOST, cordoned=True), HostRow("h1", HOST)]
    request = PlacementRequest(HostTable.build(rows), plain(4))
    monkeypatch.setattr(
        bulk, "plan", lambda inst, *a, **k: Plan(np.zeros(len(inst), dtype=np.int64), {}, "pack", 0)
    )
    with pytest.raises(AssertionError, match="h0, which is ineligible"):
        scheduler().place(request)


def test_an_overloaded_batch_is_explained_once_per_request_quickly() -> None:
    rows = [HostRow(f"h{i:03d}", HOST) for i in range(200)]  # room for 800
    guests = plain(20_000, "a") + plain(20_000, "b", request=Resources(cpu=2, memory_mib=512))
    request = PlacementRequest(HostTable.build(rows), guests)
    start = time.process_time()
    result = default_scheduler().place(request)
    cpu = time.process_time() - start
    assert len(result.placements) + len(result.unplaced) == 40_000
    assert len(result.placements) >= 400  # at least half the room used (cpu 1 or 2 each)
    assert set(result.unplaced.values()) == {"0/200 hosts fit: 200 lacked cpu"}
    assert constraint_problems(request, result) == []
    # one by one this takes minutes; ~0.5 s of CPU here today: catch a blow-up only
    assert cpu < 20.0, f"placing 40,000 guests took {cpu:.2f} s of CPU"


def test_bulk_placements_count_for_later_spreads_and_near() -> None:
    rows = [HostRow(f"h{i}", Resources(8, 65536, 10_000, 10_000)) for i in range(3)]
    guests = [
        *plain(4, priority=5),  # packed on one host
        GuestRequest("batch-s", ONE, "batch", Spread.HOST),  # so not that host
        GuestRequest("follower", ONE, "f", near=("batch",)),  # only that host
    ]
    request = PlacementRequest(HostTable.build(rows), guests)
    result = scheduler().place(request)
    assert len(result.placements) == 6
    assert constraint_problems(request, result) == []
    (bulk_host,) = {result.placements[f"batch-{i}"] for i in range(4)}
    assert result.placements["follower"] == bulk_host
    assert result.placements["batch-s"] != bulk_host
