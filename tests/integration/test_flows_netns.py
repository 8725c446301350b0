"""BridgeFlows for real: nftables counts the frames between two MACs on a bridge in a
namespace of ours (two more namespaces stand for the guests, joined by veths)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import pytest

from podium.drivers._flows import guest_pairs
from podium.drivers.net import BridgeFlows, create_namespace, delete_namespace
from tests.integration.lab.conftest import netns_run, require_netns
from tests.support.components import missing_component

A, B = "52:54:00:00:10:0a", "52:54:00:00:10:0b"
PINGS, SIZE = 20, 1000
IP_BYTES = SIZE + 8 + 20


@pytest.fixture
def switch() -> Iterator[tuple[str, str, str]]:
    """Namespaces (host, guest a, guest b): a bridge in host, a veth to each guest."""
    require_netns()
    if shutil.which("nft") is None:
        missing_component("nft is not installed (scripts/setup installs nftables)")
    tag = secrets.token_hex(3)
    host, ga, gb = (f"pdm-tf{tag}-{n}" for n in ("host", "a", "b"))
    for ns in (host, ga, gb):
        create_namespace(ns)
    try:
        script = [
            "ip link add br0 type bridge", "ip link set br0 up",
            f"ip link add va type veth peer name eth0 netns {ga}",
            f"ip link add vb type veth peer name eth0 netns {gb}",
            "ip link set va master br0 up", "ip link set vb master br0 up",
        ]  # fmt: skip
        for line in script:
            assert netns_run(host, *line.split()).returncode == 0, line
        for ns, mac, ip in ((ga, A, "10.77.0.1/24"), (gb, B, "10.77.0.2/24")):
            for line in (f"ip link set eth0 address {mac}", f"ip addr add {ip} dev eth0",
                         "ip link set eth0 up"):  # fmt: skip
                assert netns_run(ns, *line.split()).returncode == 0, line
        yield host, ga, gb
    finally:
        for ns in (host, ga, gb):
            delete_namespace(ns)


def test_counts_the_bytes_between_two_macs(switch: tuple[str, str, str]) -> None:
    host, ga, _ = switch
    flows = BridgeFlows(netns=host)
    flows.ensure()
    flows.ensure()  # idempotent: one rule, counters kept
    rules = netns_run(host, "nft", "list", "chain", "bridge", "podium_flows", "prerouting")
    assert rules.stdout.count("update @flows") == 1, rules.stdout
    ping = ["ping", "-q", "-c", str(PINGS), "-i", "0.01", "-s", str(SIZE), "-W", "2", "10.77.0.2"]
    for _ in range(2):  # the first may lose an echo to the carrier coming up
        done = netns_run(ga, *ping, timeout=30)
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stdout + done.stderr
    first = flows.counters()
    pairs = guest_pairs(first, {A: "a", B: "b"})
    run = 2 * PINGS * IP_BYTES  # echoes and replies of one ping run
    # one run counted whole (a failed first try adds at most one more); ARP replies: 28 B
    assert run <= first[(A, B)] + first[(B, A)] <= 2 * run + 1024, first
    assert set(pairs) == {("a", "b")}
    netns_run(ga, *ping, timeout=30)
    second = guest_pairs(flows.counters(), {A: "a", B: "b"})
    assert second[("a", "b")] - pairs[("a", "b")] >= 2 * PINGS * IP_BYTES * 0.9
    flows.ensure()  # an agent restart: counters survive
    assert guest_pairs(flows.counters(), {A: "a", B: "b"})[("a", "b")] >= second[("a", "b")]
    flows.remove()
    assert netns_run(host, "nft", "list", "table", "bridge", "podium_flows").returncode != 0
    flows.remove()  # a missing table is fine
