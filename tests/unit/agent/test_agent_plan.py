"""The agent's pure decisions: plan_local and reports."""

from __future__ import annotations

from typing import Any

from podium.agent import (
    Activate,
    CancelMigration,
    MigrateOut,
    PrepareIncoming,
    RunBackup,
    StartGuest,
    StopGuest,
    plan_local,
    reports,
)
from podium.drivers import DriverGuestState, GuestInfo

S = DriverGuestState
SPEC = {"request": {"cpu": 1}, "running": True}


def assignment(guest: str, epoch: int = 1, **spec: Any) -> dict[str, Any]:
    return {"guest": guest, "uid": f"u-{guest}", "epoch": epoch, "spec": {**SPEC, **spec}}


def info(
    guest: str, state: DriverGuestState, epoch: int = 1, uid: str = "", msg: str = ""
) -> GuestInfo:
    return GuestInfo(guest, uid or f"u-{guest}", epoch, state, msg)


def test_starts_what_is_assigned_and_missing_or_dead() -> None:
    desired = {g: assignment(g) for g in ("new", "dead", "up", "failed")}
    observed = {
        "dead": info("dead", S.STOPPED),
        "up": info("up", S.RUNNING),
        "failed": info("failed", S.FAILED),
    }
    plan = plan_local(desired, observed, retry_at={"failed": 10.0}, now=5.0)
    assert plan == {
        "dead": [StartGuest("dead", "u-dead", 1, desired["dead"]["spec"])],
        "new": [StartGuest("new", "u-new", 1, desired["new"]["spec"])],
    }
    later = plan_local(desired, observed, retry_at={"failed": 10.0}, now=10.0)
    assert "failed" in later


def test_stops_what_is_not_assigned_and_replaces_other_epochs_and_uids() -> None:
    desired = {"moved": assignment("moved", epoch=3), "recreated": assignment("recreated")}
    observed = {
        "gone": info("gone", S.RUNNING),
        "moved": info("moved", S.RUNNING, epoch=1),
        "recreated": info("recreated", S.RUNNING, uid="old-uid"),
    }
    plan = plan_local(desired, observed)
    assert plan["gone"] == [StopGuest("gone", destroy=True, reason="no longer assigned here")]
    assert [type(s) for s in plan["moved"]] == [StopGuest, StartGuest]
    assert plan["moved"][0] == StopGuest(
        "moved", destroy=True, reason="epoch 1 superseded by epoch 3"
    )
    assert [type(s) for s in plan["recreated"]] == [StopGuest, StartGuest]


def test_rejected_epochs_count_as_unassigned_and_busy_guests_wait() -> None:
    desired = {"g": assignment("g", epoch=2), "b": assignment("b")}
    observed = {"g": info("g", S.RUNNING, epoch=2)}
    plan = plan_local(desired, observed, rejected={"g": 2}, busy={"b"})
    assert plan == {"g": [StopGuest("g", destroy=True, reason="no longer assigned here")]}
    newer = {"g": assignment("g", epoch=3)}
    assert [type(s) for s in plan_local(newer, observed, rejected={"g": 2})["g"]] == [
        StopGuest,
        StartGuest,
    ]


def test_desired_stopped_guest_is_stopped_not_destroyed() -> None:
    desired = {"g": assignment("g", running=False)}
    assert plan_local(desired, {"g": info("g", S.RUNNING)}) == {
        "g": [StopGuest("g", destroy=False, reason="desired state is stopped")]
    }
    assert plan_local(desired, {"g": info("g", S.STOPPED)}) == {}
    assert plan_local(desired, {}) == {}


def test_reports_only_changes_of_guests_held_at_their_epoch() -> None:
    desired = {g: assignment(g) for g in ("a", "b", "c", "d")}
    observed = {
        "a": info("a", S.RUNNING),
        "b": info("b", S.STARTING, msg="starting"),
        "c": info("c", S.RUNNING, epoch=0),  # an old epoch: not ours to report
        "d": info("d", S.DEFINED),
    }
    last = {"a": (1, "running", "")}
    assert reports(desired, observed, last) == [
        {"guest": "b", "epoch": 1, "state": "starting", "message": "starting"},
        {"guest": "d", "epoch": 1, "state": "starting", "message": ""},
    ]
    assert reports(desired, observed, last, rejected={"b": 1, "d": 1}) == []


# -- live migration and backup ---------------------------------------------------------


def incoming(guest: str, epoch: int = 2, mid: str = "m1") -> dict[str, Any]:
    return {**assignment(guest, epoch), "incoming": {"id": mid, "source": "h1"}}


def migrate(guest: str, mid: str = "m1", **extra: Any) -> dict[str, Any]:
    return {**assignment(guest), "migrate": {"id": mid, "to": "h2", "uri": "tcp:h2:1", **extra}}


def test_incoming_assignment_prepares_once_and_never_starts() -> None:
    desired = {g: incoming(g) for g in ("new", "dead", "failed", "waiting", "old")}
    observed = {
        "dead": info("dead", S.STOPPED, epoch=2),
        "failed": info("failed", S.FAILED, epoch=2),
        "waiting": info("waiting", S.INCOMING, epoch=2),
        "old": info("old", S.STOPPED, epoch=1),
    }
    plan = plan_local(desired, observed)
    for g in ("new", "dead", "failed", "waiting"):  # waiting: again after an agent restart
        assert plan[g] == [PrepareIncoming(g, f"u-{g}", 2, "m1", "h1", desired[g]["spec"])]
    assert plan["old"] == [
        StopGuest("old", destroy=True, reason="epoch 1 superseded by epoch 2"),
        PrepareIncoming("old", "u-old", 2, "m1", "h1", desired["old"]["spec"]),
    ]
    assert plan_local(desired, observed, handled={"m1"}) == {
        "old": [StopGuest("old", destroy=True, reason="epoch 1 superseded by epoch 2")]
    }  # prepared or refused already: wait, and never start the guest


def test_incoming_guest_is_activated_once_the_assignment_is_ours_or_destroyed() -> None:
    observed = {"g": info("g", S.INCOMING, epoch=2)}
    assert plan_local({"g": assignment("g", epoch=2)}, observed) == {"g": [Activate("g", 2)]}
    assert plan_local({}, observed) == {
        "g": [StopGuest("g", destroy=True, reason="no longer assigned here")]
    }
    assert plan_local({"g": incoming("g")}, observed, handled={"m1"}) == {}


def test_migrate_runs_once_on_a_running_guest_and_cancels() -> None:
    desired = {"g": migrate("g")}
    running = {"g": info("g", S.RUNNING)}
    assert plan_local(desired, running) == {
        "g": [MigrateOut("g", "u-g", 1, "m1", "h2", "tcp:h2:1")]
    }
    assert plan_local(desired, running, handled={"m1"}) == {}
    cancelled = {"g": migrate("g", cancel=True)}
    assert plan_local(cancelled, running) == {
        "g": [CancelMigration("g", "m1", "cancelled before it began")]
    }
    assert plan_local(cancelled, running, handled={"m1"}) == {}
    # a stopped guest is started first (the destination is paused: no second runner)
    assert [type(s) for s in plan_local(desired, {"g": info("g", S.STOPPED)})["g"]] == [StartGuest]


def test_migration_in_flight_is_cancelled_when_no_longer_asked_for() -> None:
    running = {"g": info("g", S.RUNNING)}
    busy: dict[str, Any] = {"busy": {"g"}, "migrating": {"g": "m1"}}
    assert plan_local({"g": migrate("g")}, running, **busy) == {}
    assert plan_local({"g": migrate("g", cancel=True)}, running, **busy) == {
        "g": [CancelMigration("g", "m1", "cancelled by the control plane")]
    }
    for desired in ({}, {"g": assignment("g")}, {"g": migrate("g", mid="m2")}):
        assert plan_local(desired, running, **busy) == {
            "g": [CancelMigration("g", "m1", "the control plane no longer asks for it")]
        }


def test_migrated_away_guest_is_never_started_at_that_epoch() -> None:
    desired = {"g": migrate("g")}
    remembered = {"g": info("g", S.STOPPED, msg="stopped")}
    assert plan_local(desired, remembered, migrated={"g": ("u-g", 1)}, handled={"m1"}) == {}
    told = {"g": info("g", S.STOPPED, msg="migrated to tcp:h2:1")}  # after an agent restart
    assert plan_local(desired, told) == {  # the driver gives the result again
        "g": [MigrateOut("g", "u-g", 1, "m1", "h2", "tcp:h2:1")]
    }
    assert plan_local(desired, told, handled={"m1"}) == {}
    assert plan_local({"g": migrate("g", uri="tcp:h3:9")}, told) == {}  # not that one
    assert plan_local({"g": assignment("g")}, told) == {}
    assert plan_local({}, told) == {
        "g": [StopGuest("g", destroy=True, reason="no longer assigned here")]
    }
    newer = plan_local({"g": assignment("g", epoch=3)}, told)  # bound here again, later
    assert [type(s) for s in newer["g"]] == [StopGuest, StartGuest]
    # another uid or epoch in memory does not block
    assert "g" in plan_local({"g": assignment("g")}, remembered, migrated={"g": ("u-g", 0)})


def test_backup_runs_once_on_a_running_guest() -> None:
    backup = {"id": "b1", "mode": "incremental", "parent_path": "/b/g/b0.qcow2"}
    desired = {"g": {**assignment("g"), "backup": backup}}
    running = {"g": info("g", S.RUNNING)}
    assert plan_local(desired, running) == {
        "g": [RunBackup("g", 1, "b1", "incremental", "/b/g/b0.qcow2")]
    }
    assert plan_local(desired, running, handled={"b1"}) == {}
    assert [type(s) for s in plan_local(desired, {})["g"]] == [StartGuest]


def test_a_backup_step_carries_its_target_and_each_luns_parent() -> None:
    backup = {
        "id": "b2",
        "mode": "incremental",
        "target": "replica",
        "parent_path": "/r/g/root/b1.qcow2",
        "parent_volumes": {"db/logs": "/r/g/db+logs/b1.qcow2", "db/data": "/r/g/db+data/b1.qcow2"},
    }
    desired = {"g": {**assignment("g"), "backup": backup}}
    [step] = plan_local(desired, {"g": info("g", S.RUNNING)})["g"]
    assert step == RunBackup(
        "g",
        1,
        "b2",
        "incremental",
        "/r/g/root/b1.qcow2",
        "replica",
        (("db/data", "/r/g/db+data/b1.qcow2"), ("db/logs", "/r/g/db+logs/b1.qcow2")),
    )
    old = {"id": "b1", "mode": "full"}  # an assignment written before targets: local
    [step] = plan_local({"g": {**assignment("g"), "backup": old}}, {"g": info("g", S.RUNNING)})["g"]
    assert isinstance(step, RunBackup) and (step.target, step.parent_volumes) == ("local", ())


def test_reports_skip_incoming_and_migrated_away_and_say_migrating() -> None:
    desired = {
        "in": incoming("in"),
        "act": assignment("act", epoch=2),
        "out": migrate("out"),
        "gone": migrate("gone"),
        "told": assignment("told"),
    }
    observed = {
        "in": info("in", S.RUNNING, epoch=2),  # whatever the driver says: not ours yet
        "act": info("act", S.INCOMING, epoch=2),
        "out": info("out", S.RUNNING),
        "gone": info("gone", S.STOPPED),
        "told": info("told", S.STOPPED, msg="migrated to tcp:h2:1"),
    }
    got = reports(desired, observed, {}, migrating={"out": "m1"}, migrated={"gone": ("u-gone", 1)})
    assert got == [
        {"guest": "out", "epoch": 1, "state": "migrating", "message": "live migration to h2"}
    ]
