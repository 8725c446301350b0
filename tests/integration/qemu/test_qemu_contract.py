"""The Driver contract (tests/support/driver_contract.py), run against real QEMU guests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from podium.drivers import Driver
from podium.drivers.qemu import QemuDriver
from tests.support.driver_contract import (
    test_a_failed_migration_leaves_the_source_running_and_the_target_waiting,
    test_an_active_guest_cannot_be_redefined_or_destroyed,
    test_cancelled_start_leaves_the_guest_stopped,
    test_kill_all_works_from_another_thread,
    test_kill_during_start_wins,
    test_lifecycle_create_start_stop_destroy,
    test_live_migration_hands_the_guest_over,
    test_operations_are_idempotent,
    test_start_unknown_guest_raises,
)

pytestmark = pytest.mark.slow

__all__ = [  # the imported contract tests run here
    "test_a_failed_migration_leaves_the_source_running_and_the_target_waiting",
    "test_an_active_guest_cannot_be_redefined_or_destroyed",
    "test_cancelled_start_leaves_the_guest_stopped",
    "test_kill_all_works_from_another_thread",
    "test_kill_during_start_wins",
    "test_lifecycle_create_start_stop_destroy",
    "test_live_migration_hands_the_guest_over",
    "test_operations_are_idempotent",
    "test_start_unknown_guest_raises",
]


@pytest.fixture
async def driver(make_driver: Callable[..., QemuDriver]) -> AsyncIterator[Driver]:
    drv = make_driver()
    assert isinstance(drv, Driver)
    assert drv.kind == "qemu"
    try:
        yield drv
    finally:
        drv.kill_all()
        await drv.close()
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not others, f"leaked tasks (QMP connections left open?): {others}"


@pytest.fixture
async def peer(make_driver: Callable[..., QemuDriver], tmp_path: Path) -> AsyncIterator[Driver]:
    """Host h2: its own state folders, the same volumes (the SAN), QEMU on loopback."""
    drv = make_driver(name="h2", state_dir=tmp_path / "h2")
    try:
        yield drv
    finally:
        drv.kill_all()
        await drv.close()
