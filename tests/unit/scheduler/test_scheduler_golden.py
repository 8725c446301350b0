"""Golden placement scenarios: expected placements and reasons, exactly."""

from __future__ import annotations

import pytest

from podium.model import Resources, Spread
from podium.scheduler import (
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    PlacementResult,
    default_scheduler,
    solve_instance,
    verify,
)

BIG = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)
SMALL = Resources(cpu=8, memory_mib=1024, iops=1000, net_mbps=1000)


def place(rows: list[HostRow], guests: list[GuestRequest], **placed: list[str]) -> PlacementResult:
    request = PlacementRequest(HostTable.build(rows), guests, placed)
    result = default_scheduler().place(request)
    assert verify(request, result) == []
    return result


def replicas(app: str, n: int, request: Resources, spread: Spread | None = None, priority: int = 0):
    return [GuestRequest(f"{app}-{i}", request, app, spread, priority) for i in range(1, n + 1)]


def test_unplaced_reason_counts_hosts_per_filter() -> None:
    rows = [HostRow(f"h{i}", SMALL if i < 5 else BIG) for i in range(8)]
    result = place(rows, replicas("web", 5, Resources(1, 2048), Spread.HOST))
    assert sorted(result.placements.values()) == ["h5", "h6", "h7"]
    reason = "0/8 hosts fit: 5 lacked memory_mib, 3 already hold a replica of app web (spread host)"
    assert result.unplaced == {"web-4": reason, "web-5": reason}


def test_not_ready_and_cordoned_hosts_are_named_in_the_reason() -> None:
    rows = [
        HostRow("a", BIG, ready=False),
        HostRow("b", BIG, cordoned=True),
        HostRow("c", Resources(cpu=1, memory_mib=8192, iops=1000, net_mbps=1000)),
    ]
    result = place(rows, [GuestRequest("g", Resources(cpu=2, memory_mib=128))])
    assert result.unplaced == {
        "g": "0/3 hosts fit: 1 were not ready, 1 were cordoned, 1 lacked cpu"
    }


def test_no_hosts_at_all() -> None:
    result = place([], [GuestRequest("g", Resources(1, 128))])
    assert result.unplaced == {"g": "0/0 hosts fit: no hosts have joined the cluster"}


def test_best_fit_prefers_the_fullest_host_that_fits() -> None:
    rows = [
        HostRow("empty", BIG),
        HostRow("half", BIG, allocated=Resources(4, 4096, 0, 0)),
        HostRow("full", BIG, allocated=Resources(8, 8192, 0, 0)),
    ]
    result = place(rows, [GuestRequest("g", Resources(2, 1024))])
    assert result.placements == {"g": "half"}


def test_batch_consumes_capacity_virtually() -> None:
    rows = [HostRow("a", Resources(4, 4096)), HostRow("b", Resources(4, 4096))]
    result = place(rows, [GuestRequest(f"g{i}", Resources(2, 1024)) for i in range(5)])
    assert sorted(result.placements.values()) == ["a", "a", "b", "b"]
    assert result.unplaced == {"g4": "0/2 hosts fit: 2 lacked cpu"}


def test_rack_spread_uses_label_codes() -> None:
    rows = [HostRow(f"h{i}", BIG, labels={"rack": f"r{i // 2}", "site": "s1"}) for i in range(4)]
    result = place(rows, replicas("db", 3, Resources(1, 512), Spread.RACK))
    racks = {result.placements[g][1:] for g in ("db-1", "db-2")}
    assert {int(h) // 2 for h in racks} == {0, 1}
    assert result.unplaced == {
        "db-3": "0/4 hosts fit: 4 share a rack with a replica of app db (spread rack)"
    }


def test_site_spread_counts_replicas_placed_before_the_batch() -> None:
    rows = [HostRow(f"h{i}", BIG, labels={"site": f"s{i % 2}"}) for i in range(4)]
    result = place(rows, replicas("db", 2, Resources(1, 512), Spread.SITE)[1:], db=["h0"])
    assert result.placements["db-2"] in ("h1", "h3")


def test_priority_goes_first_when_capacity_is_short() -> None:
    rows = [HostRow("only", Resources(2, 2048))]
    guests = [
        GuestRequest("a-low", Resources(2, 1024), priority=0),
        GuestRequest("z-high", Resources(2, 1024), priority=100),
    ]
    result = place(rows, guests)
    assert list(result.placements) == ["z-high"]
    assert "a-low" in result.unplaced


def test_placements_come_in_priority_then_natural_name_order() -> None:
    rows = [HostRow("h", Resources(64, 65536))]
    db = GuestRequest("db-1", Resources(1, 128), priority=5)
    guests = [*replicas("web", 11, Resources(1, 128)), db]
    result = place(rows, list(reversed(guests)))
    assert list(result.placements) == ["db-1"] + [f"web-{i}" for i in range(1, 12)]


def test_ties_break_by_guest_name_and_replay_exactly() -> None:
    rows = [HostRow(f"h{i}", BIG) for i in range(16)]
    guests = [GuestRequest(f"g{i}", Resources(8, 128)) for i in range(8)]  # one per host
    first = place(rows, guests)
    again = place(list(reversed(rows)), list(reversed(guests)))
    assert first.placements == again.placements
    assert len(set(first.placements.values())) == 8
    # the seed is the guest's name: other names, other hosts
    other = place(rows, [GuestRequest(f"x{i}", Resources(8, 128)) for i in range(8)])
    assert sorted(other.placements.values()) != sorted(first.placements.values())


def test_solve_instance_reads_and_writes_the_plan_format() -> None:
    instance = {
        "hosts": [
            {
                "name": f"h{i}",
                "capacity": {"cpu": 32, "memory_mib": 131072, "iops": 20000, "net_mbps": 10000},
                "labels": {"rack": f"r{i}", "site": "s1"},
            }
            for i in range(2)
        ],
        "guests": [
            {
                "name": f"web-{i}",
                "app": "web",
                "request": {"cpu": 2, "memory_mib": 4096, "iops": 500, "net_mbps": 100},
                "spread": "rack",
            }
            for i in range(1, 4)
        ],
    }
    out = solve_instance(instance)
    assert sorted(out["placements"]) == ["web-1", "web-2"]
    assert out["hosts_used"] == 2
    assert out["unplaced"] == [
        {
            "name": "web-3",
            "reason": "0/2 hosts fit: 2 share a rack with a replica of app web (spread rack)",
        }
    ]


def test_solve_instance_rejects_a_malformed_instance() -> None:
    with pytest.raises(ValueError, match="bad placement instance"):
        solve_instance({"hosts": [{"name": "h"}], "guests": []})
