"""The replication controller: replicas asked at half the RPO, one in flight, late warnings."""

from __future__ import annotations

from typing import Any

from podium.controller import EventRecorder
from podium.controller._controllers import CONTROLLERS, Context
from podium.controller._replication import SWEEP, ReplicationController, plan_replica
from podium.model import GuestState, Kind, Manifest
from podium.scheduler import default_scheduler
from podium.state import ClusterState, dumps, keys, list_backups, loads
from podium.store import Event, EventType, KeyValue
from tests.unit.controller.ctrl_support import FakeClock, join, lead_by_fiat

RPO = 60
PROFILE = {
    "nics": [{"network": "front", "mac_pool": "macs"}],
    "protection": {"rpo_s": RPO},
}
GUEST = {"profile": "db", "image": "tiny", "request": {"cpu": 1, "memory_mib": 128}}


async def setup(
    state: ClusterState, clock: FakeClock
) -> tuple[ReplicationController, EventRecorder]:
    await join(state, "h1", labels={"site": "A"})
    await state.apply(
        [
            Manifest(
                Kind.POOL, "macs", {"type": "mac", "range": "02:00:00:00:00:00-02:00:00:00:00:ff"}
            ),
            Manifest(Kind.NETWORK, "front", {"vlan": 100}),
            Manifest(Kind.PROFILE, "db", PROFILE),
            Manifest(Kind.GUEST, "db", GUEST),
        ]
    )
    bound = await state.bind("db", "h1", expected_revision=0)
    assert bound is not None
    await state.report_guest_status("h1", "db", bound.epoch, GuestState.RUNNING)
    events = EventRecorder(state)
    ctx = Context(state, await lead_by_fiat(state), events, default_scheduler(), 10, clock)
    return ReplicationController(ctx), events


async def replicas(state: ClusterState) -> list[dict[str, Any]]:
    return [b for b in (await list_backups(state, "db"))[0] if b.get("target") == "replica"]


async def finish(state: ClusterState, backup: dict[str, Any], outcome: str = "completed") -> None:
    """The data path's report, written straight into the store."""
    done = {**backup, "state": outcome, "finished": backup["created"] + 1, "path": "/r/x.qcow2"}
    await state.store.put(keys.backup_key(backup["guest"], backup["id"]), dumps(done))
    kv = await state.store.get(keys.assign_key("h1", "db"))
    assert kv is not None
    await state.store.put(
        keys.assign_key("h1", "db"),
        dumps({k: v for k, v in loads(kv.value).items() if k != "backup"}),
    )


async def reasons(state: ClusterState, events: EventRecorder) -> list[str]:
    await events.flush()
    return [e["reason"] for e in (await state.list_events())[0] if e["kind"] == "Profile"]


async def test_it_is_registered_with_the_leader_controllers() -> None:
    assert ReplicationController in CONTROLLERS


async def test_replicas_are_asked_at_half_the_rpo_one_in_flight_at_a_time(
    state: ClusterState, clock: FakeClock
) -> None:
    ctrl, _ = await setup(state, clock)
    delay = await ctrl.reconcile(SWEEP)
    (first,) = await replicas(state)
    assert (first["state"], first["mode"], first["target"]) == ("pending", "full", "replica")
    assert first["site"] == "A" and delay is not None and delay > 0
    clock.advance(40)
    await ctrl.reconcile(SWEEP)
    assert len(await replicas(state)) == 1  # still in flight: no second request
    await finish(state, first)
    point = first["created"]
    clock.now = point + RPO / 2 - 1
    delay = await ctrl.reconcile(SWEEP)
    assert len(await replicas(state)) == 1  # not due yet
    assert delay == 1.0  # wakes when it is due
    clock.now = point + RPO / 2
    await ctrl.reconcile(SWEEP)
    second = (await replicas(state))[-1]
    assert second["id"] != first["id"] and second["mode"] == "incremental"
    assert second["parent"] == first["id"]


async def test_no_request_while_not_running_or_migrating() -> None:
    guest = {"uid": "u", "created": 0.0, "spec": {}}
    binding = {"host": "h1", "epoch": 2}
    running = {"host": "h1", "epoch": 2, "state": "running"}
    plan = plan_replica(100.0, RPO, guest, binding=binding, status=running, backups=[])
    assert plan.request and plan.late and plan.lag_s == 100.0
    stale = {**running, "epoch": 1}
    assert not plan_replica(100.0, RPO, guest, binding=binding, status=stale, backups=[]).request
    moving = {**binding, "migration": {"to": "h2"}}
    assert not plan_replica(100.0, RPO, guest, binding=moving, status=running, backups=[]).request
    local = [{"uid": "u", "state": "running", "target": "local", "created": 90.0}]
    assert not plan_replica(
        100.0, RPO, guest, binding=binding, status=running, backups=local
    ).request
    done = [{"uid": "u", "state": "completed", "target": "replica", "created": 80.0}]
    plan = plan_replica(100.0, RPO, guest, binding=binding, status=running, backups=done)
    assert (plan.request, plan.late, plan.lag_s, plan.due_in) == (False, False, 20.0, 10.0)
    other_uid = [{**done[0], "uid": "old"}]  # a replica of an earlier guest of that name
    assert plan_replica(
        100.0, RPO, guest, binding=binding, status=running, backups=other_uid
    ).request
    stopped = {**guest, "spec": {"running": False}}
    assert not plan_replica(100.0, RPO, stopped, binding=None, status=None, backups=[]).late


async def test_a_late_replica_is_warned_once_per_lapse(
    state: ClusterState, clock: FakeClock
) -> None:
    ctrl, events = await setup(state, clock)
    await ctrl.reconcile(SWEEP)
    (first,) = await replicas(state)
    clock.advance(RPO + 1)  # the first replica never finishes
    await ctrl.reconcile(SWEEP)
    await ctrl.reconcile(SWEEP)
    assert (await reasons(state, events)).count("ReplicaLate") == 1
    await finish(state, first)
    first_point = first["created"]
    clock.now = first_point + RPO / 2
    await ctrl.reconcile(SWEEP)  # back within the RPO: the lapse is over; asks again
    (_, second) = await replicas(state)
    clock.now = first_point + RPO + 5  # the second is stuck: a new lapse
    await ctrl.reconcile(SWEEP)
    assert (await reasons(state, events)).count("ReplicaLate") == 2
    assert second["state"] == "pending"


async def test_failed_replicas_become_replica_failed_warnings(
    state: ClusterState, clock: FakeClock
) -> None:
    ctrl, events = await setup(state, clock)
    await ctrl.reconcile(SWEEP)
    (first,) = await replicas(state)
    failed = {**first, "state": "failed", "message": "the replica target is full"}
    key = keys.backup_key("db", first["id"])
    await state.store.put(key, dumps(failed))
    kv = KeyValue(key, dumps(failed), 1, 2, 2)
    prev = KeyValue(key, dumps(first), 1, 1, 1)
    assert list(ctrl.keys_for(Event(EventType.PUT, kv, prev))) == [SWEEP]
    await ctrl.reconcile(SWEEP)
    await events.flush()
    (event,) = [e for e in (await state.list_events())[0] if e["reason"] == "ReplicaFailed"]
    assert event["type"] == "Warning" and event["name"] == "db"
    assert "the replica target is full" in event["message"]
    local = KeyValue(keys.backup_key("db", "x"), dumps({**failed, "target": "local"}), 1, 3, 1)
    assert list(ctrl.keys_for(Event(EventType.PUT, local, None))) == []


async def test_work_per_pass_is_bounded(state: ClusterState, clock: FakeClock) -> None:
    ctrl, _ = await setup(state, clock)
    ctrl.max_checks = 0
    assert await ctrl.reconcile(SWEEP) == ctrl.min_interval  # more to do: back soon
    assert await replicas(state) == []
    ctrl.max_checks, ctrl.max_requests = 512, 0
    await ctrl.reconcile(SWEEP)
    assert await replicas(state) == []
