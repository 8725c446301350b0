"""Backends under test and helpers shared by the store contract tests.

Every test gets a ``store`` from a :class:`Backend`. Memory and SQLite run on a fake
monotonic clock (``elapse`` moves it); etcd runs on real time against one shared
member, wiped after each test, so tests compare revisions to a base they read first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from podium.store import Event, Store
from podium.store.etcd import EtcdStore
from podium.store.memory import MemoryStore
from podium.store.sqlite import SQLiteStore, WorkerKind
from tests.support.etcd import EtcdCluster, wipe


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """How to open one backend for a test, and how time passes for it."""

    name: str

    async def open(self) -> Store:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Undo what a test left behind (after the store was closed)."""

    async def elapse(self, seconds: float) -> None:
        """Let ``seconds`` of lease time pass."""
        raise NotImplementedError


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()

    async def open(self) -> Store:
        return MemoryStore(clock=self.clock, sweep_interval=0.01)

    async def elapse(self, seconds: float) -> None:
        self.clock.now += seconds
        await asyncio.sleep(0.02)  # one sweep


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, folder: Path, worker: WorkerKind = "thread") -> None:
        self.folder = folder
        self.clock = FakeClock()
        self.worker: WorkerKind = worker
        self._n = itertools.count()

    async def open(self) -> Store:
        path = self.folder / f"store{next(self._n)}" / "podium.db"
        return SQLiteStore(
            path, clock=self.clock, sweep_interval=0.02, poll_interval=0.1, worker=self.worker
        )

    async def elapse(self, seconds: float) -> None:
        self.clock.now += seconds
        await asyncio.sleep(0.05)  # a sweep or two


class EtcdBackend(Backend):
    name = "etcd"

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster

    async def open(self) -> Store:
        return EtcdStore(self.cluster.endpoints)

    async def cleanup(self) -> None:
        await wipe(self.cluster.endpoints[0])

    async def elapse(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def watching(
    store: Store, prefix: str, start_revision: int = 0
) -> AsyncIterator[AsyncIterator[Event]]:
    """A watch that is closed (its stream released) when the block ends."""
    stream = cast(AsyncGenerator[Event, None], store.watch(prefix, start_revision))
    try:
        yield stream
    finally:
        await stream.aclose()


async def take(stream: AsyncIterator[Event], count: int, timeout: float = 10) -> list[Event]:
    """The next ``count`` events, failing the test if they do not come in time."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            events.append(await anext(stream))
    return events


async def wait_until(
    check: Callable[[], Awaitable[Any]], timeout: float = 10, what: str = "condition"
) -> None:
    """Poll ``check`` until it returns something true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
