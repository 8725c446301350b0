"""Properties of every placement: capacity and spreads hold, reasons add up, replays match."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from podium.model import Resources, Spread
from podium.scheduler import (
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    default_scheduler,
    verify,
)

APPS = ["web", "db", "cache"]


@st.composite
def resources(draw: st.DrawFn, top: int) -> Resources:
    return Resources(
        cpu=draw(st.integers(0, top)) / 2,
        memory_mib=draw(st.integers(0, top)) * 256,
        iops=draw(st.integers(0, top)) * 100,
        net_mbps=draw(st.integers(0, top)) * 10,
    )


@st.composite
def requests(draw: st.DrawFn) -> PlacementRequest:
    n_hosts = draw(st.integers(0, 10))
    rows = []
    for i in range(n_hosts):
        capacity = draw(resources(16))
        used = draw(resources(8))
        allocated = Resources(
            min(used.cpu, capacity.cpu),
            min(used.memory_mib, capacity.memory_mib),
            min(used.iops, capacity.iops),
            min(used.net_mbps, capacity.net_mbps),
        )
        labels = {}
        if draw(st.booleans()):
            labels["rack"] = f"r{draw(st.integers(0, 3))}"
        if draw(st.booleans()):
            labels["site"] = f"s{draw(st.integers(0, 1))}"
        rows.append(
            HostRow(
                f"h{i}",
                capacity,
                allocated,
                ready=draw(st.booleans()) or draw(st.booleans()),
                cordoned=draw(st.integers(0, 5)) == 0,
                labels=labels,
            )
        )
    spreads = {app: draw(st.sampled_from([None, *Spread])) for app in APPS}
    guests = []
    for i in range(draw(st.integers(0, 30))):
        app = draw(st.sampled_from([None, *APPS]))
        guests.append(
            GuestRequest(
                f"g{i}",
                draw(resources(6)),
                app,
                spreads[app] if app else None,
                draw(st.integers(0, 2)),
            )
        )
    table = HostTable.build(rows)
    placed = {
        app: draw(st.lists(st.sampled_from(table.names), max_size=2)) if table.names else []
        for app in APPS
        if spreads[app] is Spread.HOST
    }
    return PlacementRequest(table, guests, placed)


@settings(max_examples=150, deadline=None)
@given(requests())
def test_no_placement_exceeds_capacity_or_breaks_a_spread(request: PlacementRequest) -> None:
    result = default_scheduler().place(request)
    assert verify(request, result) == []


@settings(max_examples=100, deadline=None)
@given(requests())
def test_every_reason_accounts_for_every_host(request: PlacementRequest) -> None:
    result = default_scheduler().place(request)
    n = len(request.hosts)
    for reason in result.unplaced.values():
        head, _, tail = reason.partition(": ")
        assert head == f"0/{n} hosts fit"
        if n:
            counts = [int(c) for c in re.findall(r"(?:^|, )(\d+) ", tail)]
            assert sum(counts) == n, reason


@settings(max_examples=100, deadline=None)
@given(requests(), st.randoms(use_true_random=False))
def test_placement_replays_whatever_the_input_order(request: PlacementRequest, rnd) -> None:
    guests = list(request.guests)
    rnd.shuffle(guests)
    shuffled = PlacementRequest(request.hosts, guests, request.placed)
    assert default_scheduler().place(request) == default_scheduler().place(shuffled)


def test_thousands_of_guests_on_hundreds_of_hosts_place_quickly() -> None:
    rows = [
        HostRow(f"h{i:03d}", Resources(32, 131072, 20000, 10000), labels={"rack": f"r{i % 20}"})
        for i in range(300)
    ]
    guests = [
        GuestRequest(f"app{a}-{i}", Resources(1, 2048, 100, 50), f"app{a}", Spread.HOST)
        for a in range(50)
        for i in range(100)
    ]
    request = PlacementRequest(HostTable.build(rows), guests)
    start = time.perf_counter()
    result = default_scheduler().place(request)
    elapsed = time.perf_counter() - start
    assert len(result.placements) == 5000
    assert verify(request, result) == []
    assert elapsed < 5.0, f"placing 5000 guests took {elapsed:.2f} s"
