"""Fixtures for agent tests: a private watchdog, and checks that nothing leaks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from podium.agent import Watchdog


@pytest.fixture(autouse=True)
async def no_leaked_tasks_or_threads() -> AsyncIterator[None]:
    before = {t for t in threading.enumerate() if t.name == "podium-watchdog"}
    yield
    current = asyncio.current_task()
    for _ in range(50):
        others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not others:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail(f"leaked tasks: {others}")
    after = {t for t in threading.enumerate() if t.name == "podium-watchdog"}
    assert after <= before, "a watchdog thread outlived its agents"


@pytest.fixture
def watchdog() -> Watchdog:
    return Watchdog(tick=0.01)
