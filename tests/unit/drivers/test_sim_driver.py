"""SimDriver specifics: capacity accounting, deterministic timing, crashes, cheapness."""

from __future__ import annotations

import asyncio
import sys

import pytest

from podium.drivers import (
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    InsufficientResources,
    MigrationError,
    MigrationProgress,
    SimDriver,
)
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


async def test_a_migration_destination_holds_capacity_until_it_runs() -> None:
    target = SimDriver(name="h2", capacity=CAPACITY, sleep=Recorder())
    await target.create(cfg("a"))
    await target.start("a")
    uri = await target.prepare_incoming(cfg("b"), listen="10.0.0.2")
    assert uri == "sim://h2/b"
    assert await target.prepare_incoming(cfg("b"), listen="10.0.0.2") == uri  # idempotent
    assert target.allocated() == Resources(2, 1024)
    with pytest.raises(InsufficientResources):
        await target.prepare_incoming(cfg("c"), listen="10.0.0.2")
    with pytest.raises(GuestBusy):
        await target.start("b")
    assert target.running_uids() == ["uid-a"]  # incoming is not running
    assert (await target.activate("b")).state is DriverGuestState.RUNNING
    assert sorted(target.running_uids()) == ["uid-a", "uid-b"]


async def test_a_migration_takes_memory_over_bandwidth_and_stops_the_source() -> None:
    sleeps = Recorder()
    source = SimDriver(name="h1", capacity=CAPACITY, sleep=sleeps, migration_mib_s=256)
    await source.create(cfg("a", memory_mib=512))
    await source.start("a")
    sleeps.delays.clear()
    seen: list[MigrationProgress] = []
    done = await source.migrate_out("a", "sim://h2/a", on_progress=seen.append)
    assert sum(sleeps.delays) == pytest.approx(2.0)  # 512 MiB at 256 MiB/s
    assert [p.transferred for p in seen] == [i * 128 << 20 for i in range(1, 5)]
    assert seen[-1].status == "completed" and seen[-1].remaining == 0
    assert (done.uri, done.total_ms, done.transferred) == ("sim://h2/a", 2000.0, 512 << 20)
    status = await source.status("a")
    assert status is not None and status.state is DriverGuestState.STOPPED
    assert status.message == "migrated to sim://h2/a"
    assert source.allocated() == Resources()
    assert await source.migrate_out("a", "sim://h2/a") == done  # asked again: the same answer


async def test_a_migration_that_cannot_happen_leaves_the_source_running() -> None:
    source = SimDriver(name="h1", capacity=CAPACITY, sleep=Recorder())
    await source.create(cfg("a"))
    with pytest.raises(MigrationError, match="not running"):
        await source.migrate_out("a", "sim://h2/a")
    await source.start("a")
    with pytest.raises(MigrationError, match=r"cannot reach 'tcp:10\.0\.0\.2:1'"):
        await source.migrate_out("a", "tcp:10.0.0.2:1")
    assert source.running_uids() == ["uid-a"]


async def test_a_kill_during_a_migration_fails_it() -> None:
    gate = asyncio.Event()

    async def held(seconds: float) -> None:
        await gate.wait()

    source = SimDriver(name="h1", capacity=CAPACITY, sleep=held)
    await source.create(cfg("a"))
    gate.set()
    await source.start("a")
    gate.clear()
    migration = asyncio.create_task(source.migrate_out("a", "sim://h2/a"))
    await asyncio.sleep(0)
    source.kill("a")  # while the first chunk of memory is on its way
    gate.set()
    with pytest.raises(MigrationError, match="killed while migrating"):
        await migration
    with pytest.raises(MigrationError, match="stopped, not incoming"):
        await source.activate("a")
