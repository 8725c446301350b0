"""The Driver contract: one suite of tests that every driver implementation passes.

Not collected by itself: a test module imports these tests and provides a ``driver``
fixture (``tests/unit/drivers/test_driver_contract.py`` for the fast drivers,
``tests/integration/qemu/test_qemu_contract.py`` for QEMU).
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from podium.drivers import (
    Driver,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestKilled,
    GuestNotFound,
)

SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 512, "iops": 0, "net_mbps": 0}}


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
