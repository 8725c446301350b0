"""SimDriver keeps each active guest's QoS (limits and shares) for simulations and tests."""

from __future__ import annotations

import asyncio

from podium.drivers import GuestConfig, GuestQos, SimDriver
from podium.model import DEFAULT_SHARES, Resources

CAPACITY = Resources(cpu=4, memory_mib=4096, iops=1000, net_mbps=1000)


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def test_an_active_guest_reports_the_limits_and_shares_of_its_spec() -> None:
    sim = SimDriver(name="h1", capacity=CAPACITY, sleep=no_wait)
    spec = {
        "request": {"cpu": 1, "memory_mib": 256, "iops": 100},
        "qos": {"iops": {"limit": 500.0, "shares": 200}, "net_mbps": {"limit": 50.0}},
    }
    await sim.create(GuestConfig("db-1", "u-db-1", 1, spec))
    assert sim.qos("db-1") is None  # defined, not running: held to nothing
    await sim.start("db-1")
    assert sim.qos("db-1") == GuestQos(
        limits={"iops": 500.0, "net_mbps": 50.0},
        shares={"cpu": DEFAULT_SHARES, "memory_mib": DEFAULT_SHARES, "iops": 200, "net_mbps": 100},
    )
    await sim.stop("db-1")
    assert sim.qos("db-1") is None
    assert sim.qos("nope") is None
