"""Live migration between two hosts, each a network namespace with its own switch (br0),
joined by a veth pair; QEMU runs inside its host's namespace (a wrapper ``exec``s
``ip netns exec NS qemu-system-x86_64``, same PID), volumes on one shared folder.

::

    ns A: br0 10.78.0.1 ── tap ── guest 10.78.0.10 (before)      source QEMU
     │ veth
    ns B: br0 10.78.0.2 ── tap ── guest 10.78.0.10 (after)       destination QEMU

Both QEMUs' observer monitors are sampled all along: never do the two run at once.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from podium.drivers import DriverGuestState, GuestConfig, MigrationError, MigrationProgress
from podium.drivers.net import LinuxBridgeNetwork
from podium.drivers.qemu import QemuDriver, QmpError, observe_status
from tests.support.components import missing_component

pytestmark = pytest.mark.slow

S = DriverGuestState
MAC = "52:54:00:78:00:10"
GUEST_IP = "10.78.0.10"
SPEC = {
    "request": {"cpu": 1, "memory_mib": 128},
    "nics": [{"mac": MAC, "ip": f"{GUEST_IP}/24"}],
    "workload": "disk-writer",  # the guest writes its disk all through the migration
}


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Fabric:
    """Two hosts' namespaces and the veth between them."""

    a: str
    b: str
    veth_a: str

    def ping(self, ns: str, addr: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "3", addr],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    if not all(shutil.which(t) for t in ("ip", "ping", "bridge")):
        missing_component("needs iproute2 and iputils-ping (scripts/setup installs them)")
    tag = secrets.token_hex(3)
    fab = Fabric(f"pdm-a-{tag}", f"pdm-b-{tag}", f"pdmva{tag}")
    made: list[str] = []
    try:
        for ns, addr, mac in (
            (fab.a, "10.78.0.1/24", "02:00:00:78:00:01"),
            (fab.b, "10.78.0.2/24", "02:00:00:78:00:02"),
        ):
            ip("netns", "add", ns)
            made.append(ns)
            # A fixed address, as the lab gives its host switches: a bridge otherwise takes
            # the lowest of its ports' addresses, and the two hosts' taps for the guest
            # carry the same one (fe:54:..., from the guest's MAC).
            ip("-n", ns, "link", "add", "br0", "address", mac, "type", "bridge")
            ip("-n", ns, "addr", "add", addr, "dev", "br0")
            ip("-n", ns, "link", "set", "br0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        # made inside A, its peer moved to B: nothing of it ever sits in the root namespace
        ip("-n", fab.a, "link", "add", fab.veth_a, "type", "veth", "peer", "name", "uplink")
        ip("-n", fab.a, "link", "set", "uplink", "netns", fab.b)
        for ns, dev in ((fab.a, fab.veth_a), (fab.b, "uplink")):
            ip("-n", ns, "link", "set", dev, "master", "br0", "up")
        yield fab
    finally:
        for ns in made:  # the veth and the taps go with their namespaces
            ip("netns", "del", ns)


def host_driver(
    make_driver: Callable[..., QemuDriver], tmp_path: Path, host: str, ns: str, *, nics: bool
) -> QemuDriver:
    """A driver whose QEMUs run in namespace ``ns``; volumes shared with the other host."""
    wrapper = tmp_path / f"qemu-in-{host}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    network = LinuxBridgeNetwork("br0", netns=ns) if nics else None
    return make_driver(name=host, state_dir=tmp_path / host, qemu=str(wrapper), network=network)


class Sampler:
    """Polls both QEMUs' observer monitors (``gone`` when none answers) until stopped."""

    def __init__(self, *folders: Path) -> None:
        self.folders = folders
        self.samples: list[tuple[str, ...]] = []
        self._task: asyncio.Task[None] | None = None

    async def _status(self, folder: Path) -> str:
        try:
            return await observe_status(folder, timeout=1.0)
        except QmpError:
            return "gone"

    async def _run(self) -> None:
        while True:
            statuses = await asyncio.gather(*(self._status(f) for f in self.folders))
            self.samples.append(tuple(statuses))
            await asyncio.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_a_running_guest_moves_to_another_host_and_keeps_its_mac_and_address(
    make_driver: Callable[..., QemuDriver], fabric: Fabric, tmp_path: Path
) -> None:
    a = host_driver(make_driver, tmp_path, "a", fabric.a, nics=True)
    b = host_driver(make_driver, tmp_path, "b", fabric.b, nics=True)
    try:
        await a.create(GuestConfig("vm", "u-vm", 1, SPEC))
        await a.start("vm")
        assert a.ready_line("vm") == f"PODIUM-READY name=vm ip={GUEST_IP} disks=vda"
        assert fabric.ping(fabric.a, GUEST_IP).returncode == 0
        source_pid = a.pid("vm")
        assert source_pid is not None

        uri = await b.prepare_incoming(GuestConfig("vm", "u-vm", 2, SPEC), listen="10.78.0.2")
        assert uri.startswith("tcp:10.78.0.2:") and int(uri.rsplit(":", 1)[1]) > 0
        assert await observe_status(tmp_path / "b" / "vm") == "inmigrate"
        with pytest.raises(MigrationError, match="has not completed"):
            await b.activate("vm")
        # the agent on B restarts: the destination is adopted, still waiting, same URI
        await b.close()
        b = host_driver(make_driver, tmp_path, "b", fabric.b, nics=True)
        incoming = await b.status("vm")
        assert incoming is not None and (incoming.state, incoming.epoch) == (S.INCOMING, 2)
        again = await b.prepare_incoming(GuestConfig("vm", "u-vm", 2, SPEC), listen="10.78.0.2")
        assert again == uri

        seen: list[MigrationProgress] = []
        with Sampler(tmp_path / "a" / "vm", tmp_path / "b" / "vm") as sampler:
            started = time.monotonic()
            done = await a.migrate_out("vm", uri, on_progress=seen.append)
            took = time.monotonic() - started
            assert not alive(source_pid)  # gone by the time migrate_out returns
            source = await a.status("vm")
            assert source is not None and (source.state, source.message) == (
                S.STOPPED,
                f"migrated to {uri}",
            )
            # received, but not running until activated
            assert await observe_status(tmp_path / "b" / "vm") == "paused"
            target = await b.status("vm")
            assert target is not None and target.state is S.INCOMING
            assert (await b.activate("vm")).state is S.RUNNING
            assert await observe_status(tmp_path / "b" / "vm") == "running"
            await asyncio.sleep(0.05)
        print(f"migration: {took:.2f} s, QEMU: {done}")  # shown with -s
        assert done.total_ms > 0 and done.transferred > 0 and seen[-1].status == "completed"
        assert ("running", "running") not in sampler.samples
        assert ("running", "inmigrate") in sampler.samples  # sampled while it was under way
        assert ("gone", "running") in sampler.samples

        # the same MAC answers for the same address, now from behind the veth
        ip("-n", fabric.a, "neigh", "flush", "all")
        assert fabric.ping(fabric.a, GUEST_IP).returncode == 0
        assert MAC in ip("-n", fabric.a, "neigh", "show", GUEST_IP)
        fdb = subprocess.run(
            ["bridge", "-n", fabric.a, "fdb", "show", "br", "br0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert any(MAC in line and fabric.veth_a in line for line in fdb.splitlines()), fdb
        assert fabric.ping(fabric.b, GUEST_IP).returncode == 0
        assert b.ready_line("vm") == f"PODIUM-READY name=vm ip={GUEST_IP} disks=vda"
        assert "after a live migration" in b.console("vm")
        assert await a.migrate_out("vm", uri) == done  # the source agent asks again: the same
    finally:
        a.kill_all()
        b.kill_all()
        await a.close()
        await b.close()


async def test_failed_and_stalled_migrations_leave_the_source_running(
    make_driver: Callable[..., QemuDriver], fabric: Fabric, tmp_path: Path
) -> None:
    a = host_driver(make_driver, tmp_path, "a", fabric.a, nics=False)
    try:
        await a.create(GuestConfig("vm", "u-vm", 1, {"request": {"cpu": 1, "memory_mib": 128}}))
        await a.start("vm")
        with pytest.raises(MigrationError, match="Connection refused"):
            await a.migrate_out("vm", "tcp:10.78.0.2:1")  # host B is there, no QEMU listens
        with pytest.raises(MigrationError, match="refused"):
            await a.migrate_out("vm", "udp:10.78.0.2:1")
        started = time.monotonic()
        with pytest.raises(MigrationError, match=r"moved no bytes for 1 s"):
            await a.migrate_out("vm", "tcp:10.78.0.99:4444", stall_timeout=1)  # no such host
        print(f"stalled migration given up after {time.monotonic() - started:.2f} s")
        status = await a.status("vm")
        assert status is not None and (status.state, status.message) == (S.RUNNING, "")
        assert await a.qmp_status("vm") == "running"
        assert await observe_status(tmp_path / "a" / "vm") == "running"
    finally:
        a.kill_all()
        await a.close()
