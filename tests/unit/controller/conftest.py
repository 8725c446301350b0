"""Fixtures for controller tests: a memory store on a fake clock, and a task-leak check."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from podium.state import ClusterState
from podium.store.memory import MemoryStore
from tests.unit.controller.ctrl_support import FakeClock


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    for _ in range(50):
        others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not others:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"leaked tasks: {others}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    s = MemoryStore(clock=clock, sweep_interval=0.01)
    yield s
    await s.close()


@pytest.fixture
def state(store: MemoryStore, clock: FakeClock) -> ClusterState:
    ticks = itertools.count()
    # events are keyed by time: tick a microsecond per reading so their order is the real one
    return ClusterState(store, clock=lambda: clock.now + next(ticks) * 1e-6)
