"""Host networking for real: namespaces on a fabric bridge, and guest taps on a host switch."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from podium.drivers.net import (
    HostNetwork,
    LinuxBridgeNetwork,
    NetworkError,
    create_namespace,
    delete_link,
    delete_namespace,
    ensure_address,
    ensure_bridge,
    ensure_veth,
    links,
    namespace_exists,
    set_link_up,
)
from podium.lab import plan_lab
from tests.integration.lab.conftest import LeakGuard, ping, ping_within


def build(guard: LeakGuard, hosts: int = 2):  # type: ignore[no-untyped-def]
    """The lab's network (no processes), made with the host-networking functions."""
    layout = plan_lab(guard.name, hosts)
    create_namespace(layout.fabric_netns)
    ensure_bridge(layout.fabric_netns, "fab0", mac=layout.fabric_mac)
    ensure_address(layout.fabric_netns, "fab0", layout.fabric_address)
    for host in layout.hosts:
        create_namespace(host.netns)
        ensure_bridge(host.netns, "br0", mac=host.bridge_mac)
        ensure_veth(host.netns, "up0", peer_netns=layout.fabric_netns, peer=host.fabric_port,
                    master="br0", peer_master="fab0")  # fmt: skip
        ensure_address(host.netns, "br0", host.address)
    return layout


def remove(layout) -> None:  # type: ignore[no-untyped-def]
    for ns in layout.namespaces:
        delete_namespace(ns)


def test_two_namespaces_ping_each_other_across_the_fabric(guard: LeakGuard) -> None:
    layout = build(guard)
    try:
        build(guard)  # idempotent: a second pass changes nothing
        h1, h2 = layout.hosts
        assert ping(h1.netns, h2.ip).returncode == 0
        assert ping(h2.netns, layout.server_ip).returncode == 0
        by_name = {link.name: link for link in links(h1.netns)}
        assert set(by_name) == {"lo", "br0", "up0"}
        assert by_name["up0"].master == "br0" and by_name["up0"].kind == "veth"
        assert by_name["br0"].mac == h1.bridge_mac and by_name["br0"].up
        fabric = {link.name: link for link in links(layout.fabric_netns)}
        assert set(fabric) == {"lo", "fab0", "up-h1", "up-h2"}
        assert fabric["up-h1"].master == fabric["up-h2"].master == "fab0"
        assert fabric["up-h2"].rx_packets > 0

        set_link_up(h1.netns, "up0", False)  # a partition: h1 is cut off
        assert ping(h2.netns, h1.ip, count=1).returncode != 0
        set_link_up(h1.netns, "up0", True)
        assert ping_within(h2.netns, h1.ip)  # healed
    finally:
        remove(layout)
    assert not any(namespace_exists(ns) for ns in layout.namespaces)
    remove(layout)  # deleting what is gone is fine


def test_host_network_taps_attach_and_detach_idempotently(guard: LeakGuard) -> None:
    ns = f"{guard.prefix}h1"
    create_namespace(ns)
    try:
        ensure_bridge(ns, "br0")
        switch: HostNetwork = LinuxBridgeNetwork("br0", netns=ns)
        tap = switch.attach("web-1", 0, "52:54:00:AB:00:01")
        assert switch.attach("web-1", 0, "52:54:00:ab:00:01") == tap  # same guest, same tap
        assert LinuxBridgeNetwork("br0", netns=ns).attach("web-1", 0, "52:54:00:ab:00:01") == tap
        other = switch.attach("web-1", 1, "52:54:00:ab:00:02")
        db = switch.attach("db-1", 0, "52:54:00:ab:00:03")
        assert len({tap, other, db}) == 3 and all(len(n) <= 15 for n in (tap, other, db))
        assert switch.taps() == sorted([tap, other, db])

        by_name = {link.name: link for link in links(ns)}
        assert by_name[tap].kind == "tun" and by_name[tap].master == "br0" and by_name[tap].up
        assert by_name[tap].mac == "fe:54:00:ab:00:01"  # not the guest's own MAC
        assert by_name[tap].alias == "podium guest web-1 nic 0"

        switch.detach(other)
        switch.detach(other)  # a missing tap is not an error
        assert switch.taps() == sorted([tap, db])
        with pytest.raises(NetworkError, match="not a podium tap"):
            switch.detach("br0")
        with pytest.raises(NetworkError, match="bad MAC"):
            switch.attach("web-1", 0, "not-a-mac")

        delete_link(ns, "br0")  # the switch is gone: its taps are orphans, still ours
        assert switch.taps() == sorted([tap, db])
        with pytest.raises(NetworkError, match="host switch br0 does not exist"):
            switch.attach("web-2", 0, "52:54:00:ab:00:04")
        for name in switch.taps():
            switch.detach(name)
        assert switch.taps() == []
    finally:
        delete_namespace(ns)


async def test_host_network_works_from_inside_an_event_loop(guard: LeakGuard) -> None:
    ns = f"{guard.prefix}h1"
    create_namespace(ns)
    try:
        ensure_bridge(ns, "br0")
        switch = LinuxBridgeNetwork(netns=ns)
        tap = switch.attach("web-1", 0, "52:54:00:00:00:01")  # called on the loop's thread
        assert await asyncio.to_thread(switch.taps) == [tap]
        switch.detach(tap)
        assert switch.taps() == []
    finally:
        delete_namespace(ns)


def test_missing_namespace_is_a_clear_error(guard: LeakGuard) -> None:
    with pytest.raises(NetworkError, match="does not exist"):
        LinuxBridgeNetwork(netns=f"{guard.prefix}nope").taps()
    with pytest.raises(NetworkError, match="does not exist"):
        ensure_bridge(f"{guard.prefix}nope", "br0")
    assert not namespace_exists(f"{guard.prefix}nope")  # never created implicitly


def test_leak_guard_catches_and_removes_leaks(guard: LeakGuard, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inner = LeakGuard(name=f"{guard.name}x", marker=str(tmp_path / "inner"))
    ns = f"{inner.prefix}h1"
    create_namespace(ns)
    ensure_bridge(ns, "br0")
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "30"])
    try:
        deadline = time.monotonic() + 5  # until `ip netns exec` has entered the namespace
        while str(sleeper.pid) not in _netns_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.02)
        leaks = inner.check()
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    assert f"namespace {ns}" in leaks
    assert any(leak.startswith(f"process {sleeper.pid}") for leak in leaks)
    assert not namespace_exists(ns) and inner.check() == []


def _netns_pids(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    return out.stdout.split()
