"""Controllers end to end over the memory store: apps, placement, failover, events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from podium.controller import _controllers as ctl
from podium.model import GuestState, HostState, Kind, Manifest, Resources
from podium.state import ClusterState, keys, loads
from podium.store import EventType
from tests.unit.controller.ctrl_support import (
    FakeClock,
    eventually,
    join,
    lead_by_fiat,
    renew,
    running,
)

REQ = {"cpu": 1, "memory_mib": 512, "iops": 10, "net_mbps": 10}


def app(name: str, replicas: int, **spec: Any) -> Manifest:
    return Manifest(Kind.APP, name, {"replicas": replicas, "image": "tiny", "request": REQ, **spec})


async def guests(state: ClusterState) -> dict[str, dict[str, Any]]:
    items, _ = await state.list_objects(Kind.GUEST)
    return {g["name"]: g for g in items}


async def event_reasons(state: ClusterState) -> list[tuple[str, str]]:
    events, _ = await state.list_events()
    return [(e["reason"], e["name"]) for e in events]


async def test_spread_app_on_three_hosts_places_three_and_says_why_not(
    state: ClusterState, clock: FakeClock
) -> None:
    for h in ("h1", "h2", "h3"):
        await join(state, h)
    async with running(state, clock):
        await state.apply([app("web", 6, spread="host")])

        async def settled() -> bool:
            gs = await guests(state)
            bound = [g for g in gs.values() if g["status"]["host"]]
            noted = [g for g in gs.values() if "hosts fit" in g["status"]["message"]]
            return len(gs) == 6 and len(bound) == 3 and len(noted) == 3

        await eventually(settled)
        gs = await guests(state)
        assert sorted(g["status"]["host"] for g in gs.values() if g["status"]["host"]) == [
            "h1",
            "h2",
            "h3",
        ]
        assert {n for n, g in gs.items() if g["status"]["host"]} == {"web-1", "web-2", "web-3"}
        for name in ("web-4", "web-5", "web-6"):
            assert gs[name]["status"]["state"] == GuestState.PENDING.value
            assert gs[name]["status"]["message"] == (
                "0/3 hosts fit: 3 already hold a replica of app web (spread host)"
            )
        assert all(g["owner"] == "web" for g in gs.values())
        await eventually(lambda: _has_events(state, "GuestPlaced", 3))
        assert ("ScaledUp", "web") in await event_reasons(state)

        # a fourth host joins: one more replica lands there, by itself
        await join(state, "h4")

        async def four_bound() -> bool:
            return sum(1 for g in (await guests(state)).values() if g["status"]["host"]) == 4

        await eventually(four_bound)


async def _has_events(state: ClusterState, reason: str, count: int) -> bool:
    return sum(1 for r, _ in await event_reasons(state) if r == reason) >= count


async def test_scale_down_deletes_the_highest_replicas_and_delete_removes_all(
    state: ClusterState, clock: FakeClock
) -> None:
    await join(state, "h1")
    async with running(state, clock):
        await state.apply([app("db", 4)])

        async def count(n: int) -> bool:
            return len(await guests(state)) == n

        await eventually(lambda: count(4))
        await state.apply([app("db", 2)])
        await eventually(lambda: count(2))
        assert sorted(await guests(state)) == ["db-1", "db-2"]
        await state.apply([app("db", 3)])
        await eventually(lambda: count(3))
        assert sorted(await guests(state)) == ["db-1", "db-2", "db-3"]
        await state.delete_object(Kind.APP, "db")
        await eventually(lambda: count(0))
        assert (await state.store.range(keys.ASSIGN)).kvs == ()


async def test_lost_host_guests_rebind_with_next_epoch_only_after_lease_expiry(
    state: ClusterState, clock: FakeClock
) -> None:
    store = state.store
    leases = {h: await join(state, h, ttl=10) for h in ("h1", "h2", "h3")}
    async with running(state, clock):
        await state.apply(
            [app("web", 2, spread="host", priority=1), app("db", 1, spread="host", priority=9)]
        )

        async def all_bound() -> bool:
            gs = await guests(state)
            return len(gs) == 3 and all(g["status"]["host"] for g in gs.values())

        await eventually(all_bound)
        victim = (await guests(state))["db-1"]["status"]["host"]
        moving = sorted(
            n for n, g in (await guests(state)).items() if g["status"]["host"] == victim
        )
        survivors = [h for h in leases if h != victim]

        # 9 s without renewals: the lease is late, not expired. Suspect; nothing may move.
        for _ in range(9):
            clock.advance(1)
            for h in survivors:
                await renew(state, h, leases[h])
        await eventually(lambda: _has_events(state, "HostSuspect", 1))
        await asyncio.sleep(0.3)
        assert (await state.get_object(Kind.HOST, victim))["status"]["state"] == "suspect"
        gs = await guests(state)
        assert all(
            gs[n]["status"]["host"] == victim and gs[n]["status"]["epoch"] == 1 for n in moving
        )
        assert await store.get(keys.host_live_key(victim)) is not None

        # the lease expires: now they move, with epoch 2, higher priority first
        clock.advance(1.5)
        for h in survivors:
            await renew(state, h, leases[h])

        async def moved() -> bool:
            gs = await guests(state)
            return all(gs[n]["status"]["host"] in survivors for n in moving)

        await eventually(moved)
        gs = await guests(state)
        assert all(gs[n]["status"]["epoch"] == 2 for n in moving)
        host_view = await state.get_object(Kind.HOST, victim)
        assert host_view["status"]["state"] == HostState.LOST.value

        # the history: live-key delete (expiry) strictly before any rebind away from victim
        history = await _history(state, 0)
        expired_at = next(
            rev
            for rev, key, typ, _ in history
            if key == keys.host_live_key(victim) and typ == "delete"
        )
        for name in moving:
            seq = [
                (v["host"], v["epoch"], rev)
                for rev, key, typ, v in history
                if key == keys.binding_key(name)
            ]
            assert [(h, e) for h, e, _ in seq] == [(victim, 1), (seq[-1][0], 2)]
            assert seq[-1][2] > expired_at
        statuses = [
            v["state"] for _, key, typ, v in history if key == keys.host_status_key(victim) and v
        ]
        assert statuses == ["ready", "suspect", "lost"]
        rebinds = [
            key
            for _, key, typ, v in history
            if key.startswith(keys.BINDINGS) and v and v["epoch"] == 2
        ]
        assert rebinds[0] == keys.binding_key("db-1")  # priority 9 before priority 1
        await eventually(lambda: _has_events(state, "HostLost", 1))
        await eventually(lambda: _has_events(state, "GuestRebound", len(moving)))

        # the host comes back: ready again, with an event
        await join(state, victim)
        await eventually(lambda: _has_events(state, "HostReady", 1))
        host_view = await state.get_object(Kind.HOST, victim)
        assert host_view["status"]["state"] == HostState.READY.value


async def _history(state: ClusterState, start: int) -> list[tuple[int, str, str, Any]]:
    out = []
    end = await state.store.revision()
    async with asyncio.timeout(2):
        async for ev in state.store.watch(keys.ROOT, start + 1):
            value = loads(ev.kv.value) if ev.type is EventType.PUT else None
            out.append((ev.revision, ev.kv.key, ev.type.value, value))
            if ev.revision >= end:
                break
    return out


async def test_liveness_key_gone_while_lease_lives_moves_nothing(
    state: ClusterState, clock: FakeClock
) -> None:
    await join(state, "h1")
    await join(state, "h2")
    async with running(state, clock):
        await state.apply([app("web", 1)])

        async def bound() -> str | None:
            web1 = (await guests(state)).get("web-1")
            return web1["status"]["host"] if web1 else None

        await eventually(lambda: _truthy(bound()))
        host = await bound()
        await state.store.delete(keys.host_live_key(str(host)))  # an operator's mistake
        await asyncio.sleep(0.3)
        assert await bound() == host
        status = await state.store.get(keys.host_status_key(str(host)))
        assert status is not None and loads(status.value)["state"] == "ready"


async def _truthy(value: Any) -> bool:
    return bool(await value)


async def test_guest_running_reports_make_coalesced_events(
    state: ClusterState, clock: FakeClock
) -> None:
    await join(state, "h1", capacity=Resources(32, 65536, 10000, 10000))
    async with running(state, clock):
        await state.apply([app("web", 12)])

        async def all_bound() -> bool:
            gs = await guests(state)
            return len(gs) == 12 and all(g["status"]["host"] for g in gs.values())

        await eventually(all_bound)
        await state.report_guest_status("h1", "web-1", 1, GuestState.RUNNING)
        await eventually(lambda: _has_events(state, "GuestRunning", 1))
        for i in range(2, 13):
            await state.report_guest_status("h1", f"web-{i}", 1, GuestState.RUNNING)
        await state.report_guest_status("h1", "web-1", 1, GuestState.RUNNING)  # no new event

        async def summarised() -> bool:
            events, _ = await state.list_events()
            return any(e["reason"] == "GuestRunning" and e["name"] == "h1" for e in events)

        await eventually(summarised)
        events, _ = await state.list_events()
        running_events = [e for e in events if e["reason"] == "GuestRunning"]
        assert len(running_events) == 2
        assert running_events[1]["message"].startswith("11 guests: web-2, web-3")


async def test_events_are_pruned_to_the_newest(state: ClusterState, clock: FakeClock) -> None:
    for i in range(30):
        await state.emit("Host", f"h{i}", "Test", "x")
    async with running(state, clock, prune_interval=0.05, keep_events=10):

        async def pruned() -> bool:
            events, _ = await state.list_events()
            return len(events) <= 10

        await eventually(pruned)
    events, _ = await state.list_events()
    assert events[-1]["name"] == "h29"


async def test_thousands_of_guests_place_in_few_passes(
    state: ClusterState, clock: FakeClock
) -> None:
    big = Resources(cpu=64, memory_mib=65536, iops=10000, net_mbps=10000)
    for i in range(50):
        await join(state, f"h{i:02d}", labels={"rack": f"r{i % 5}"}, capacity=big)
    async with running(state, clock) as manager:
        started = time.perf_counter()
        await state.apply(
            [app(f"spread{a}", 50, spread="host") for a in range(10)]
            + [app(f"pack{a}", 150) for a in range(10)]
        )

        async def all_bound() -> bool:
            res = await state.store.range(keys.BINDINGS)
            return len(res.kvs) == 2000

        await eventually(all_bound, timeout=60)
        elapsed = time.perf_counter() - started
        assert manager.stats().get("placement", 0) < 30
        assert elapsed < 20, f"placing 2000 guests took {elapsed:.1f} s"


async def test_late_renewals_make_a_host_suspect_and_the_next_one_recovers_it(
    state: ClusterState, clock: FakeClock
) -> None:
    leases = {h: await join(state, h) for h in ("h1", "h2")}
    async with running(state, clock):
        await state.apply([app("web", 2, spread="host")])

        async def all_bound() -> bool:
            gs = await guests(state)
            return len(gs) == 2 and all(g["status"]["host"] for g in gs.values())

        await eventually(all_bound)
        before = {
            n: (g["status"]["host"], g["status"]["epoch"]) for n, g in (await guests(state)).items()
        }
        clock.advance(4.9)  # not more than TTL/2 = 5 s: on time
        await renew(state, "h2", leases["h2"])
        await asyncio.sleep(0.2)
        assert (await state.get_object(Kind.HOST, "h1"))["status"]["state"] == "ready"
        clock.advance(0.2)
        await renew(state, "h2", leases["h2"])
        await eventually(lambda: _has_events(state, "HostSuspect", 1))
        assert (await state.get_object(Kind.HOST, "h1"))["status"]["state"] == "suspect"
        assert (await state.get_object(Kind.HOST, "h2"))["status"]["state"] == "ready"
        await asyncio.sleep(0.2)  # guests of a suspect host stay put
        after = {
            n: (g["status"]["host"], g["status"]["epoch"]) for n, g in (await guests(state)).items()
        }
        assert after == before
        await renew(state, "h1", leases["h1"])  # the next renewal: ready again at once
        await eventually(lambda: _has_events(state, "HostRecovered", 1))
        assert (await state.get_object(Kind.HOST, "h1"))["status"]["state"] == "ready"
    h1_events = [r for r, n in await event_reasons(state) if n == "h1" and r.startswith("Host")]
    assert h1_events == ["HostSuspect", "HostRecovered"]


async def test_suspect_threshold_is_configurable(state: ClusterState, clock: FakeClock) -> None:
    await join(state, "h1")
    async with running(state, clock, suspect_after=1.0):
        clock.advance(1.5)
        await eventually(lambda: _has_events(state, "HostSuspect", 1))


async def test_a_deposed_leader_creates_deletes_and_notes_nothing(
    state: ClusterState, clock: FakeClock
) -> None:
    await join(state, "h1")
    leadership = await lead_by_fiat(state)
    async with running(state, clock, leadership):
        await state.apply([app("web", 1, request={**REQ, "cpu": 64})])  # too big: noted

        async def noted() -> bool:
            web1 = (await guests(state)).get("web-1")
            return bool(web1 and "hosts fit" in web1["status"]["message"])

        await eventually(noted)
        await state.store.put(keys.LEADER, b'{"identity": "other"}')  # another server leads
        await state.apply([app("web", 3, request={**REQ, "cpu": 64})])
        await state.apply([Manifest(Kind.GUEST, "solo", {"image": "tiny", "request": REQ})])
        await asyncio.sleep(0.5)
        assert sorted(await guests(state)) == ["solo", "web-1"]  # no replica created
        solo = (await guests(state))["solo"]["status"]
        assert solo["host"] is None and solo["message"] == "waiting for placement"  # no write
        await state.apply([app("web", 0, request={**REQ, "cpu": 64})])
        await asyncio.sleep(0.3)
        assert "web-1" in await guests(state)  # and none deleted


async def test_large_apps_are_created_in_bounded_parallel_chunks(
    state: ClusterState, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, int] = {}
    peak: dict[str, int] = {}
    now = {"all": 0}
    create = state.create_owned_guests

    async def counting(app_name: str, specs: Any, **kw: Any) -> int:
        calls[app_name] = calls.get(app_name, 0) + 1
        now[app_name] = now.get(app_name, 0) + 1
        now["all"] += 1
        peak[app_name] = max(peak.get(app_name, 0), now[app_name])
        peak["all"] = max(peak.get("all", 0), now["all"])
        try:
            await asyncio.sleep(0.01)  # hold the slot, so calls overlap
            return await create(app_name, specs, **kw)
        finally:
            now[app_name] -= 1
            now["all"] -= 1

    monkeypatch.setattr(state, "create_owned_guests", counting)
    replicas = 5 * ctl.CREATE_CHUNK + 7
    async with running(state, clock):
        await state.apply([app("big", replicas), app("small", 3)])

        async def created() -> bool:
            res = await state.store.range(keys.object_prefix(Kind.GUEST))
            return len(res.kvs) == replicas + 3

        await eventually(created, timeout=30)
    names = set(await guests(state))
    assert names == {f"big-{i}" for i in range(1, replicas + 1)} | {"small-1", "small-2", "small-3"}
    assert calls == {"big": 6, "small": 1}  # one call per chunk, none repeated
    assert 1 < peak["big"] <= ctl.CREATE_PER_APP  # chunks of one app overlap, within the bound
    assert peak["all"] <= ctl.CREATE_IN_FLIGHT
