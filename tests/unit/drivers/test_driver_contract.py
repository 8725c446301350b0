"""The Driver contract, run against every driver in the registry.

The suite lives in ``tests/support/driver_contract.py``. Fast drivers run it here; a
driver that needs real components runs it in an integration twin named in ``TWINS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from podium.drivers import DRIVERS, Driver, SimDriver
from podium.model import Resources
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

CAPACITY = Resources(cpu=4, memory_mib=4096, iops=1000, net_mbps=1000)
ROOT = Path(__file__).resolve().parents[3]

# A fast instance of each registered driver, by host name (real delays make the suite slow).
FAST: dict[str, Callable[[str], Driver]] = {
    "sim": lambda host: SimDriver(
        name=host,
        capacity=CAPACITY,
        start_delay=(0.01, 0.02),
        stop_delay=(0.0, 0.01),
        migration_mib_s=64 * 1024,
    ),
}
# Drivers that run the same suite against real components, and where.
TWINS: dict[str, str] = {"qemu": "tests/integration/qemu/test_qemu_contract.py"}

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


def test_every_registered_driver_has_a_contract_fixture() -> None:
    assert set(FAST) | set(TWINS) == set(DRIVERS)
    assert not set(FAST) & set(TWINS)
    for path in TWINS.values():
        assert (ROOT / path).is_file(), path


@pytest.fixture(params=sorted(FAST))
def driver(request: pytest.FixtureRequest) -> Driver:
    drv = FAST[request.param]("h1")
    assert isinstance(drv, Driver)
    assert drv.kind == request.param
    return drv


@pytest.fixture
def peer(driver: Driver) -> Driver:
    """A second host of the driver's kind (a migration's other end)."""
    return FAST[driver.kind]("h2")
