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
