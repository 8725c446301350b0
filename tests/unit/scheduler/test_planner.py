"""The offline planner (``podium plan``): golden cases, bounds, and properties."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.scheduler import solve_instance
from podium.scheduler._bounds import hosts_for, lower_bound
from podium.scheduler._check import check_assignment, solve_parsed
from podium.scheduler._instance import InstanceError, parse_instance
from podium.scheduler._planner import plan

CAP = {"cpu": 16, "memory_mib": 65536, "iops": 10000, "net_mbps": 10000}


def host(name: str, rack: str = "r1", site: str = "s1", **capacity: float) -> dict[str, Any]:
    return {"name": name, "capacity": {**CAP, **capacity}, "labels": {"rack": rack, "site": site}}


def guest(
    name: str, cpu: float, app: str | None = None, spread: str | None = None, **more: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "request": {"cpu": cpu, "memory_mib": 1024, **more}}
    if app:
        out["app"] = app
    if spread:
        out["spread"] = spread
    return out


def test_pack_uses_as_few_hosts_as_the_bound() -> None:
    # 8 guests of 4 cpu on 16-cpu hosts: 2 hosts, not 8
    instance = {
        "hosts": [host(f"h{i}") for i in range(8)],
        "guests": [guest(f"g{i}", 4) for i in range(8)],
    }
    out = solve_instance(instance)
    assert out["hosts_used"] == 2
    assert out["lower_bound"]["hosts"] == 2
    assert out["lower_bound"]["per_dimension"]["cpu"] == 2
    assert out["ratio"] == 1.0
    assert out["objective"] == "pack"
    assert out["unplaced"] == []


def test_balance_evens_the_load_over_every_host() -> None:
    instance = {
        "hosts": [host(f"h{i}") for i in range(4)],
        "guests": [guest(f"g{i}", 2) for i in range(8)],
    }
    out = solve_instance(instance, objective="balance")
    per_host = sorted(list(out["placements"].values()).count(f"h{i}") for i in range(4))
    assert per_host == [2, 2, 2, 2]
    assert out["objective"] == "balance"
    assert out["hosts_used"] == 4


def test_pack_puts_big_guests_first_so_small_ones_fill_the_gaps() -> None:
    # 2 x 10 cpu and 2 x 6 cpu: first fit in arrival order would need 3 hosts
    guests = [guest("small-1", 6), guest("big-1", 10), guest("small-2", 6), guest("big-2", 10)]
    out = solve_instance({"hosts": [host(f"h{i}") for i in range(4)], "guests": guests})
    assert out["hosts_used"] == 2
    by_host: dict[str, set[str]] = {}
    for name, h in out["placements"].items():
        by_host.setdefault(h, set()).add(name[:-2])
    assert all(kinds == {"small", "big"} for kinds in by_host.values())


@pytest.mark.parametrize("level", ["host", "rack", "site"])
def test_spread_keeps_replicas_apart_even_when_packing(level: str) -> None:
    hosts = [host(f"h{i}", rack=f"r{i // 2}", site=f"s{i // 4}") for i in range(8)]
    guests = [guest(f"web-{i}", 1, app="web", spread=level) for i in range(2)]
    out = solve_instance({"hosts": hosts, "guests": guests})
    a, b = (out["placements"][f"web-{i}"] for i in range(2))
    key = {
        "host": lambda h: h,
        "rack": lambda h: int(h[1:]) // 2,
        "site": lambda h: int(h[1:]) // 4,
    }[level]
    assert key(a) != key(b)
    assert out["lower_bound"]["per_dimension"]["spread"] == 2


def test_unplaced_guests_say_why_with_counts() -> None:
    hosts = [host("h1", rack="r1"), host("h2", rack="r2", cpu=2)]
    guests = [
        guest("web-1", 4, app="web", spread="host"),
        guest("web-2", 4, app="web", spread="host"),
        guest("huge", 1, memory_mib=10**9),
    ]
    out = solve_instance({"hosts": hosts, "guests": guests})
    assert out["placements"] == {"web-1": "h1"}
    reasons = {u["name"]: u["reason"] for u in out["unplaced"]}
    assert reasons == {
        "web-2": "0/2 hosts fit: 1 lacked cpu, 1 already hold a replica of app web (spread host)",
        "huge": "0/2 hosts fit: 2 lacked memory_mib",
    }


def test_lower_bound_takes_the_largest_hosts_first() -> None:
    capacity = np.array([[10.0], [40.0], [20.0], [30.0]])
    assert hosts_for(capacity[:, 0], 0) == 0
    assert hosts_for(capacity[:, 0], 40) == 1
    assert hosts_for(capacity[:, 0], 41) == 2
    assert hosts_for(capacity[:, 0], 90) == 3
    assert hosts_for(capacity[:, 0], 101) == 5  # more than there are
    caps = np.array([[16, 64, 100, 100]] * 4, dtype=np.float64)
    requests = np.array([[8, 8, 1, 1]] * 3 + [[1, 40, 1, 1]] * 2, dtype=np.float64)
    bound = lower_bound(caps, requests, np.array([0, 0, 0, -1, -1]), np.array([1, 1, 1, 0, 0]))
    assert bound.per_dimension == {"cpu": 2, "memory_mib": 2, "iops": 1, "net_mbps": 1, "spread": 3}
    assert bound.hosts == 3


def test_a_bad_instance_names_the_entry_and_the_field() -> None:
    cases = [
        ({"hosts": [{"name": "h"}], "guests": []}, "hosts[0].capacity: missing or not an object"),
        (
            {"hosts": [host("h")], "guests": [guest("a", -1)]},
            "guests[0].request.cpu: expected a number >= 0",
        ),
        (
            {"hosts": [host("h")], "guests": [guest("a", 1), guest("a", 1)]},
            "guests[1].name: guest 'a' appears twice",
        ),
        (
            {"hosts": [host("h")], "guests": [{**guest("a", 1), "spread": "zone"}]},
            "is not one of host, rack, site",
        ),
        ({"hosts": [host("h")], "guests": [guest("a", 1, spread="host")]}, 'add "app"'),
        (
            {"hosts": [host("h")], "guests": [guest("a", 1, gpu=1)]},
            "guests[0].request.gpu: unknown dimension",
        ),
        ({"guests": []}, '"hosts" is missing or not a list'),
    ]
    for instance, message in cases:
        with pytest.raises(InstanceError, match="bad placement instance") as caught:
            solve_instance(instance)
        assert message in str(caught.value)


def test_the_checker_catches_what_it_must() -> None:
    instance = parse_instance(
        {
            "hosts": [host("h1"), host("h2", rack="r1")],
            "guests": [guest(f"w{i}", 10, app="w", spread="rack") for i in range(2)],
        }
    )
    both_on_h1 = np.array([0, 0])
    problems = check_assignment(
        instance.hosts,
        instance.requests,
        both_on_h1,
        app=instance.app,
        spread=instance.spread,
        guest_names=instance.guest_names,
    )
    assert any("h1 over capacity in cpu: 20 > 16" in p for p in problems)
    assert any("shares its rack" in p for p in problems)
    spread_apart = np.array([0, 1])  # h1, h2: both in rack r1
    problems = check_assignment(
        instance.hosts,
        instance.requests,
        spread_apart,
        app=instance.app,
        spread=instance.spread,
        guest_names=instance.guest_names,
    )
    assert problems == ["w1 on h2 shares its rack with w0 on h1 (spread rack)"]


def test_apps_of_mixed_shapes_still_keep_their_spread() -> None:
    # one app whose guests differ in size: placed one by one, spread kept
    hosts = [host(f"h{i}") for i in range(3)]
    guests = [guest("db-1", 8, app="db", spread="host"), guest("db-2", 2, app="db", spread="host"),
              guest("db-3", 4, app="db", spread="host")]  # fmt: skip
    out = solve_instance({"hosts": hosts, "guests": guests})
    assert len(set(out["placements"].values())) == 3


instances = st.integers(min_value=0, max_value=2**32 - 1).map(np.random.default_rng)


def random_instance(rng: np.random.Generator) -> dict[str, Any]:
    hosts = [
        host(
            f"h{i}",
            rack=f"r{rng.integers(4)}",
            site=f"s{rng.integers(2)}",
            cpu=int(rng.choice([8, 16, 32])),
        )
        for i in range(int(rng.integers(1, 12)))
    ]
    guests = []
    for a in range(int(rng.integers(0, 12))):
        spread = [None, "host", "rack", "site"][int(rng.integers(4))]
        cpu, memory = float(rng.choice([0.5, 1, 2, 4, 8])), int(rng.choice([512, 4096, 32768]))
        for r in range(int(rng.integers(1, 5))):
            shape = cpu if rng.random() < 0.8 else cpu * 2  # sometimes an app of mixed shapes
            guests.append(guest(f"a{a}-{r}", shape, app=f"a{a}", spread=spread, memory_mib=memory))
    return {"hosts": hosts, "guests": guests}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances, st.sampled_from(["pack", "balance"]))
def test_property_plans_always_verify_and_never_beat_the_bound(
    rng: np.random.Generator, objective: str
) -> None:
    data = random_instance(rng)
    instance = parse_instance(data)
    result = plan(instance, objective)
    problems = check_assignment(
        instance.hosts,
        instance.requests,
        result.host_of,
        app=instance.app,
        spread=instance.spread,
        guest_names=instance.guest_names,
    )
    assert problems == []
    assert set(np.flatnonzero(result.host_of < 0).tolist()) == set(result.reasons)
    report, _ = solve_parsed(instance, objective)  # verifies again, raises on a violation
    assert report["hosts_used"] >= report["lower_bound"]["hosts"]
    assert len(report["placements"]) + len(report["unplaced"]) == len(data["guests"])
