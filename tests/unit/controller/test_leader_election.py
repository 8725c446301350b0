"""Leader election on one store: handover, expiry, and writes guarded by leadership."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from podium.controller import ControllerManager, LeaderElection, Leadership
from podium.model import Kind, Manifest
from podium.scheduler import default_scheduler
from podium.state import ClusterState, keys
from podium.store import Put
from podium.store.memory import MemoryStore
from tests.unit.controller.ctrl_support import FakeClock, eventually, join

GUEST = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}}


async def guarded_put(store: MemoryStore, leadership: Leadership, value: bytes) -> bool:
    result = await store.txn([leadership.compare], [Put("/podium/test", value)])
    return result.succeeded


async def test_handover_between_two_electors(store: MemoryStore) -> None:
    a = LeaderElection(store, ttl=2, identity="a")
    b = LeaderElection(store, ttl=2, identity="b")
    b_led = asyncio.Event()
    b_leadership: list[Leadership] = []

    async def run_b() -> None:
        async with b.lead() as leadership:
            b_leadership.append(leadership)
            b_led.set()
            await asyncio.Event().wait()

    async with a.lead() as first:
        assert await a.leader() == "a"
        task = asyncio.create_task(run_b())
        await asyncio.sleep(0.2)
        assert not b_led.is_set()  # b waits while a leads
        assert await guarded_put(store, first, b"a")
    async with asyncio.timeout(2):
        await b_led.wait()  # a resigned: b takes over at once
    second = b_leadership[0]
    assert await b.leader() == "b"
    assert first.lost.is_set() and not second.lost.is_set()
    assert second.revision > first.revision
    assert not await guarded_put(store, first, b"late a")
    assert await guarded_put(store, second, b"b")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await store.get(keys.LEADER) is None  # b resigned when cancelled


async def test_expired_leader_is_deposed_and_its_writes_fail(
    store: MemoryStore, clock: FakeClock
) -> None:
    state = ClusterState(store)
    await state.apply([Manifest(Kind.GUEST, "g", GUEST)])
    await join(state, "h1", ttl=100)
    a = LeaderElection(store, ttl=3, identity="a", clock=clock)
    b = LeaderElection(store, ttl=3, identity="b", clock=clock)
    async with a.lead() as first:
        manager = ControllerManager(state, default_scheduler(), host_ttl=100, clock=clock)
        managed = asyncio.create_task(manager.run(first))
        b_task = asyncio.create_task(_hold(b))
        clock.advance(4)  # a's lease expires (as if a froze): the store deletes the leader key
        async with asyncio.timeout(3):
            await first.lost.wait()
        async with asyncio.timeout(2):
            await managed  # the controllers stop by themselves
        await eventually(lambda: _leader_is(b, "b"))
        _, revision = await state.get_binding("g")
        assert (
            await state.bind("g", "h1", expected_revision=revision, extra=[first.compare]) is None
        )
        assert not await guarded_put(store, first, b"late")
    b_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await b_task


async def _hold(election: LeaderElection) -> None:
    async with election.lead():
        await asyncio.Event().wait()


async def _leader_is(election: LeaderElection, identity: str) -> bool:
    return await election.leader() == identity


async def test_lead_rejects_a_tiny_ttl(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="at least 2 seconds"):
        LeaderElection(store, ttl=1, identity="x")
