"""Admission control: the failover promise (K failures, or spares) over plain rows."""

from __future__ import annotations

from typing import Any

from podium.controller._admission import Demand, check_promise, demand_after, describe
from podium.model import Kind, Manifest, Resources, Spread
from podium.scheduler import GuestRequest, HostRow

CAP = Resources(cpu=8, memory_mib=16384, iops=1000, net_mbps=1000)


def rows(n: int, **kw: Any) -> list[HostRow]:
    return [HostRow(f"h{i}", CAP, **kw) for i in range(1, n + 1)]


def demand(
    count: int, cpu: float, *, app: str | None = None, on: list[str] | None = None
) -> list[Demand]:
    request = Resources(cpu=cpu, memory_mib=1024)
    spread = Spread.HOST if app else None
    return [
        Demand(
            GuestRequest(f"{app or 'g'}-{i}", request, app=app, spread=spread),
            on[i] if on else None,
        )
        for i in range(count)
    ]


def test_an_apply_within_the_promise_is_admitted() -> None:
    # 3 hosts x 8 cpu; 12 cpu of guests: after any one failure 16 cpu remain
    after = demand(6, 2)
    assert check_promise(rows(3), [], after, failures=1) is None


def test_an_apply_past_the_promise_is_refused_saying_what_is_short() -> None:
    after = demand(10, 2)  # 20 cpu > 24 - 8
    why = check_promise(rows(3), [], after, failures=1, what="app web (10 x cpu 2)")
    assert why is not None
    assert why.startswith("app web (10 x cpu 2) would leave no room to restart the guests")
    assert "short of cpu 4" in why and "--failures-to-tolerate 0" in why


def test_fragmentation_is_caught_by_restarting_the_worst_host() -> None:
    # capacity suffices in sum (4 x 8 - 8 = 24 >= 15), but h1's 6-cpu guest finds no
    # host with 6 cpu free once h1 fails (5 free on each of the others)
    after = [*demand(1, 6, on=["h1"]), *[
        Demand(GuestRequest(f"s-{i}", Resources(cpu=3, memory_mib=1024)), f"h{i}")
        for i in (2, 3, 4)
    ]]  # fmt: skip
    why = check_promise(rows(4), [], after, failures=1, what="guest g-0")
    assert why is not None and "restart the guests of h1" in why and "fit nowhere" in why
    assert "lacked cpu" in why


def test_a_spread_app_across_every_host_is_admitted() -> None:
    # 3 replicas spread over 3 hosts: after a failure the lost replica cannot restart
    # by its own spread, which is the app's redundancy, not missing capacity
    after = demand(3, 4, app="web", on=["h1", "h2", "h3"])
    assert check_promise(rows(3), [], after, failures=1, what="app web") is None


def test_shrinking_or_k_zero_is_always_admitted() -> None:
    big = demand(12, 2)
    assert check_promise(rows(3), big, big[:11], failures=1) is None
    assert check_promise(rows(3), [], big, failures=0) is None


def test_a_forming_cluster_of_k_hosts_or_fewer_is_not_refused() -> None:
    assert check_promise(rows(1), [], demand(2, 2), failures=1) is None
    assert check_promise([], [], demand(2, 2), failures=1) is None


def test_spares_must_hold_the_guests_of_the_k_most_loaded_hosts() -> None:
    hosts = [
        *rows(2),
        HostRow("spare", Resources(cpu=4, memory_mib=16384, iops=1000, net_mbps=1000)),
    ]
    fits = demand(4, 1)  # the most loaded host holds 4 cpu at worst: the spare has 4
    assert check_promise(hosts, [], fits, failures=1, spares=["spare"]) is None
    over = demand(8, 1.5, on=["h1"] * 8)
    why = check_promise(hosts, [], over, failures=1, spares=["spare"], what="app db")
    assert why is not None and "spares (spare)" in why and "short of cpu 8" in why


def test_demand_after_replaces_an_apps_replicas_and_describes_it() -> None:
    views: list[dict[str, Any]] = [
        {
            "name": "web-1",
            "owner": "web",
            "spec": {"request": {"cpu": 1}},
            "status": {"host": "h1"},
        },
        {
            "name": "web-2",
            "owner": "web",
            "spec": {"request": {"cpu": 1}},
            "status": {"host": "h2"},
        },
        {"name": "db", "spec": {"request": {"cpu": 2}}, "status": {"host": "h1"}},
    ]
    spec = {"replicas": 3, "request": {"cpu": 4, "memory_mib": 8192}}
    m = Manifest(Kind.APP, "web", spec)
    after = demand_after(views, [m])
    web = [d for d in after if d.request.app == "web"]
    assert [(d.request.request.cpu, d.host) for d in web] == [(4, "h1"), (4, "h2"), (4, None)]
    assert any(d.request.name == "db" and d.host == "h1" for d in after)
    assert describe(m) == "app web (3 x cpu 4, memory_mib 8192)"
