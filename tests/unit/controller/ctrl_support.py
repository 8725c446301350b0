"""Helpers for controller tests: a fake clock, host registration, a running manager."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from podium.controller import ControllerManager, Leadership
from podium.model import HostName, HostSpec, Resources
from podium.scheduler import default_scheduler
from podium.state import ClusterState, dumps, keys

CAPACITY = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def lead_by_fiat(state: ClusterState) -> Leadership:
    """Leadership without an election (the leader key on no lease)."""
    revision = await state.store.put(keys.LEADER, dumps({"identity": "test"}))
    return Leadership("test", 0, revision)


async def join(
    state: ClusterState,
    name: str,
    *,
    ttl: int = 10,
    labels: dict[str, str] | None = None,
    capacity: Resources = CAPACITY,
) -> int:
    """Register a host the way the API does; return its lease."""
    lease = await state.store.grant(ttl)
    spec = HostSpec(capacity=capacity, labels=labels or {})
    await state.register_host(HostName(name), spec, lease=lease.id, driver="sim", agent_version="t")
    return lease.id


async def renew(state: ClusterState, name: str, lease: int) -> None:
    """Renew a host's lease the way the keepalive endpoint does (and record the renewal)."""
    await state.store.keepalive(lease)
    await state.record_keepalive(name, lease)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(
    state: ClusterState, clock: FakeClock, leadership: Leadership | None = None, **options: float
) -> AsyncIterator[ControllerManager]:
    """A ControllerManager running in the background for the body."""
    options = {"liveness_interval": 0.05, **options}
    manager = ControllerManager(
        state, default_scheduler(), host_ttl=10, clock=clock, event_interval=0.02, **options
    )
    task = asyncio.create_task(manager.run(leadership or await lead_by_fiat(state)))
    try:
        yield manager
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
