"""Golden placement scenarios: expected placements and reasons, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.controller._plans import guest_request, replica_spec
from podium.model import Resources, Spread, parse_manifest_text
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
from podium.scheduler._framework import _natural

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


def test_natural_order_compares_digit_runs_as_numbers_wherever_they_are() -> None:
    names = ["a10b2", "a2", "2", "", "10", "a2b10", "a2b2", "a", "b1", "a10"]
    assert sorted(names, key=_natural) == [
        "", "2", "10", "a", "a2", "a2b2", "a2b10", "a10", "a10b2", "b1",
    ]  # fmt: skip


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


# -- host state, taints, near: filters with counted reasons ---------------------------------


def test_issue_example_reason_counts_iops_and_spread() -> None:
    low_iops = Resources(cpu=32, memory_mib=65536, iops=200, net_mbps=1000)
    rows = [HostRow(f"h{i:02d}", low_iops if i < 12 else BIG) for i in range(15)]
    result = place(rows, replicas("web", 4, Resources(1, 512, iops=500), Spread.HOST))
    assert sorted(result.placements.values()) == ["h12", "h13", "h14"]
    assert result.unplaced == {
        "web-4": "0/15 hosts fit: 12 lacked iops, 3 already hold a replica of app web (spread host)"
    }


def test_draining_and_unhealthy_hosts_are_skipped_and_counted() -> None:
    full = Resources(7, 7168, 0, 0)  # the busy hosts are what best-fit would pick
    rows = [
        HostRow("a", BIG, full, ready=False),
        HostRow("b", BIG, full, cordoned=True),
        HostRow("c", BIG, full, draining=True),
        HostRow("d", BIG, full, health_risk=0.9),
        HostRow("e", BIG, health_risk=0.79),
        HostRow("f", Resources(cpu=0.5, memory_mib=8192, iops=1000, net_mbps=1000)),
    ]
    result = place(rows, [GuestRequest("g", Resources(1, 128)), GuestRequest("h", Resources(9))])
    assert result.placements == {"g": "e"}
    assert result.unplaced == {
        "h": "0/6 hosts fit: 1 were not ready, 1 were cordoned, 1 were draining, "
        "1 were unhealthy, 2 lacked cpu"
    }


def test_taints_keep_dedicated_hosts_for_guests_that_tolerate_them() -> None:
    rows = [
        HostRow("gpu", BIG, Resources(4, 4096), taints={"gpu": "a100"}),  # fuller: best fit
        HostRow("plain", BIG),
    ]
    guests = [
        GuestRequest("web", Resources(1, 128)),
        GuestRequest("train", Resources(1, 128), tolerations=("gpu",)),
        GuestRequest("train-h100", Resources(1, 128), tolerations=("gpu=h100",)),
        GuestRequest("train-a100", Resources(1, 128), tolerations=("gpu=a100",)),
    ]
    result = place(rows, guests)
    assert result.placements == {
        "train": "gpu",
        "train-a100": "gpu",
        "train-h100": "plain",
        "web": "plain",
    }
    huge = GuestRequest("huge", Resources(6, 128))
    result = place(rows, [huge], gpu_host=[])
    assert result.placements == {"huge": "plain"}
    rows[1] = HostRow("plain", SMALL, Resources(4, 0))
    assert place(rows, [huge]).unplaced == {
        "huge": "0/2 hosts fit: 1 had taint gpu=a100 not tolerated, 1 lacked cpu"
    }


def test_every_taint_of_a_host_must_be_tolerated() -> None:
    rows = [HostRow("pool", BIG, taints={"gpu": "a100", "dedicated": "batch"})]
    result = place(
        rows,
        [
            GuestRequest("one", Resources(1, 128), tolerations=("gpu",)),
            GuestRequest("both", Resources(1, 128), tolerations=("dedicated=batch", "gpu")),
        ],
    )
    assert result.placements == {"both": "pool"}
    assert result.unplaced == {"one": "0/1 hosts fit: 1 had taint dedicated=batch not tolerated"}


def test_near_follows_a_placed_app_and_counts_the_batch() -> None:
    rows = [HostRow("busy", BIG, Resources(6, 6144)), HostRow("h1", BIG), HostRow("h2", BIG)]
    api = GuestRequest("api-1", Resources(1, 128), "api", near=("db",))
    # db already runs on h2: api goes there, not to the fuller host
    assert place(rows, [api], db=["h2"]).placements == {"api-1": "h2"}
    # db in the same batch, named after api and smaller: placed first all the same
    db = GuestRequest("zdb-1", Resources(1, 64), "db")
    result = place(rows, [api, db])
    assert list(result.placements) == ["zdb-1", "api-1"]
    assert result.placements["api-1"] == result.placements["zdb-1"]
    # no db anywhere: no constraint, best fit
    assert place(rows, [api]).placements == {"api-1": "busy"}


def test_near_reason_when_the_hosts_of_the_app_are_full() -> None:
    rows = [HostRow("h1", BIG, BIG), HostRow("h2", BIG), HostRow("h3", BIG, cordoned=True)]
    api = GuestRequest("api-1", Resources(1, 128), "api", near=("db", "cache"))
    result = place(rows, [api], db=["h1"])
    assert result.unplaced == {
        "api-1": "0/3 hosts fit: 1 were cordoned, 1 lacked cpu, "
        "1 ran no guest of apps db, cache (near)"
    }
    assert place(rows, [api], cache=["h2"], db=["h1"]).placements == {"api-1": "h2"}


# -- scores: soft spread, traffic affinity, health ------------------------------------------


def traffic_place(
    rows: list[HostRow],
    guests: list[GuestRequest],
    traffic: dict[tuple[str, str], float],
    guest_hosts: dict[str, str],
    guest_apps: dict[str, str] | None = None,
) -> PlacementResult:
    placed: dict[str, list[str]] = {}
    apps = guest_apps or {g: g.rsplit("-", 1)[0] for g in guest_hosts}
    for g, h in sorted(guest_hosts.items()):
        placed.setdefault(apps[g], []).append(h)
    request = PlacementRequest(
        HostTable.build(rows),
        guests,
        placed,
        traffic=traffic,
        guest_hosts=guest_hosts,
        guest_apps=apps,
    )
    result = default_scheduler().place(request)
    assert verify(request, result) == []
    return result


TRAFFIC_ROWS = [
    HostRow("h1", BIG, Resources(5, 4096)),  # fullest: best fit's pick
    HostRow("h2", BIG, Resources(1, 1024)),  # runs db-1
    HostRow("h3", BIG, Resources(1, 1024)),  # runs db-2
]
DB_HOSTS = {"db-1": "h2", "db-2": "h3"}


def test_heavy_talkers_share_a_host_light_ones_do_not_move() -> None:
    api = GuestRequest("api-1", Resources(1, 512), "api")
    heavy = {("api-1", "db-2"): 5e6}
    assert traffic_place(TRAFFIC_ROWS, [api], heavy, DB_HOSTS).placements == {"api-1": "h3"}
    light = {("api-1", "db-2"): 5e3}
    assert traffic_place(TRAFFIC_ROWS, [api], light, DB_HOSTS).placements == {"api-1": "h1"}
    assert traffic_place(TRAFFIC_ROWS, [api], {}, DB_HOSTS).placements == {"api-1": "h1"}


def test_heavy_talkers_stay_apart_when_capacity_or_spread_forbids() -> None:
    heavy = {("api-1", "db-2"): 5e6}
    big = GuestRequest("api-1", Resources(7.5, 512), "api")  # only h1 ... no: h2/h3 have 7 left
    result = traffic_place(TRAFFIC_ROWS, [big], heavy, DB_HOSTS)
    assert result.unplaced["api-1"] == "0/3 hosts fit: 3 lacked cpu"
    fits_h1_only = [HostRow("h1", BIG), *TRAFFIC_ROWS[1:]]
    wide = GuestRequest("api-1", Resources(7.5, 512), "api")
    result = traffic_place(fits_h1_only, [wide], heavy, DB_HOSTS)
    assert result.placements == {"api-1": "h1"}
    # api-2 already on h3, api spreads over hosts: api-1 cannot join its talker there
    spread = GuestRequest("api-1", Resources(1, 512), "api", Spread.HOST)
    hosts = {**DB_HOSTS, "api-2": "h3"}
    result = traffic_place(TRAFFIC_ROWS, [spread], heavy, hosts)
    assert result.placements == {"api-1": "h1"}


def test_a_new_guest_talks_like_its_app_and_declared_talks_to_counts() -> None:
    hosts = {**DB_HOSTS, "api-1": "h1", "api-2": "h1"}
    measured = {("api-1", "db-2"): 4e6, ("api-2", "db-2"): 6e6}
    new = GuestRequest("api-3", Resources(1, 512), "api")  # no traffic of its own yet
    assert traffic_place(TRAFFIC_ROWS, [new], measured, hosts).placements == {"api-3": "h3"}
    declared = GuestRequest("web-1", Resources(1, 512), "web", talks_to=("db",))
    result = traffic_place(TRAFFIC_ROWS, [declared], {}, {"db-1": "h2"})
    assert result.placements == {"web-1": "h2"}


def test_traffic_pulls_talkers_together_inside_one_batch() -> None:
    rows = [HostRow(f"h{i}", BIG) for i in range(4)]
    guests = [
        GuestRequest("a-1", Resources(1, 512), "a"),
        GuestRequest("b-1", Resources(1, 512), "b"),
    ]
    result = traffic_place(rows, guests, {("a-1", "b-1"): 2e6}, {})
    assert result.placements["a-1"] == result.placements["b-1"]


def test_replicas_without_a_hard_spread_fan_out_over_equal_hosts() -> None:
    rows = [HostRow(f"h{i}", BIG, labels={"rack": f"r{i // 2}"}) for i in range(4)]
    result = place(rows, replicas("web", 4, Resources(1, 512)))
    assert sorted(result.placements.values()) == ["h0", "h1", "h2", "h3"]
    # two replicas on different racks first
    first_two = [result.placements[g] for g in ("web-1", "web-2")]
    assert {int(h[1]) // 2 for h in first_two} == {0, 1}


def test_healthier_host_wins_between_equals_and_risk_trades_against_fit() -> None:
    rows = [
        HostRow("risky", BIG, health_risk=0.5),
        HostRow("sound", BIG, health_risk=0.1),
    ]
    assert place(rows, [GuestRequest("g", Resources(1, 128))]).placements == {"g": "sound"}
    # risk 0.2 costs 10 points; being 50 points fuller is worth more
    rows = [HostRow("fuller", BIG, Resources(4, 4096), health_risk=0.2), HostRow("empty", BIG)]
    assert place(rows, [GuestRequest("g", Resources(1, 128))]).placements == {"g": "fuller"}


def test_the_placement_example_puts_api_beside_store() -> None:
    path = Path(__file__).resolve().parents[3] / "examples" / "placement.yaml"
    guests = [
        guest_request({"name": f"{m.name}-{i}", "spec": replica_spec(m.name, m.spec)})
        for m in parse_manifest_text(path.read_text())
        for i in range(1, int(m.spec["replicas"]) + 1)
    ]
    rows = [
        HostRow("gpu", BIG, taints={"gpu": "a100"}),
        *(HostRow(f"h{i}", BIG, labels={"rack": f"r{i}"}) for i in range(1, 4)),
    ]
    result = place(rows, guests)
    assert result.unplaced == {}
    store = {result.placements["store-1"], result.placements["store-2"]}
    api = {result.placements["api-1"], result.placements["api-2"]}
    assert len(store) == 2 and api == store  # near store, spread host
    assert "gpu" not in store | api  # untolerated taint
    assert result.placements["trainer-1"] in api | {"gpu"}  # talks to api; tolerates gpu


def test_a_site_pin_keeps_guests_on_their_site_and_says_why_when_it_cannot() -> None:
    rows = [HostRow(f"a{i}", BIG, labels={"site": "s1"}) for i in range(3)]
    rows += [HostRow("b1", BIG, labels={"site": "s2"}), HostRow("b2", SMALL, labels={"site": "s2"})]
    pinned = [GuestRequest(f"db-{i}", Resources(1, 128), site="s2") for i in range(1, 3)]
    result = place(rows, [*pinned, GuestRequest("free", Resources(1, 128))])
    assert {result.placements["db-1"], result.placements["db-2"]} <= {"b1", "b2"}
    big = GuestRequest("big", Resources(cpu=2, memory_mib=4096), site="s2")
    result = place(rows, [big, GuestRequest("lost", Resources(1, 128), site="s9")])
    assert result.unplaced["lost"] == "0/5 hosts fit: 5 were not in site s9 (site)"
    assert result.placements["big"] == "b1"


def test_the_checker_catches_a_guest_off_its_site() -> None:
    rows = [HostRow("a", BIG, labels={"site": "s1"}), HostRow("b", BIG, labels={"site": "s2"})]
    request = PlacementRequest(
        HostTable.build(rows), [GuestRequest("g", Resources(1, 128), site="s2")]
    )
    bad = PlacementResult(placements={"g": "a"}, unplaced={})
    assert verify(request, bad) == ["g is pinned to site s2, placed in 's1'"]


def test_a_site_from_the_spec_reaches_the_request_for_apps_and_guests() -> None:
    (app,) = parse_manifest_text("kind: App\nname: w\nspec: {replicas: 1, site: s2}\n")
    spec = replica_spec("w", app.spec)
    assert spec["site"] == "s2"
    request = guest_request({"name": "w-1", "spec": spec, "owner": "w"})
    assert request.site == "s2"
