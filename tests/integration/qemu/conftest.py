"""Fixtures for real-QEMU tests: one image per session, drivers in temp dirs, a leak guard.

- ``guest_image``: built once and cached across sessions in ``$PODIUM_TEST_IMAGE_CACHE``
  (default ``/var/tmp/podium-test-images``). Without QEMU, busybox-static or apt the
  tests skip, except in CI (``CI=true``), where that is a failure.
- ``no_leaked_qemu`` (autouse): a test that leaves a QEMU of this session running fails,
  after the QEMU is killed by PID. Every QEMU the tests start has the session's temp
  dir on its command line (its volume path), which is how they are told apart. A QEMU
  that a test hands over to a module fixture is declared with :func:`keep_qemu` (the
  fixture then answers for it); the session fails if any QEMU outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podium.drivers.qemu import Image, ImageError, QemuDriver, build_image
from podium.model import Resources
from tests.support.components import missing_component

CAPACITY = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)
DEFAULT_TEST_CACHE = Path("/var/tmp/podium-test-images")


@pytest.fixture(scope="session")
def guest_image() -> Image:
    """The tiny guest image (built at most once per machine while its inputs hold)."""
    missing = [
        tool
        for tool in ("qemu-system-x86_64", "qemu-img", "apt-cache", "apt-get", "dpkg")
        if shutil.which(tool) is None
    ]
    if not Path("/bin/busybox").exists():
        missing.append("busybox-static")
    if missing:
        missing_component(f"QEMU tests need {', '.join(missing)} (scripts/setup installs them)")
    cache = Path(os.environ.get("PODIUM_TEST_IMAGE_CACHE") or DEFAULT_TEST_CACHE)
    try:
        return build_image(cache)
    except ImageError as err:
        missing_component(f"cannot build the guest image: {err}")


def qemu_pids(marker: str) -> dict[int, str]:
    """PID -> command line of every live QEMU whose command line mentions ``marker``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[:1] == ["Z"]:
            continue
        line = b" ".join(args).decode(errors="replace")
        if Path(args[0].decode(errors="replace")).name.startswith("qemu-system") and marker in line:
            found[int(entry.name)] = line
    return found


_KEPT: set[int] = set()


def keep_qemu(pid: int) -> None:
    """Declare a QEMU started by a test as owned by a module fixture (not a leak)."""
    _KEPT.add(pid)


def kill_pids(pids: dict[int, str], timeout: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while set(pids) & set(qemu_pids("")) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture(scope="session")
def qemu_marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's temp dir: on the command line of every QEMU these tests start."""
    marker = str(tmp_path_factory.getbasetemp())
    yield marker
    leftovers = qemu_pids(marker)
    kill_pids(leftovers)
    assert not leftovers, f"QEMU processes outlived the test session: {leftovers}"


@pytest.fixture(autouse=True)
def no_leaked_qemu(qemu_marker: str) -> Iterator[None]:
    before = set(qemu_pids(qemu_marker)) | _KEPT
    yield
    before |= _KEPT
    deadline = time.monotonic() + 3  # a QEMU killed just now takes a moment to go
    leaked = {p: c for p, c in qemu_pids(qemu_marker).items() if p not in before}
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = {p: c for p, c in qemu_pids(qemu_marker).items() if p not in before}
    if leaked:
        kill_pids(leaked)
        pytest.fail(f"the test left QEMU running (killed now): {sorted(leaked)}", pytrace=False)


@pytest.fixture
def make_driver(guest_image: Image, tmp_path: Path) -> Callable[..., QemuDriver]:
    """``make_driver(**overrides)``: a QemuDriver on ``tmp_path`` (same dirs every call)."""

    def make(**overrides: Any) -> QemuDriver:
        options: dict[str, Any] = {
            "name": "h1",
            "capacity": CAPACITY,
            "state_dir": tmp_path / "h1",
            "volumes_dir": tmp_path / "volumes",
            "image": guest_image,
            "accel": "tcg",
            "boot_timeout": 60.0,
        }
        return QemuDriver(**(options | overrides))

    return make
