"""The Driver contract: one suite of tests that every driver implementation passes.

Not collected by itself: a test module imports these tests and provides a ``driver``
fixture, and a ``peer`` fixture (a second host of the same kind, sharing its volumes) for
the migration tests (``tests/unit/drivers/test_driver_contract.py`` for the fast drivers,
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
    LiveMigration,
    MigrationError,
    MigrationProgress,
)

SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 512, "iops": 0, "net_mbps": 0}}
LISTEN = "127.0.0.1"  # where a migration destination listens (both hosts share loopback)
NOWHERE = "tcp:127.0.0.1:1"  # nothing listens there: a migration to it fails at once
INCOMING = DriverGuestState.INCOMING


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


def migrating(driver: Driver) -> LiveMigration:
    assert isinstance(driver, LiveMigration), f"{driver.kind} does not migrate"
    return driver


async def test_live_migration_hands_the_guest_over(driver: Driver, peer: Driver) -> None:
    await driver.create(cfg(epoch=1))
    await driver.start("g")
    uri = await migrating(peer).prepare_incoming(cfg(epoch=2), listen=LISTEN)
    assert await migrating(peer).prepare_incoming(cfg(epoch=2), listen=LISTEN) == uri
    incoming = await peer.status("g")
    assert incoming is not None and (incoming.state, incoming.epoch) == (INCOMING, 2)
    assert incoming.state.active  # it holds its capacity
    with pytest.raises(GuestBusy):
        await peer.start("g")
    with pytest.raises(GuestBusy):
        await peer.destroy("g")
    seen: list[MigrationProgress] = []
    done = await migrating(driver).migrate_out("g", uri, on_progress=seen.append)
    assert done.uri == uri and done.transferred > 0 and done.total_ms > 0
    assert seen and seen[-1].status == "completed"
    source = await driver.status("g")
    assert source is not None and source.state is DriverGuestState.STOPPED
    assert source.message == f"migrated to {uri}"
    assert await migrating(driver).migrate_out("g", uri) == done  # asked again after a restart
    target = await migrating(peer).activate("g")
    assert (target.state, target.epoch) == (DriverGuestState.RUNNING, 2)
    assert (await migrating(peer).activate("g")).state is DriverGuestState.RUNNING
    stopped = await peer.stop("g")
    assert stopped is not None and stopped.state is DriverGuestState.STOPPED


async def test_a_failed_migration_leaves_the_source_running_and_the_target_waiting(
    driver: Driver, peer: Driver
) -> None:
    await driver.create(cfg())
    await driver.start("g")
    await migrating(peer).prepare_incoming(cfg(epoch=2), listen=LISTEN)
    with pytest.raises(MigrationError):
        await migrating(driver).migrate_out("g", NOWHERE, stall_timeout=10)
    status = await driver.status("g")
    assert status is not None and status.state is DriverGuestState.RUNNING
    waiting = await peer.status("g")
    assert waiting is not None and waiting.state is INCOMING
    stopped = await peer.stop("g")  # an incoming guest stops like any other
    assert stopped is not None and stopped.state is DriverGuestState.STOPPED
    await peer.destroy("g")
    await driver.stop("g")
