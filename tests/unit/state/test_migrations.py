"""Live migration records over the store: every transition, stale reports, races, epochs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.state import (
    ClusterState,
    Conflict,
    Migrations,
    StaleEpoch,
    dumps,
    keys,
    loads,
    next_epoch,
    start_drain,
)
from podium.store import Store
from podium.store.memory import MemoryStore
from podium.store.sqlite import SQLiteStore

REQ = {"cpu": 1.0, "memory_mib": 128, "iops": 0, "net_mbps": 0}
CAP = Resources(cpu=4, memory_mib=1024, iops=1000, net_mbps=1000)
RESULT = {"total_ms": 900.0, "downtime_ms": 40.0, "transferred": 123456}


class Clock:
    """Moves by hand, plus a microsecond per reading (events are ordered by time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s = MemoryStore()
    yield s
    await s.close()


@pytest.fixture
async def state(store: Store, clock: Clock) -> ClusterState:
    return await cluster(store, clock)


async def cluster(store: Store, clock: Clock) -> ClusterState:
    """Hosts h1..h3, guest g bound to h1 at epoch 1 and running."""
    state = ClusterState(store, clock=clock)
    for host in ("h1", "h2", "h3"):
        lease = await store.grant(60)
        await state.register_host(
            HostName(host), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
        )
    spec = {"image": "tiny", "request": REQ, "running": True}
    await state.apply([Manifest(Kind.GUEST, "g", spec)])
    assert await state.bind("g", "h1", expected_revision=0) is not None
    await state.report_guest_status("h1", "g", 1, GuestState.RUNNING)
    return state


async def get(store: Store, key: str) -> Any:
    kv = await store.get(key)
    return loads(kv.value) if kv else None


async def assignments_of(store: Store, guest: str) -> dict[str, Any]:
    res = await store.range(keys.ASSIGN)
    return {
        kv.key[len(keys.ASSIGN) :].partition("/")[0]: loads(kv.value)
        for kv in res.kvs
        if kv.key.endswith("/" + guest)
    }


async def started(state: ClusterState, target: str = "h2") -> str:
    m = Migrations(state)
    record = await m.request("g", target)
    outcome = await m.start("g", record["id"], target)
    assert outcome.accepted, outcome
    return str(record["id"])


async def transferring(state: ClusterState, target: str = "h2") -> str:
    mid = await started(state, target)
    answer = await Migrations(state).report(
        target, {"guest": "g", "id": mid, "role": "target", "state": "ready", "uri": "tcp:x:1"}
    )
    assert answer.accepted, answer
    return mid


def report(mid: str, role: str, step: str, **extra: Any) -> dict[str, Any]:
    return {"guest": "g", "id": mid, "role": role, "state": step, **extra}


async def reasons(state: ClusterState) -> list[str]:
    events, _ = await state.list_events()
    return [e["reason"] for e in events if e["reason"].startswith("Migration")]


# -- the happy path, step by step --------------------------------------------------------


async def test_a_migration_walks_every_state_and_flips_the_binding_once(
    state: ClusterState, store: Store, clock: Clock
) -> None:
    m = Migrations(state)
    record = await m.request("g", "h2")
    mid = record["id"]
    seen = [record["state"]]
    assert record["source"] == "h1" and record["epoch"] == 1 and record["target_epoch"] is None

    clock.now += 1
    assert (await m.start("g", mid, "h2")).accepted
    seen.append((await m.get("g") or {})["state"])
    binding = await get(store, keys.binding_key("g"))
    assert binding == {"host": "h1", "epoch": 1, "migration": {"id": mid, "to": "h2", "epoch": 2}}
    placed = await assignments_of(store, "g")
    assert placed["h1"]["epoch"] == 1 and "incoming" not in placed["h1"]
    assert placed["h2"]["epoch"] == 2
    assert placed["h2"]["incoming"] == {"id": mid, "source": "h1"}
    assert placed["h2"]["spec"] == placed["h1"]["spec"]

    ready = await m.report("h2", report(mid, "target", "ready", uri="tcp:10.0.0.2:4444"))
    assert ready.accepted
    seen.append((await m.get("g") or {})["state"])
    placed = await assignments_of(store, "g")
    assert placed["h1"]["migrate"] == {"id": mid, "to": "h2", "uri": "tcp:10.0.0.2:4444"}

    progress = {"status": "active", "transferred": 10, "remaining": 90, "total": 100}
    assert (await m.report("h1", report(mid, "source", "progress", progress=progress))).accepted
    assert (await m.get("g") or {})["progress"] == progress

    clock.now += 2
    done = await m.report("h1", report(mid, "source", "completed", result=RESULT))
    assert done.accepted, done
    final = await m.get("g") or {}
    seen.append(final["state"])
    assert seen == ["pending", "preparing", "transferring", "completed"]
    assert final["result"]["downtime_ms"] == 40.0
    assert final["result"]["transferred"] == 123456
    assert final["result"]["total_ms"] == pytest.approx(2000.0, abs=1.0)
    assert set(final["result"]) >= {"total_ms", "downtime_ms", "switchover_ms", "transferred"}
    assert await get(store, keys.binding_key("g")) == {"host": "h2", "epoch": 2}
    placed = await assignments_of(store, "g")
    assert list(placed) == ["h2"]
    assert placed["h2"]["epoch"] == 2 and "incoming" not in placed["h2"]
    view = await state.get_object(Kind.GUEST, "g")
    assert view["status"]["host"] == "h2" and view["status"]["state"] == "migrating"
    assert "migration" not in view["status"]
    assert await reasons(state) == ["MigrationStarted", "MigrationCompleted"]


async def test_views_show_the_migration_and_the_targets_reservation(state: ClusterState) -> None:
    m = Migrations(state)
    record = await m.request("g", "h2")
    view = await state.get_object(Kind.GUEST, "g")
    assert view["status"]["migration"] == {"id": record["id"], "to": "h2", "state": "pending"}
    h2 = await state.get_object(Kind.HOST, "h2")
    assert h2["status"]["allocated"]["cpu"] == 0  # pending reserves nothing yet
    await m.start("g", record["id"], "h2")
    h2 = await state.get_object(Kind.HOST, "h2")
    assert h2["status"]["allocated"]["cpu"] == 1.0 and h2["status"]["guests"] == 0
    h1 = await state.get_object(Kind.HOST, "h1")
    assert h1["status"]["allocated"]["cpu"] == 1.0 and h1["status"]["guests"] == 1


async def test_the_target_cannot_report_status_before_the_flip(state: ClusterState) -> None:
    mid = await transferring(state)
    with pytest.raises(StaleEpoch, match="binding is h1 at epoch 1"):
        await state.report_guest_status("h2", "g", 2, GuestState.RUNNING)
    await state.report_guest_status("h1", "g", 1, GuestState.MIGRATING)  # the source may
    await Migrations(state).report("h1", report(mid, "source", "completed", result=RESULT))
    await state.report_guest_status("h2", "g", 2, GuestState.RUNNING)
    with pytest.raises(StaleEpoch):
        await state.report_guest_status("h1", "g", 1, GuestState.STOPPED)
    assert (await state.get_object(Kind.GUEST, "g"))["status"]["state"] == "running"


# -- failures and epoch floors ------------------------------------------------------------


async def test_a_target_failure_cleans_up_and_the_epoch_is_never_reused(
    state: ClusterState, store: Store
) -> None:
    m = Migrations(state)
    mid = await started(state)
    answer = await m.report("h2", report(mid, "target", "failed", message="no -incoming"))
    assert answer.accepted
    record = await m.get("g") or {}
    assert record["state"] == "failed" and "no -incoming" in record["message"]
    assert await get(store, keys.binding_key("g")) == {"host": "h1", "epoch": 1, "epoch_floor": 2}
    assert list(await assignments_of(store, "g")) == ["h1"]
    # a second migration reserves epoch 3, and a rebind after that epoch 4
    assert next_epoch(await get(store, keys.binding_key("g"))) == 3
    mid2 = await started(state, "h3")
    assert (await assignments_of(store, "g"))["h3"]["epoch"] == 3
    assert (await m.report("h1", report(mid2, "source", "failed", message="x"))).accepted
    _, rev = await state.get_binding("g")
    bound = await state.bind("g", "h2", expected_revision=rev)
    assert bound is not None and bound.epoch == 4
    assert await reasons(state) == [
        "MigrationStarted",
        "MigrationFailed",
        "MigrationStarted",
        "MigrationFailed",
    ]


async def test_a_source_failure_removes_migrate_and_keeps_the_guest_running(
    state: ClusterState, store: Store
) -> None:
    m = Migrations(state)
    mid = await transferring(state)
    assert (await m.report("h1", report(mid, "source", "failed", message="stalled"))).accepted
    placed = await assignments_of(store, "g")
    assert list(placed) == ["h1"] and "migrate" not in placed["h1"]
    view = await state.get_object(Kind.GUEST, "g")
    assert view["status"]["state"] == "running" and view["status"]["host"] == "h1"
    again = await m.report("h1", report(mid, "source", "failed", message="stalled"))
    assert again.accepted and again.reason == "already failed"


async def test_controller_fail_of_a_pending_migration_touches_only_the_record(
    state: ClusterState, store: Store
) -> None:
    m = Migrations(state)
    record = await m.request("g", "h2")
    before = await get(store, keys.binding_key("g"))
    assert await m.fail("g", record["id"], "no host fits")
    assert (await m.get("g") or {})["state"] == "failed"
    assert await get(store, keys.binding_key("g")) == before
    assert not await m.fail("g", record["id"], "twice")


# -- races with failover -----------------------------------------------------------------


async def test_failover_bind_during_a_migration_fails_it_and_skips_its_epoch(
    state: ClusterState, store: Store
) -> None:
    mid = await transferring(state)
    _, rev = await state.get_binding("g")
    bound = await state.bind("g", "h3", expected_revision=rev)
    assert bound is not None and bound.epoch == 3  # 2 was the migration's
    record = await Migrations(state).get("g") or {}
    assert record["state"] == "failed" and "rebound to h3" in record["message"]
    assert list(await assignments_of(store, "g")) == ["h3"]
    late = await Migrations(state).report("h1", report(mid, "source", "completed", result=RESULT))
    assert not late.accepted
    assert await get(store, keys.binding_key("g")) == {"host": "h3", "epoch": 3}
    assert "MigrationFailed" in await reasons(state)


async def test_failover_onto_the_migration_target_overwrites_its_incoming_assignment(
    state: ClusterState, store: Store
) -> None:
    await started(state)
    _, rev = await state.get_binding("g")
    bound = await state.bind("g", "h2", expected_revision=rev)
    assert bound is not None and bound.epoch == 3
    placed = await assignments_of(store, "g")
    assert list(placed) == ["h2"] and placed["h2"]["epoch"] == 3 and "incoming" not in placed["h2"]


async def test_completion_first_makes_a_stale_failover_bind_fail(
    state: ClusterState, store: Store
) -> None:
    mid = await transferring(state)
    _, stale_rev = await state.get_binding("g")
    done = await Migrations(state).report("h1", report(mid, "source", "completed", result=RESULT))
    assert done.accepted
    assert await state.bind("g", "h3", expected_revision=stale_rev) is None
    assert await get(store, keys.binding_key("g")) == {"host": "h2", "epoch": 2}


async def test_completion_after_a_failure_restarts_the_guest(
    state: ClusterState, store: Store
) -> None:
    m = Migrations(state)
    mid = await transferring(state)
    assert await m.fail("g", mid, "target host h2 was lost")
    late = await m.report("h1", report(mid, "source", "completed", result=RESULT))
    assert late.accepted and "restarted" in late.reason
    binding = await get(store, keys.binding_key("g"))
    assert binding["host"] is None and binding["epoch"] == 3
    assert await assignments_of(store, "g") == {}


# -- stale and misdirected reports ---------------------------------------------------------


async def test_stale_and_misdirected_reports_are_not_accepted(state: ClusterState) -> None:
    m = Migrations(state)
    mid = await started(state)
    cases = [
        ("h2", report("mig-old", "target", "ready", uri="tcp:x:1"), "not current"),
        ("h3", report(mid, "target", "ready", uri="tcp:x:1"), "not the target"),
        ("h2", report(mid, "source", "completed"), "not the source"),
        ("h1", report(mid, "source", "progress", progress={}), "not transferring"),
        ("h1", report(mid, "source", "completed", result=RESULT), "not transferring"),
        ("h1", report(mid, "source", "ready", uri="tcp:x:1"), "does not report"),
        ("h2", report(mid, "target", "ready"), "needs the uri"),
    ]
    for host, body, why in cases:
        outcome = await m.report(host, body)
        assert not outcome.accepted and why in outcome.reason, (body, outcome)
    assert (await m.get("g") or {})["state"] == "preparing"
    first = await m.report("h2", report(mid, "target", "ready", uri="tcp:x:1"))
    again = await m.report("h2", report(mid, "target", "ready", uri="tcp:x:1"))
    assert first.accepted and again.accepted and again.reason == "already transferring"
    await m.report("h1", report(mid, "source", "completed", result=RESULT))
    dup = await m.report("h1", report(mid, "source", "completed", result=RESULT))
    assert dup.accepted and dup.reason == "already completed"
    late = await m.report("h2", report(mid, "target", "failed", message="x"))
    assert not late.accepted


async def test_start_refuses_a_moved_guest_or_a_dead_target(
    state: ClusterState, store: Store
) -> None:
    m = Migrations(state)
    record = await m.request("g", "h2")
    await store.delete(keys.host_live_key("h2"))
    assert not (await m.start("g", record["id"], "h2")).accepted
    _, rev = await state.get_binding("g")
    await state.bind("g", "h3", expected_revision=rev)
    outcome = await m.start("g", record["id"], "h3")
    assert not outcome.accepted and outcome.reason == "moved"


# -- requests ----------------------------------------------------------------------------------


async def test_requests_are_refused_when_they_cannot_go(state: ClusterState, store: Store) -> None:
    m = Migrations(state)
    with pytest.raises(Conflict, match="already runs on h1"):
        await m.request("g", "h1")
    await store.put(keys.backup_key("g", "b1"), dumps({"id": "b1", "state": "running"}))
    with pytest.raises(Conflict, match="backup b1 in flight"):
        await m.request("g", "h2")
    await store.delete(keys.backup_key("g", "b1"))
    await m.request("g", "h2")
    with pytest.raises(Conflict, match="already migrating"):
        await m.request("g", "h3")
    await state.report_guest_status("h1", "g", 1, GuestState.STOPPED)
    record = await m.get("g") or {}
    await m.fail("g", record["id"], "test")
    with pytest.raises(Conflict, match="is stopped, not running"):
        await m.request("g", "h2")


async def test_deleting_a_migrating_guest_drops_the_target_assignment(
    state: ClusterState, store: Store
) -> None:
    await started(state)
    await state.delete_object(Kind.GUEST, "g")
    assert await assignments_of(store, "g") == {}
    assert await store.get(keys.migration_key("g")) is None


# -- drain flags ---------------------------------------------------------------------------


async def test_drain_cordons_survives_reregistration_and_uncordon_ends_it(
    state: ClusterState, store: Store
) -> None:
    assert await start_drain(state, "h1") == 1
    assert await start_drain(state, "h1") == 1  # idempotent
    lease = await store.grant(60)
    await state.register_host(
        HostName("h1"), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
    )
    view = await state.get_object(Kind.HOST, "h1")
    assert view["status"]["draining"] and view["status"]["cordoned"]
    await state.set_cordoned("h1", False)
    view = await state.get_object(Kind.HOST, "h1")
    assert not view["status"]["draining"] and not view["status"]["cordoned"]


# -- the same over SQLite ----------------------------------------------------------------------


async def test_a_migration_over_sqlite(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteStore(str(tmp_path / "podium.db"))
    try:
        state = await cluster(store, clock)
        mid = await transferring(state, "h3")
        done = await Migrations(state).report(
            "h1", report(mid, "source", "completed", result=RESULT)
        )
        assert done.accepted
        assert await get(store, keys.binding_key("g")) == {"host": "h3", "epoch": 2}
        assert list(await assignments_of(store, "g")) == ["h3"]
    finally:
        await store.close()
