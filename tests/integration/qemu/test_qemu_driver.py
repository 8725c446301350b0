"""QemuDriver against real QEMU: boot to the ready line, identity on the command line,
pause/resume over QMP, re-adoption by a fresh driver, stop, kill, destroy, failures.

One guest (``vm``) boots once for the module and is reused by the tests in file order
(the module's event loop is shared, so its QMP connection is too); the failure tests at
the end start their own short-lived QEMUs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from podium.drivers import DriverGuestState, GuestConfig, InsufficientResources
from podium.drivers.qemu import (
    Image,
    QemuDriver,
    QemuStartError,
    choose_accel,
    guest_uuid,
)
from tests.integration.qemu.conftest import CAPACITY, keep_qemu, kill_pids, qemu_pids

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

S = DriverGuestState
UID = "7d0c4b1e-5a2f-4c3d-9e8f-0123456789ab"
SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}}


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@dataclass
class Booted:
    """The module's guest and the driver that currently owns it."""

    driver: QemuDriver
    base: Path
    image: Image
    pid: int
    boot_seconds: float

    def fresh_driver(self, **overrides: object) -> QemuDriver:
        options: dict[str, object] = {
            "name": "h1",
            "capacity": CAPACITY,
            "state_dir": self.base / "h1",
            "volumes_dir": self.base / "volumes",
            "image": self.image,
        }
        return QemuDriver(**(options | overrides))  # type: ignore[arg-type]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def booted(
    guest_image: Image, tmp_path_factory: pytest.TempPathFactory, qemu_marker: str
) -> AsyncIterator[Booted]:
    base = tmp_path_factory.mktemp("qemu-driver")
    booted = Booted(QemuDriver.__new__(QemuDriver), base, guest_image, 0, 0.0)
    driver = booted.fresh_driver()  # accel probed, as an agent does
    booted.driver = driver
    await driver.create(GuestConfig("vm", UID, 1, SPEC))
    await asyncio.to_thread(choose_accel)  # the once-per-process probe, not timed as boot
    started = time.monotonic()
    try:
        info = await driver.start("vm")
        booted.boot_seconds = time.monotonic() - started
        assert info.state is S.RUNNING
        pid = driver.pid("vm")
        assert pid is not None
        booted.pid = pid
        yield booted
    finally:
        booted.driver.kill_all()
        await booted.driver.close()
        if booted.pid:
            await until(lambda: not alive(booted.pid))
        leftovers = qemu_pids(str(base))
        kill_pids(leftovers)
        assert not leftovers, f"module guest left running: {leftovers}"


async def test_the_guest_boots_to_its_ready_line_with_its_disk(booted: Booted) -> None:
    line = booted.driver.ready_line("vm")
    assert line == "PODIUM-READY name=vm ip=none disks=vda", line
    assert "PODIUM-READY" in booted.driver.console("vm")
    assert booted.boot_seconds < 30
    print(f"boot to ready line: {booted.boot_seconds:.2f} s")  # shown with -s


async def test_the_process_carries_name_uuid_and_the_probed_accelerator(booted: Booted) -> None:
    args = cmdline(booted.pid)
    pairs = set(itertools.pairwise(args))
    assert ("-name", "vm") in pairs
    assert ("-uuid", guest_uuid(UID)) in pairs and guest_uuid(UID) == UID
    assert ("-accel", choose_accel()) in pairs
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert ("-accel", "tcg") in pairs
    assert ("-nic", "none") in pairs
    assert os.getsid(booted.pid) == booted.pid  # its own session: outlives the agent


async def test_pause_and_resume_through_qmp(booted: Booted) -> None:
    driver = booted.driver
    paused = await driver.pause("vm")
    assert (paused.state, paused.message) == (S.RUNNING, "paused")
    assert await driver.qmp_status("vm") == "paused"
    resumed = await driver.resume("vm")
    assert (resumed.state, resumed.message) == (S.RUNNING, "")
    assert await driver.qmp_status("vm") == "running"


async def test_a_pause_from_outside_shows_up_through_qmp_events(booted: Booted) -> None:
    driver = booted.driver
    monitor = driver._guests["vm"].monitor  # another QMP user pausing the guest
    assert monitor is not None
    await monitor.execute("stop")
    async with asyncio.timeout(5):
        while (await driver.status("vm")).message != "paused":  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
    await monitor.execute("cont")
    async with asyncio.timeout(5):
        while (await driver.status("vm")).message != "":  # type: ignore[union-attr]
            await asyncio.sleep(0.02)


async def test_a_fresh_driver_readopts_the_running_guest_without_restarting_it(
    booted: Booted,
) -> None:
    await booted.driver.close()  # the old agent's QMP connection goes (as when it dies)
    fresh = booted.fresh_driver(accel="tcg")
    booted.driver = fresh
    [info] = await fresh.list()
    assert (info.name, info.uid, info.epoch, info.state) == ("vm", UID, 1, S.RUNNING)
    assert fresh.pid("vm") == booted.pid and alive(booted.pid)
    assert await fresh.qmp_status("vm") == "running"
    assert fresh.ready_line("vm").startswith("PODIUM-READY name=vm")
    assert (await fresh.start("vm")).state is S.RUNNING  # idempotent: no second QEMU
    assert fresh.pid("vm") == booted.pid


async def test_an_adopted_guest_stops_gracefully_right_away(booted: Booted) -> None:
    await booted.driver.close()
    fresh = booted.fresh_driver(accel="tcg")  # no list() first: stop connects QMP itself
    booted.driver = fresh
    started = time.monotonic()
    info = await fresh.stop("vm", timeout=20)
    assert info is not None and (info.state, info.message) == (S.STOPPED, "stopped")
    assert time.monotonic() - started < 10  # ACPI power button -> busybox acpid -> poweroff
    assert not alive(booted.pid)
    assert fresh.pid("vm") is None


async def test_kill_from_another_thread_is_prompt_and_a_restart_waits_for_the_old_qemu(
    booted: Booted,
) -> None:
    driver = booted.driver
    await driver.start("vm")
    pid = driver.pid("vm")
    assert pid is not None and pid != booted.pid
    booted.pid = pid
    took: list[float] = []

    def fence() -> None:
        started = time.monotonic()
        driver.kill("vm")
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=fence)
    thread.start()
    thread.join()
    assert took[0] < 0.1
    info = await driver.status("vm")
    assert info is not None and (info.state, info.message) == (S.STOPPED, "killed")
    await driver.start("vm")  # at once: the killed QEMU may still hold the volume's lock
    assert not alive(pid)
    new_pid = driver.pid("vm")
    assert new_pid is not None and new_pid != pid
    booted.pid = new_pid
    keep_qemu(new_pid)  # the module's guest now; the next test ends it


async def test_a_qemu_killed_behind_the_drivers_back_shows_as_failed(booted: Booted) -> None:
    os.kill(booted.pid, signal.SIGKILL)
    await until(lambda: not alive(booted.pid))
    info = await booted.driver.status("vm")
    assert info is not None and info.state is S.FAILED
    assert info.message.startswith("QEMU exited unexpectedly"), info.message


async def test_destroy_forgets_the_guest_and_keeps_its_volume_unless_asked(
    booted: Booted,
) -> None:
    driver = booted.driver
    volume = booted.base / "volumes" / f"vm-{UID}.qcow2"
    assert volume.is_file()
    await driver.destroy("vm")
    assert await driver.status("vm") is None
    assert not (booted.base / "h1" / "vm").exists()
    assert volume.is_file()  # the SAN keeps it
    await driver.create(GuestConfig("vm", UID, 2, SPEC))
    await driver.destroy("vm", volumes=True)
    assert not volume.exists()


async def test_a_guest_that_does_not_fit_is_refused_without_a_process(
    make_driver: Callable[..., QemuDriver],
) -> None:
    driver = make_driver()
    await driver.create(GuestConfig("big", "u-big", 1, {"request": {"memory_mib": 9000}}))
    with pytest.raises(InsufficientResources, match="needs memory_mib 9000"):
        await driver.start("big")
    info = await driver.status("big")
    assert info is not None and info.state is S.FAILED and driver.pid("big") is None


async def test_a_qemu_that_exits_at_once_fails_the_start_with_its_output(
    make_driver: Callable[..., QemuDriver], tmp_path: Path
) -> None:
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\necho 'qemu: could not open disk image: locked' >&2\nexit 1\n")
    fake.chmod(0o755)
    driver = make_driver(qemu=str(fake))
    await driver.create(GuestConfig("bad", "u-bad", 1, SPEC))
    with pytest.raises(QemuStartError, match="could not open disk image: locked"):
        await driver.start("bad")
    info = await driver.status("bad")
    assert info is not None and info.state is S.FAILED and "locked" in info.message


async def test_no_ready_line_in_time_fails_the_start_and_kills_qemu(
    make_driver: Callable[..., QemuDriver], qemu_marker: str
) -> None:
    driver = make_driver(boot_timeout=0.5)
    await driver.create(GuestConfig("slow", "u-slow", 1, SPEC))
    with pytest.raises(QemuStartError, match=r"no PODIUM-READY line in 0\.5 s"):
        await driver.start("slow")
    info = await driver.status("slow")
    assert info is not None and info.state is S.FAILED
    await driver.close()
