"""Properties of every placement: capacity and spreads hold, reasons add up, replays match."""

from __future__ import annotations

import random
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
from tests.unit.scheduler.sched_support import constraint_problems, resources

APPS = ["web", "db", "cache"]


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
    assert_reasons_count_every_host(request)


def assert_reasons_count_every_host(request: PlacementRequest) -> None:
    """Each unplaced guest's reason is ``0/N hosts fit: ...`` with counts summing to N."""
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
    start = time.process_time()
    result = default_scheduler().place(request)
    cpu = time.process_time() - start
    assert len(result.placements) == 5000
    assert verify(request, result) == []
    # Speed is measured by bench/placement.py; this only catches a blow-up (CPU time, so
    # a loaded CI box does not fail it): ~1 s of CPU here today.
    assert cpu < 20.0, f"placing 5000 guests took {cpu:.2f} s of CPU"


# -- every constraint: host state, taints, near; traffic and health in the mix ------------

TAINTS = [("gpu", "a100"), ("gpu", "h100"), ("dedicated", "batch")]
TOLERATIONS = ["gpu", "gpu=a100", "gpu=h100", "dedicated=batch"]
RISKS = [0.0, 0.0, 0.3, 0.79, 0.8, 0.95]


@st.composite
def constrained_requests(draw: st.DrawFn) -> PlacementRequest:
    n_hosts = draw(st.integers(0, 10))
    rows = []
    for i in range(n_hosts):
        taints = dict(draw(st.lists(st.sampled_from(TAINTS), max_size=2, unique_by=lambda t: t[0])))
        rows.append(
            HostRow(
                f"h{i}",
                draw(resources(16)),
                ready=draw(st.integers(0, 5)) > 0,
                cordoned=draw(st.integers(0, 6)) == 0,
                labels={"rack": f"r{draw(st.integers(0, 3))}", "site": f"s{i % 2}"},
                draining=draw(st.integers(0, 6)) == 0,
                taints=taints if draw(st.integers(0, 2)) == 0 else {},
                health_risk=draw(st.sampled_from(RISKS)),
            )
        )
    table = HostTable.build(rows)
    spreads = {app: draw(st.sampled_from([None, *Spread])) for app in APPS}
    guests = []
    for i in range(draw(st.integers(0, 25))):
        app = draw(st.sampled_from([None, *APPS]))
        others = [a for a in APPS if a != app]
        guests.append(
            GuestRequest(
                f"g{i}",
                draw(resources(5)),
                app,
                spreads[app] if app else None,
                draw(st.integers(0, 2)),
                near=tuple(draw(st.lists(st.sampled_from(others), max_size=2, unique=True))),
                talks_to=tuple(draw(st.lists(st.sampled_from(APPS), max_size=2, unique=True))),
                tolerations=tuple(draw(st.lists(st.sampled_from(TOLERATIONS), unique=True))),
            )
        )
    guest_hosts: dict[str, str] = {}
    guest_apps: dict[str, str] = {}
    placed: dict[str, list[str]] = {}
    if table.names:
        for j in range(draw(st.integers(0, 4))):
            app = draw(st.sampled_from(APPS))
            host = draw(st.sampled_from(table.names))
            guest_hosts[f"{app}-old{j}"] = host
            guest_apps[f"{app}-old{j}"] = app
            placed.setdefault(app, []).append(host)
    names = [g.name for g in guests] + list(guest_hosts)
    traffic = {}
    if len(names) > 1:
        for _ in range(draw(st.integers(0, 8))):
            a, b = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
            traffic[(min(a, b), max(a, b))] = float(draw(st.sampled_from([1e3, 1e6, 5e6])))
    return PlacementRequest(table, guests, placed, traffic, guest_hosts, guest_apps)


@settings(max_examples=200, deadline=None)
@given(constrained_requests())
def test_no_placement_breaks_any_constraint(request: PlacementRequest) -> None:
    result = default_scheduler().place(request)
    assert constraint_problems(request, result) == []


@settings(max_examples=100, deadline=None)
@given(constrained_requests())
def test_constrained_reasons_account_for_every_host(request: PlacementRequest) -> None:
    assert_reasons_count_every_host(request)


@settings(max_examples=100, deadline=None)
@given(constrained_requests(), st.randoms(use_true_random=False))
def test_constrained_placement_replays_under_any_permutation(
    request: PlacementRequest, rnd: random.Random
) -> None:
    rows = [
        HostRow(
            name,
            Resources(*request.hosts.capacity[i]),
            Resources(*request.hosts.allocated[i]),
            ready=bool(request.hosts.ready[i]),
            cordoned=bool(request.hosts.cordoned[i]),
            labels={
                "rack": request.hosts.rack_names[request.hosts.rack[i]],
                "site": request.hosts.site_names[request.hosts.site[i]],
            },
            draining=bool(request.hosts.draining[i]),
            taints={
                k: v
                for (k, v), has in zip(
                    request.hosts.taint_names, request.hosts.tainted[i], strict=True
                )
                if has
            },
            health_risk=float(request.hosts.health_risk[i]),
        )
        for i, name in enumerate(request.hosts.names)
    ]
    rnd.shuffle(rows)
    guests = list(request.guests)
    rnd.shuffle(guests)
    traffic = list(request.traffic.items())
    rnd.shuffle(traffic)
    shuffled = PlacementRequest(
        HostTable.build(rows),
        guests,
        {app: list(reversed(hosts)) for app, hosts in reversed(list(request.placed.items()))},
        dict(traffic),
        dict(reversed(list(request.guest_hosts.items()))),
        request.guest_apps,
    )
    assert default_scheduler().place(request) == default_scheduler().place(shuffled)
