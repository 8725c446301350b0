"""SimDriver specifics: capacity accounting, deterministic timing, crashes, cheapness."""

from __future__ import annotations

import asyncio
import sys

import pytest

from podium.drivers import DriverGuestState, GuestConfig, InsufficientResources, SimDriver
from podium.model import Resources

CAPACITY = Resources(cpu=2, memory_mib=1024, iops=100, net_mbps=100)


def cfg(name: str, cpu: float = 1, memory_mib: int = 512) -> GuestConfig:
    return GuestConfig(name, f"uid-{name}", 1, {"request": {"cpu": cpu, "memory_mib": memory_mib}})


class Recorder:
    """An injected sleep that records delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


async def test_refuses_a_guest_that_does_not_fit() -> None:
    sim = SimDriver(name="h1", capacity=CAPACITY, sleep=Recorder())
    for name in ("a", "b", "c"):
        await sim.create(cfg(name))
    await sim.start("a")
    await sim.start("b")
    with pytest.raises(InsufficientResources, match="needs cpu 1, 0 free"):
        await sim.start("c")
    status = await sim.status("c")
    assert status is not None and status.state is DriverGuestState.FAILED
    assert "does not fit on h1" in status.message
    assert sim.allocated() == Resources(2, 1024)
    await sim.stop("a")
    assert (await sim.start("c")).state is DriverGuestState.RUNNING


async def test_delays_replay_from_the_seed_whatever_the_order() -> None:
    first, second = Recorder(), Recorder()
    one = SimDriver(name="h", capacity=CAPACITY, seed=7, sleep=first)
    two = SimDriver(name="h", capacity=CAPACITY, seed=7, sleep=second)
    for name in ("a", "b"):
        await one.create(cfg(name, memory_mib=16))
        await two.create(cfg(name, memory_mib=16))
    await one.start("a")
    await one.start("b")
    await two.start("b")
    await two.start("a")
    assert first.delays == list(reversed(second.delays))
    assert all(0.2 <= d <= 0.5 for d in first.delays)
    other = Recorder()
    three = SimDriver(name="h", capacity=CAPACITY, seed=8, sleep=other)
    await three.create(cfg("a", memory_mib=16))
    await three.start("a")
    assert other.delays[0] != first.delays[0]


async def test_state_sequence_of_a_start_and_a_crash() -> None:
    sim = SimDriver(name="h1", capacity=CAPACITY, start_delay=(0.01, 0.01))
    await sim.create(cfg("a"))
    seen = [sim.snapshot()["a"].state]
    start = asyncio.create_task(sim.start("a"))
    await asyncio.sleep(0)
    seen.append(sim.snapshot()["a"].state)
    await start
    seen.append(sim.snapshot()["a"].state)
    assert sim.running_uids() == ["uid-a"]
    sim.crash("a")
    seen.append(sim.snapshot()["a"].state)
    assert seen == [
        DriverGuestState.DEFINED,
        DriverGuestState.STARTING,
        DriverGuestState.RUNNING,
        DriverGuestState.FAILED,
    ]
    assert sim.running_uids() == []


async def test_host_crash_kills_every_guest() -> None:
    sim = SimDriver(name="h1", capacity=CAPACITY, sleep=Recorder())
    for name in ("a", "b"):
        await sim.create(cfg(name))
        await sim.start(name)
    sim.crash()
    assert {g.state for g in await sim.list()} == {DriverGuestState.FAILED}
    assert sim.allocated() == Resources()


def test_hundreds_of_sim_hosts_are_cheap() -> None:
    hosts = [SimDriver(name=f"h{i}", capacity=CAPACITY) for i in range(500)]
    size = sum(sys.getsizeof(h.__dict__) for h in hosts)
    assert size < 500 * 2048
