"""The qemu driver's measured usage on a real QEMU (TCG): a guest writing its disk shows
CPU, IOPS and its -m; cross-checked against /proc and the observer monitor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from podium.drivers import DriverGuestState, GuestConfig, UsageSource
from podium.drivers.qemu import QemuDriver
from podium.drivers.qemu._qmp import Monitor
from podium.drivers.qemu._usage import block_ops, cpu_seconds

REQUEST = {"cpu": 1, "memory_mib": 128}
WINDOW = 4.0


async def test_a_busy_guest_shows_cpu_iops_and_its_memory(
    make_driver: Callable[..., QemuDriver], capsys: pytest.CaptureFixture[str]
) -> None:
    driver = make_driver(boot_timeout=120.0)
    assert isinstance(driver, UsageSource)
    spec = {"request": REQUEST, "workload": "disk-writer"}
    await driver.create(GuestConfig("busy", "u-busy", 1, spec))
    observer = Monitor(driver.state_dir / "busy" / "observe.sock", name="usage check")
    try:
        info = await driver.start("busy")
        assert info.state is DriverGuestState.RUNNING, info.message
        pid = driver.pid("busy")
        assert pid is not None
        await observer.connect(timeout=5)
        assert await driver.guest_usage() == {}  # the first call only sets the baseline
        loop = asyncio.get_running_loop()
        t0, cpu0 = loop.time(), cpu_seconds(pid)
        ops0 = block_ops(await observer.execute("query-blockstats"))
        await asyncio.sleep(WINDOW)
        usage = await driver.guest_usage()
        t1, cpu1 = loop.time(), cpu_seconds(pid)
        ops1 = block_ops(await observer.execute("query-blockstats"))
    finally:
        await observer.close()
        await driver.stop("busy", timeout=10)
        await driver.destroy("busy", volumes=True)
        driver.kill_all()
        await driver.close()
    with capsys.disabled():
        print(f"\nusage over {WINDOW:g} s: {usage}; /proc: {(cpu1 - cpu0) / (t1 - t0):.3f} cores")
    assert usage is not None and set(usage) == {"busy"}
    busy = usage["busy"]
    assert isinstance(busy, dict)
    assert cpu0 is not None and cpu1 is not None
    # measured by the driver over (almost) the same window as the cross-check
    assert 0 < busy["cpu"] <= 2 * (cpu1 - cpu0) / (t1 - t0) + 0.05
    assert busy["iops"] > 2.0  # ~20 fsync'd writes/s when the host is not overloaded
    assert busy["iops"] <= 2 * (ops1 - ops0) / (t1 - t0) + 1
    assert busy["memory_mib"] == 128  # its -m
    assert busy["net_mbps"] == 0.0  # no network: no NIC
