"""Guest NICs on a host switch: taps on a Linux bridge in a private network namespace.

QEMU runs inside the namespace (as under ``podium lab``, where the agent does), through
a wrapper that ``exec``s ``ip netns exec NS qemu-system-x86_64`` (same PID). The guest
configures the address of each NIC from the kernel command line, in MAC order, and
answers ping on both.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podium.drivers import DriverGuestState, GuestConfig
from podium.drivers.net import LinuxBridgeNetwork
from podium.drivers.qemu import QemuDriver
from tests.support.components import missing_component

pytestmark = pytest.mark.slow


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    if shutil.which("ip") is None or shutil.which("ping") is None:
        missing_component("needs iproute2 and iputils-ping (scripts/setup installs them)")
    name = f"pdq-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "br0", "type", "bridge")
        ip("-n", name, "addr", "add", "10.77.0.1/24", "dev", "br0")
        ip("-n", name, "addr", "add", "10.77.1.1/24", "dev", "br0")
        ip("-n", name, "link", "set", "br0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name)


async def test_nics_get_their_addresses_in_mac_order_and_answer_ping(
    make_driver: Callable[..., QemuDriver], netns: str, tmp_path: Path
) -> None:
    wrapper = tmp_path / "qemu-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    network = LinuxBridgeNetwork("br0", netns=netns)
    driver = make_driver(network=network, qemu=str(wrapper))
    spec = {
        "request": {"cpu": 1, "memory_mib": 128},
        "nics": [
            {"mac": "52:54:00:00:00:20", "ip": "10.77.0.2/24", "gw": "10.77.0.1"},
            {"mac": "52:54:00:00:00:10", "ip": "10.77.1.2/24"},
        ],
    }
    await driver.create(GuestConfig("net-1", "u-net-1", 1, spec))
    try:
        info = await driver.start("net-1")
        assert info.state is DriverGuestState.RUNNING
        # the NIC with the smaller MAC is the guest's first: its address is the one shown
        assert driver.ready_line("net-1") == "PODIUM-READY name=net-1 ip=10.77.1.2 disks=vda"
        taps = sorted(network.taps())
        assert len(taps) == 2
        for addr, mac in (("10.77.0.2", "52:54:00:00:00:20"), ("10.77.1.2", "52:54:00:00:00:10")):
            ping = subprocess.run(
                ["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "5", addr],
                capture_output=True,
                text=True,
                check=False,
            )
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert mac in ip("-n", netns, "neigh", "show", addr)
        await driver.stop("net-1", timeout=10)
        await driver.destroy("net-1")
        assert network.taps() == []
    finally:
        driver.kill_all()
        await driver.close()
