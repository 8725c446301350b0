"""The Driver contract, run against every driver in the registry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from podium.drivers import (
    DRIVERS,
    Driver,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestKilled,
    GuestNotFound,
    SimDriver,
)
from podium.model import Resources

CAPACITY = Resources(cpu=4, memory_mib=4096, iops=1000, net_mbps=1000)
SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 512, "iops": 0, "net_mbps": 0}}

# A fast instance of each registered driver (real delays make the suite slow).
FAST: dict[str, Callable[[], Driver]] = {
    "sim": lambda: SimDriver(
        name="h1", capacity=CAPACITY, start_delay=(0.01, 0.02), stop_delay=(0.0, 0.01)
    ),
}


def test_every_registered_driver_has_a_contract_fixture() -> None:
    assert set(FAST) == set(DRIVERS)


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Driver:
    drv = FAST[request.param]()
    assert isinstance(drv, Driver)
    assert drv.kind == request.param
    return drv


def cfg(name: str = "g", epoch: int = 1, uid: str = "u1") -> GuestConfig:
    return GuestConfig(name, uid, epoch, SPEC)


async def test_lifecycle_create_start_stop_destroy(driver: Driver) -> None:
    info = await driver.create(cfg())
    assert info.state is DriverGuestState.DEFINED
    assert (await driver.start("g")).state is DriverGuestState.RUNNING
    assert [g.name for g in await driver.list()] == ["g"]
    stopped = await driver.stop("g")
    assert stopped is not None and stopped.state is DriverGuestState.STOPPED
    await driver.destroy("g")
    assert await driver.status("g") is None
    assert await driver.list() == []


async def test_operations_are_idempotent(driver: Driver) -> None:
    await driver.create(cfg())
    await driver.create(cfg())
    await driver.start("g")
    assert (await driver.start("g")).state is DriverGuestState.RUNNING
    await driver.stop("g")
    await driver.stop("g")
    assert await driver.stop("unknown") is None
    driver.kill("unknown")
    await driver.destroy("g")
    await driver.destroy("g")


async def test_start_unknown_guest_raises(driver: Driver) -> None:
    with pytest.raises(GuestNotFound):
        await driver.start("nope")


async def test_an_active_guest_cannot_be_redefined_or_destroyed(driver: Driver) -> None:
    await driver.create(cfg(epoch=1))
    await driver.start("g")
    with pytest.raises(GuestBusy):
        await driver.create(cfg(epoch=2))
    with pytest.raises(GuestBusy):
        await driver.destroy("g")
    await driver.stop("g")
    assert (await driver.create(cfg(epoch=2))).epoch == 2


async def test_kill_during_start_wins(driver: Driver) -> None:
    await driver.create(cfg())
    start = asyncio.create_task(driver.start("g"))
    await asyncio.sleep(0)
    driver.kill("g")
    with pytest.raises(GuestKilled):
        await start
    status = await driver.status("g")
    assert status is not None and status.state is DriverGuestState.STOPPED


async def test_kill_all_works_from_another_thread(driver: Driver) -> None:
    for name in ("a", "b"):
        await driver.create(cfg(name))
        await driver.start(name)
    killed: list[str] = []
    thread = threading.Thread(target=lambda: killed.extend(driver.kill_all()))
    thread.start()
    thread.join()
    assert sorted(killed) == ["a", "b"]
    assert {g.state for g in await driver.list()} == {DriverGuestState.STOPPED}


async def test_cancelled_start_leaves_the_guest_stopped(driver: Driver) -> None:
    await driver.create(cfg())
    start = asyncio.create_task(driver.start("g"))
    await asyncio.sleep(0)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    status = await driver.status("g")
    assert status is not None and status.state is DriverGuestState.STOPPED
