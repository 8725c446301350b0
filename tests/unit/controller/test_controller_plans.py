"""Pure controller decisions: plan_app, plan_host, plan_placement."""

from __future__ import annotations

from typing import Any

from podium.controller import plan_app, plan_host, plan_placement
from podium.controller._plans import (
    Bind,
    CreateGuests,
    DeleteGuests,
    Emit,
    NoteUnplaced,
    RetryLater,
    SetHostState,
    Unbind,
    replica_index,
)
from podium.controller._snapshot import BindingRow, HostRecord, Snapshot
from podium.model import HostState
from podium.scheduler import default_scheduler

REQ = {"cpu": 1, "memory_mib": 512, "iops": 0, "net_mbps": 0}
APP = {
    "kind": "App",
    "name": "web",
    "spec": {"replicas": 3, "image": "tiny", "request": REQ, "spread": "host"},
}


def owned(name: str, owner: str = "web") -> dict[str, Any]:
    return {"name": name, "owner": owner, "spec": {"request": REQ, "app": owner}}


def test_scale_up_takes_the_lowest_free_indices_and_skips_foreign_names() -> None:
    guests = [owned("web-1"), owned("web-3"), {"name": "web-2", "spec": {"request": REQ}}]
    actions = plan_app("web", {**APP, "spec": {**APP["spec"], "replicas": 4}}, guests)
    create = actions[0]
    assert isinstance(create, CreateGuests)
    assert [name for name, _ in create.guests] == ["web-4", "web-5"]
    assert create.guests[0][1] == {
        "image": "tiny",
        "request": REQ,
        "priority": 0,
        "running": True,
        "app": "web",
        "spread": "host",
        "nics": [{}],
        "disk_gib": 1.0,
        "workload": "idle",
    }
    assert actions[1] == Emit("App", "web", "ScaledUp", "created web-4, web-5 (4 replicas)")


def test_scale_down_deletes_the_highest_indices() -> None:
    guests = [owned(f"web-{i}") for i in (1, 2, 10, 9)]
    actions = plan_app("web", {**APP, "spec": {**APP["spec"], "replicas": 2}}, guests)
    assert actions[0] == DeleteGuests(("web-10", "web-9"))


def test_converged_app_plans_nothing_and_other_apps_guests_do_not_count() -> None:
    guests = [owned(f"web-{i}") for i in (1, 2, 3)] + [owned("web-db-1", owner="web-db")]
    assert plan_app("web", APP, guests) == []


def test_deleted_app_loses_all_its_guests() -> None:
    actions = plan_app("web", None, [owned("web-1"), owned("web-2")])
    assert actions[0] == DeleteGuests(("web-2", "web-1"))
    assert plan_app("web", None, []) == []


def test_replica_index() -> None:
    assert replica_index("web", "web-12") == 12
    assert replica_index("web", "web-db-1") is None
    assert replica_index("web", "webx-1") is None


def host(name: str, state: str | None, live: bool, lease: int = 7) -> HostRecord:
    status = None if state is None else {"state": state, "lease": lease}
    spec = {"capacity": {"cpu": 4, "memory_mib": 4096, "iops": 1000, "net_mbps": 1000}}
    return HostRecord(name, spec, status, live)


def test_plan_host_transitions() -> None:
    ready, lost = HostState.READY.value, HostState.LOST.value
    assert plan_host(host("h", ready, True), lease_alive=True, was_live=True, retry=1) == []
    assert plan_host(None, lease_alive=False, was_live=None, retry=1) == []
    # key gone but the lease lives: wait, never declare lost early
    assert plan_host(host("h", ready, False), lease_alive=True, was_live=True, retry=2.5) == [
        RetryLater("host h: liveness key gone but lease alive", 2.5)
    ]
    gone = plan_host(host("h", ready, False), lease_alive=False, was_live=True, retry=1)
    assert gone[0] == SetHostState("h", HostState.LOST)
    assert isinstance(gone[1], Emit) and gone[1].reason == "HostLost" and gone[1].warning
    assert plan_host(host("h", lost, False), lease_alive=False, was_live=False, retry=1) == []
    back = plan_host(host("h", lost, True), lease_alive=True, was_live=False, retry=1)
    assert back[0] == SetHostState("h", HostState.READY)
    again = plan_host(host("h", ready, True), lease_alive=True, was_live=False, retry=1)
    assert [a.reason for a in again if isinstance(a, Emit)] == ["HostReady"]


def guest(
    name: str, app: str | None = None, priority: int = 0, spread: str | None = None
) -> dict[str, Any]:
    spec = {"request": REQ, "app": app, "priority": priority, "spread": spread}
    return {"name": name, "owner": app, "spec": spec}


def test_plan_placement_places_unbound_guests() -> None:
    snapshot = Snapshot(
        guests={"a": guest("a"), "b": guest("b")},
        bindings={"b": BindingRow("h1", 1, 5)},
        statuses={},
        hosts={"h1": host("h1", "ready", True), "h2": host("h2", "ready", True)},
    )
    plan = plan_placement(snapshot, default_scheduler())
    assert plan.actions == [Bind("a", "h1", 0, None)]  # best fit: next to b


def test_plan_placement_moves_guests_of_expired_hosts_in_priority_order() -> None:
    snapshot = Snapshot(
        guests={
            "low": guest("low", priority=1),
            "high": guest("high", priority=9),
            "stay": guest("stay"),
        },
        bindings={
            "low": BindingRow("dead", 3, 10),
            "high": BindingRow("dead", 1, 11),
            "stay": BindingRow("h2", 1, 12),
        },
        statuses={},
        hosts={"dead": host("dead", "lost", False), "h2": host("h2", "ready", True)},
        expired=frozenset({"dead"}),
    )
    plan = plan_placement(snapshot, default_scheduler())
    assert plan.actions == [Bind("high", "h2", 11, "dead"), Bind("low", "h2", 10, "dead")]


def test_plan_placement_leaves_guests_of_a_lost_host_whose_lease_is_not_confirmed_expired() -> None:
    snapshot = Snapshot(
        guests={"g": guest("g")},
        bindings={"g": BindingRow("dead", 1, 10)},
        statuses={},
        hosts={"dead": host("dead", "lost", False), "h2": host("h2", "ready", True)},
    )
    assert plan_placement(snapshot, default_scheduler()).actions == []


def test_plan_placement_unbinds_what_cannot_move_and_notes_reasons_once() -> None:
    snapshot = Snapshot(
        guests={
            "w-1": guest("w-1", app="w", spread="host"),
            "w-2": guest("w-2", app="w", spread="host"),
            "new": guest("new", app="w", spread="host"),
        },
        bindings={"w-1": BindingRow("dead", 1, 10), "w-2": BindingRow("h2", 1, 11)},
        statuses={},
        hosts={"dead": host("dead", "lost", False), "h2": host("h2", "ready", True)},
        expired=frozenset({"dead"}),
    )
    plan = plan_placement(snapshot, default_scheduler())
    reason = "0/2 hosts fit: 1 were not ready, 1 already hold a replica of app w (spread host)"
    assert plan.actions == [Unbind("w-1", 10, "dead", reason), NoteUnplaced("new", reason)]
    noted = Snapshot(**{**snapshot.__dict__, "statuses": {"new": {"message": reason}}})
    assert NoteUnplaced("new", reason) not in plan_placement(noted, default_scheduler()).actions


def beating(name: str, state: str, beat: float) -> HostRecord:
    return HostRecord(name, {}, {"state": state, "lease": 7}, True, beat)


def test_plan_host_suspect_after_missed_renewals_and_recovered_on_the_next() -> None:
    ready, suspect = HostState.READY.value, HostState.SUSPECT.value
    judge = {"lease_alive": True, "was_live": True, "retry": 1, "suspect_after": 5.0}
    # renewed 5 s ago: on time (strictly more than the threshold is late)
    assert plan_host(beating("h", ready, 100.0), now=105.0, **judge) == []  # type: ignore[arg-type]
    late = plan_host(beating("h", ready, 100.0), now=105.5, **judge)  # type: ignore[arg-type]
    assert late[0] == SetHostState("h", HostState.SUSPECT)
    assert isinstance(late[1], Emit) and late[1].reason == "HostSuspect" and late[1].warning
    assert "no renewal for 5.5 s" in late[1].message and "stay put" in late[1].message
    # still late: nothing more to say; guests are not touched by the host controller
    assert plan_host(beating("h", suspect, 100.0), now=108.0, **judge) == []  # type: ignore[arg-type]
    back = plan_host(beating("h", suspect, 107.0), now=108.0, **judge)  # type: ignore[arg-type]
    assert back[0] == SetHostState("h", HostState.READY)
    assert isinstance(back[1], Emit) and back[1].reason == "HostRecovered"
    # a suspect host whose lease expired is lost, as a ready one would be
    gone = HostRecord("h", {}, {"state": suspect, "lease": 7}, False, 100.0)
    lost = plan_host(gone, now=111.0, **{**judge, "lease_alive": False})  # type: ignore[arg-type]
    assert lost[0] == SetHostState("h", HostState.LOST)
    # no recorded renewal (an older server wrote the host): never suspect
    assert plan_host(host("h", ready, True), now=1e9, **judge) == []  # type: ignore[arg-type]


def test_plan_placement_places_nothing_new_on_a_suspect_host() -> None:
    snapshot = Snapshot(
        guests={"a": guest("a")},
        bindings={},
        statuses={},
        hosts={"h1": host("h1", "suspect", True)},
    )
    plan = plan_placement(snapshot, default_scheduler())
    assert plan.actions == [NoteUnplaced("a", "0/1 hosts fit: 1 were not ready")]


def test_golden_short_capacity_after_a_host_loss_restarts_highest_priority_first() -> None:
    """Golden scenario: 'dead' held five guests, the survivors have room for three.

    h2 and h3 have 4 CPUs each; h2 already runs a 2-CPU guest. Every moving guest asks
    for 2 CPUs: the three highest priorities move (in priority order), the two lowest
    wait with the scheduler's reason (Unbind: shown as their status message), and so
    does a new guest of priority 3 (no room is left when its turn comes).
    """
    big = {"cpu": 2, "memory_mib": 512, "iops": 0, "net_mbps": 0}

    def g(name: str, priority: int) -> dict[str, Any]:
        return {"name": name, "spec": {"request": big, "priority": priority}}

    moving = {"p9": 9, "p7": 7, "p5": 5, "p2": 2, "p0": 0}
    snapshot = Snapshot(
        guests={
            **{n: g(n, p) for n, p in moving.items()},
            "resident": g("resident", 0),
            "fresh": g("fresh", 3),
        },
        bindings={
            **{n: BindingRow("dead", 4, 20 + i) for i, n in enumerate(moving)},
            "resident": BindingRow("h2", 1, 30),
        },
        statuses={},
        hosts={
            "dead": host("dead", "lost", False),
            "h2": host("h2", "ready", True),
            "h3": host("h3", "ready", True),
        },
        expired=frozenset({"dead"}),
    )
    plan = plan_placement(snapshot, default_scheduler())
    binds = [(a.guest, a.host) for a in plan.actions if isinstance(a, Bind)]
    assert [name for name, _ in binds] == ["p9", "p7", "p5"]
    assert sorted(h for _, h in binds) == ["h2", "h3", "h3"]
    waiting = {a.guest: a.reason for a in plan.actions if isinstance(a, Unbind)}
    reason = "0/3 hosts fit: 1 were not ready, 2 lacked cpu"
    assert waiting == {"p2": reason, "p0": reason}
    assert NoteUnplaced("fresh", reason) in plan.actions
    assert all(a.moved_from == "dead" for a in plan.actions if isinstance(a, Bind))
