"""Spare hosts: new guests never land there; guests moving off a lost host may."""

from __future__ import annotations

from podium.model import Resources, Spread
from podium.scheduler import GuestRequest, HostRow, HostTable, PlacementRequest, default_scheduler
from podium.scheduler._spares import SpareScheduler

CAP = Resources(cpu=4, memory_mib=4096, iops=100, net_mbps=100)
REQ = Resources(cpu=2, memory_mib=1024)


def test_new_guests_skip_spares_and_moving_guests_use_them() -> None:
    hosts = HostTable.build(
        [HostRow("h1", CAP, allocated=Resources(cpu=4, memory_mib=1024)), HostRow("spare", CAP)]
    )
    new = GuestRequest("new", REQ)
    moved = GuestRequest("moved", REQ, app="web", spread=Spread.HOST, moving=True)
    scheduler = SpareScheduler(default_scheduler(), ["spare"])
    result = scheduler.place(PlacementRequest(hosts, [new, moved]))
    assert result.placements == {"moved": "spare"}
    assert "were cordoned" in result.unplaced["new"] and "lacked cpu" in result.unplaced["new"]
    # without spares named, the same request puts the new guest on "spare" too
    plain = default_scheduler().place(PlacementRequest(hosts, [new, moved]))
    assert set(plain.placements.values()) == {"spare"}


def test_moving_guests_consume_room_and_spreads_before_the_others() -> None:
    hosts = HostTable.build([HostRow("h1", CAP), HostRow("h2", CAP), HostRow("spare", CAP)])
    moved = [
        GuestRequest(f"web-{i}", REQ, app="web", spread=Spread.HOST, moving=True) for i in (1, 2)
    ]
    new = GuestRequest("web-3", REQ, app="web", spread=Spread.HOST)
    result = SpareScheduler(default_scheduler(), ["spare"]).place(
        PlacementRequest(hosts, [*moved, new], placed={"web": ["h1"]})
    )
    web_hosts = [result.placements.get(g) for g in ("web-1", "web-2", "web-3")]
    assert web_hosts.count("spare") <= 1 and "h1" not in web_hosts
    assert result.placements.get("web-3") != "spare"
    # spreads hold across both passes: no two replicas share a host
    placed = [h for h in web_hosts if h is not None]
    assert len(placed) == len(set(placed))
