"""The agent's pure decisions: plan_local and reports."""

from __future__ import annotations

from typing import Any

from podium.agent import StartGuest, StopGuest, plan_local, reports
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
