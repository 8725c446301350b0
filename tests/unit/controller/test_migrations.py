"""Migration and drain controllers: pure plans, one reconcile, and a whole drain end to end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from podium.controller import (
    ControllerManager,
    DrainController,
    Leadership,
    MigrationController,
    MigrationLimits,
    TemporaryError,
    plan_drain,
    plan_migrations,
)
from podium.controller._controllers import Context
from podium.controller._events import EventRecorder
from podium.controller._migration_plans import (
    Drained,
    DrainGuest,
    FailMigration,
    LookAgain,
    MigrationView,
    NoteMigration,
    RequestMigration,
    StartMigration,
    StopForDrain,
    UnbindForDrain,
)
from podium.controller._snapshot import HostRecord
from podium.model import GuestState, HostState, Kind, Manifest
from podium.scheduler import MigrationPlanner, default_scheduler
from podium.state import ClusterState, Migrations, keys, loads, start_drain
from tests.support.tasks import running
from tests.unit.controller.ctrl_support import FakeClock, eventually, join, lead_by_fiat

REQ = {"cpu": 1, "memory_mib": 512, "iops": 10, "net_mbps": 10}
LIMITS = MigrationLimits(max_migrations=2, max_per_host=1, prepare_timeout=60.0)

# -- pure plans ------------------------------------------------------------------------------


def host_view(name: str, *, state: str = "ready", cpu: float = 8, used: float = 0) -> Any:
    return {
        "kind": "Host",
        "name": name,
        "spec": {},
        "status": {
            "state": state,
            "capacity": {"cpu": cpu, "memory_mib": 8192, "iops": 1000, "net_mbps": 1000},
            "allocated": {"cpu": used, "memory_mib": 0, "iops": 0, "net_mbps": 0},
            "cordoned": False,
            "draining": False,
            "labels": {},
        },
    }


def guest_view(name: str, on: str) -> Any:
    return {
        "kind": "Guest",
        "name": name,
        "spec": {"request": REQ},
        "status": {"host": on, "state": "running", "epoch": 1},
    }


def record(guest: str, source: str, target: str | None, state: str = "pending", **kw: Any) -> Any:
    return {
        "id": f"m-{guest}",
        "guest": guest,
        "source": source,
        "target": target,
        "auto": target is None,
        "epoch": 1,
        "state": state,
        "created": kw.pop("created", 1.0),
        "message": "",
        **kw,
    }


def view_of(
    records: dict[str, Any], placement: dict[str, str], hosts: list[Any], **bindings: Any
) -> MigrationView:
    guests = [guest_view(g, h) for g, h in placement.items()]
    binds = {g: {"host": h, "epoch": 1} for g, h in placement.items()}
    binds.update(bindings)
    statuses = {g: {"host": h, "epoch": 1, "state": "running"} for g, h in placement.items()}
    host_records = {
        h["name"]: HostRecord(h["name"], {}, {"state": h["status"]["state"]}, True) for h in hosts
    }
    return MigrationView(
        records,
        binds,
        statuses,
        host_records,
        MigrationPlanner.from_views(hosts, guests),
        frozenset(placement),
    )


def test_pending_migrations_start_within_the_cluster_and_host_limits() -> None:
    hosts = [host_view(h) for h in ("h1", "h2", "h3")]
    hosts += [host_view("h4", used=4), host_view("h5", used=3)]  # best fit: fullest first
    placement = {"a": "h1", "b": "h1", "c": "h2", "d": "h3"}
    records = {
        "a": record("a", "h1", None, created=1),
        "b": record("b", "h1", None, created=2),  # h1 already busy with a
        "c": record("c", "h2", None, created=3),
        "d": record("d", "h3", None, created=4),  # cluster limit reached
    }
    actions = plan_migrations(view_of(records, placement, hosts), default_scheduler(), LIMITS, 10.0)
    starts = [a for a in actions if isinstance(a, StartMigration)]
    # a takes the fullest host; c's best (h4) is busy with a, so it takes the next best
    assert starts == [StartMigration("a", "m-a", "h4"), StartMigration("c", "m-c", "h5")]
    notes = {a.guest: a.message for a in actions if isinstance(a, NoteMigration)}
    assert "source h1 takes part in 1 migration(s) already" in notes["b"]
    assert "--max-migrations-per-host 1" in notes["b"]
    assert "2 migration(s) in flight" in notes["d"] and "--max-migrations 2" in notes["d"]


def test_in_flight_migrations_fail_on_timeout_lost_hosts_or_a_lost_binding() -> None:
    hosts = [host_view("h1"), host_view("h2"), host_view("h3", state="lost")]
    placement = {"slow": "h1", "dead": "h2", "orphan": "h1", "fine": "h2"}

    def flying(guest: str, source: str, target: str, started: float) -> Any:
        return record(guest, source, target, "preparing", started=started)

    records = {
        "slow": flying("slow", "h1", "h2", 0.0),
        "dead": flying("dead", "h2", "h3", 50.0),
        "orphan": flying("orphan", "h1", "h2", 50.0),
        "fine": flying("fine", "h2", "h1", 50.0),
    }
    bindings = {
        g: {"host": placement[g], "epoch": 1, "migration": {"id": f"m-{g}", "to": "x"}}
        for g in ("slow", "dead", "fine")
    }
    view = view_of(records, placement, hosts, **bindings)
    actions = plan_migrations(view, default_scheduler(), LIMITS, 61.0)
    fails = {a.guest: a.why for a in actions if isinstance(a, FailMigration)}
    assert fails == {
        "slow": "target h2 did not get ready within 60 s",
        "dead": "target host h3 was lost",
        "orphan": "the guest's binding no longer carries it",
    }
    again = [a for a in actions if isinstance(a, LookAgain)]
    assert len(again) == 1 and again[0].delay == 49.0  # "fine" times out at 110


def test_pending_migrations_of_moved_stopped_or_unfit_guests_fail_or_wait() -> None:
    hosts = [host_view("h1"), host_view("h2", cpu=0.5)]
    placement = {"moved": "h2", "stopped": "h1", "big": "h1", "pinned": "h1", "undrained": "h1"}
    records = {
        "undrained": record("undrained", "h1", None, reason="drain"),
        "moved": record("moved", "h1", None),
        "stopped": record("stopped", "h1", None),
        "big": record("big", "h1", None),
        "pinned": record("pinned", "h1", "h2"),
    }
    view = view_of(records, placement, hosts)
    view.statuses["stopped"]["state"] = "stopped"
    actions = plan_migrations(view, default_scheduler(), LIMITS, 0.0)
    fails = {a.guest: a.why for a in actions if isinstance(a, FailMigration)}
    assert fails["moved"] == "the guest moved before the migration started"
    assert fails["stopped"] == "the guest is stopped, not running"
    assert "does not fit" in fails["pinned"]
    assert fails["undrained"] == "the drain of h1 ended"  # h1 was uncordoned
    notes = {a.guest: a.message for a in actions if isinstance(a, NoteMigration)}
    assert notes["big"] == "waiting: no host can take it: 0/1 hosts fit: 1 lacked cpu"


def drain_guest(name: str, state: str | None, *, since: float = 0.0, **kw: Any) -> DrainGuest:
    status = {"host": "h1", "epoch": 1, "state": state, "since": since} if state else None
    return DrainGuest(
        name,
        {"host": "h1", "epoch": 1},
        7,
        status,
        kw.get("assignment", {"epoch": 1}),
        kw.get("migration"),
    )


def test_drain_migrates_the_running_and_stops_then_rebinds_the_others() -> None:
    stop = {"epoch": 1, "drain_stop": 100.0}
    guests = [
        drain_guest("run", "running"),
        drain_guest("crashed", "failed"),
        drain_guest("new", None),
        drain_guest("booting", "starting"),
        drain_guest("moving", "running", migration={"state": "preparing"}),
        drain_guest("stopped-now", "stopped", since=101.0, assignment=stop),
        drain_guest("stopped-before", "stopped", since=99.0, assignment=stop),
        drain_guest("silent", None, assignment=stop),
    ]
    actions = plan_drain("h1", guests, 102.0, LIMITS)
    assert RequestMigration("run", "h1") in actions
    assert StopForDrain("crashed", "h1") in actions and StopForDrain("new", "h1") in actions
    assert UnbindForDrain("stopped-now", "h1", 7) in actions
    names = {getattr(a, "guest", None) for a in actions}
    assert not names & {"booting", "moving", "stopped-before", "silent"}
    later = plan_drain("h1", guests, 106.0, LIMITS)  # the grace (5 s) is over
    assert UnbindForDrain("stopped-before", "h1", 7) in later
    assert UnbindForDrain("silent", "h1", 7) in later
    assert plan_drain("h1", [], 0.0, LIMITS) == [Drained("h1")]


def test_drain_retries_a_failed_migration_after_a_pause() -> None:
    failed = {"state": "failed", "epoch": 1, "finished": 100.0}
    guests = [drain_guest("g", "running", migration=failed)]
    soon = plan_drain("h1", guests, 101.0, LIMITS)
    assert [type(a) for a in soon] == [LookAgain]
    assert plan_drain("h1", guests, 111.0, LIMITS) == [RequestMigration("g", "h1")]


# -- over the store --------------------------------------------------------------------------


async def setup(state: ClusterState, hosts: tuple[str, ...], guests: dict[str, str]) -> None:
    for h in hosts:
        await join(state, h, ttl=600)
    for name, on in guests.items():
        spec = {"image": "tiny", "request": REQ, "running": True}
        await state.apply([Manifest(Kind.GUEST, name, spec)])
        bound = await state.bind(name, on, expected_revision=0)
        assert bound is not None
        await state.report_guest_status(on, name, bound.epoch, GuestState.RUNNING)


async def context(state: ClusterState, clock: FakeClock, leadership: Leadership) -> Context:
    events = EventRecorder(state, interval=0.01)
    return Context(state, leadership, events, default_scheduler(), 10, clock, migrations=LIMITS)


async def test_one_reconcile_starts_two_and_a_deposed_leader_starts_none(
    state: ClusterState, clock: FakeClock
) -> None:
    await setup(state, ("h1", "h2", "h3", "h4"), {"a": "h1", "b": "h2", "c": "h3"})
    m = Migrations(state)
    for g in ("a", "b", "c"):
        await m.request(g, None, auto=True)
    stale = Leadership("old", 0, 1)  # a leader key revision that no longer holds
    with pytest.raises(TemporaryError, match="changed meanwhile"):
        await MigrationController(await context(state, clock, stale)).reconcile("migrations")
    assert [(await m.get(g) or {})["state"] for g in ("a", "b", "c")] == ["pending"] * 3

    ctx = await context(state, clock, await lead_by_fiat(state))
    with pytest.raises(TemporaryError, match="a target is preparing"):  # look again at 60 s
        await MigrationController(ctx).reconcile("migrations")
    records = {g: await m.get(g) or {} for g in ("a", "b", "c")}
    assert sorted(r["state"] for r in records.values()) == ["pending", "preparing", "preparing"]
    waiting = next(r for r in records.values() if r["state"] == "pending")
    assert waiting["message"].startswith("waiting: ")
    hosts = (await state.list_objects(Kind.HOST))[0]
    reserved = {h["name"]: h["status"]["allocated"]["cpu"] for h in hosts}
    assert sum(reserved.values()) == 5  # three guests plus two reservations

    clock.advance(61)
    with contextlib.suppress(TemporaryError):  # the third one starts: look again later
        await MigrationController(ctx).reconcile("migrations")
    states = sorted([(await m.get(g) or {})["state"] for g in ("a", "b", "c")])
    assert states == ["failed", "failed", "preparing"]  # timed out; the third one started
    failed = [await m.get(g) or {} for g in ("a", "b", "c")]
    assert all(
        "did not get ready within 60 s" in r["message"] for r in failed if r["state"] == "failed"
    )


# -- end to end: a drain with simulated agents ----------------------------------------------


async def fake_agents(state: ClusterState, hosts: tuple[str, ...]) -> None:
    """Agents that do what the contract says, instantly: ready, completed, running."""
    m = Migrations(state)
    while True:
        for h in hosts:
            items, _ = await state.assignments(h)
            for a in items:
                extra = a.extra
                if "incoming" in extra:
                    report = {"guest": a.guest, "id": extra["incoming"]["id"], "role": "target"}
                    await m.report(h, {**report, "state": "ready", "uri": f"tcp:{h}:1"})
                elif "migrate" in extra:
                    report = {"guest": a.guest, "id": extra["migrate"]["id"], "role": "source"}
                    await m.report(h, {**report, "state": "completed", "result": {}})
                else:
                    status = await state.store.get(keys.guest_status_key(a.guest))
                    seen = loads(status.value) if status else {}
                    mine = (seen.get("host"), seen.get("epoch")) == (h, a.epoch)
                    want = "running" if a.spec.get("running", True) else "stopped"
                    if not mine or (want == "stopped" and seen.get("state") != "stopped"):
                        with contextlib.suppress(Exception):
                            await state.report_guest_status(h, a.guest, a.epoch, GuestState(want))
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def controllers(state: ClusterState, clock: FakeClock) -> AsyncIterator[None]:
    manager = ControllerManager(
        state, default_scheduler(), host_ttl=10, clock=clock, event_interval=0.02, migrations=LIMITS
    )
    async with running(manager.run(await lead_by_fiat(state))):
        yield


async def test_a_drain_empties_the_host_live_and_says_so_once(
    state: ClusterState, clock: FakeClock
) -> None:
    hosts = ("h1", "h2", "h3")
    await setup(state, hosts, {"a": "h1", "b": "h1", "c": "h2"})
    spec = {"image": "tiny", "request": REQ, "running": True}
    await state.apply([Manifest(Kind.GUEST, "crashed", spec)])
    bound = await state.bind("crashed", "h1", expected_revision=0)
    assert bound is not None
    await state.report_guest_status("h1", "crashed", 1, GuestState.FAILED)
    agents = asyncio.create_task(fake_agents(state, hosts))
    try:
        async with controllers(state, clock):
            assert await start_drain(state, "h1") == 3

            async def drained() -> bool:
                view = await state.get_object(Kind.HOST, "h1")
                return bool(view["status"]["guests"] == 0 and view["spec"].get("drained"))

            await eventually(drained, timeout=10)
            views = {g["name"]: g for g in (await state.list_objects(Kind.GUEST))[0]}
            for name in ("a", "b"):
                assert views[name]["status"]["host"] in ("h2", "h3")
                assert views[name]["status"]["epoch"] == 2  # live: exactly one new epoch
                assert (await Migrations(state).get(name) or {})["reason"] == "drain"

            async def replaced() -> bool:  # cold: unbound, then placed again by placement
                view = await state.get_object(Kind.GUEST, "crashed")
                return view["status"]["host"] in ("h2", "h3") and view["status"]["epoch"] == 3

            await eventually(replaced)
            await eventually(lambda: _count(state, "HostDrained", 1))
            await asyncio.sleep(0.2)
            assert await _count(state, "HostDrained", 1)  # once
    finally:
        agents.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await agents
    events, _ = await state.list_events()
    reasons = [e["reason"] for e in events]
    assert reasons.count("MigrationCompleted") == 2
    assert "GuestEvacuated" in reasons


async def _count(state: ClusterState, reason: str, n: int) -> bool:
    events, _ = await state.list_events()
    return sum(1 for e in events if e["reason"] == reason) == n


async def test_drain_controller_ignores_hosts_not_draining(
    state: ClusterState, clock: FakeClock
) -> None:
    await setup(state, ("h1", "h2"), {"a": "h1"})
    ctx = await context(state, clock, await lead_by_fiat(state))
    await DrainController(ctx).reconcile("h1")
    assert await Migrations(state).get("a") is None
    assert (await state.get_object(Kind.HOST, "h1"))["status"]["state"] == HostState.READY.value
