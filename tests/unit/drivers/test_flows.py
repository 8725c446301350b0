"""Flow accounting pieces: MAC counters folded into guest pairs, nft's JSON parsed, the
nft ruleset kept idempotent, the qemu driver's MAC map, and the sim traffic model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from podium.drivers import FlowSource, GuestConfig, SimDriver, SimTraffic
from podium.drivers._flows import guest_pairs
from podium.drivers.net import BridgeFlows, NetworkError
from podium.drivers.net._flows import parse_set
from podium.drivers.qemu import QemuDriver
from podium.drivers.qemu._flows import guest_macs
from podium.model import Resources

A, B, C = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
REMOTE = "52:54:00:00:00:99"


def test_mac_counters_become_pairs_with_a_local_guest() -> None:
    by_mac = {
        (A, B): 100,  # both local
        (B, A): 50,  # the other direction adds up
        (A.upper(), REMOTE): 7,  # a remote guest stays a MAC (the server names it)
        (REMOTE, A): 3,
        (A, "ff:ff:ff:ff:ff:ff"): 1000,  # broadcast: no guest
        (B, "33:33:00:00:00:02"): 56,  # IPv6 multicast: no guest
        (REMOTE, "52:54:00:00:00:98"): 999,  # flooded between two remote guests: not ours
        (A, "52:54:00:00:00:0d"): 11,  # a's second NIC
    }
    local = {A: "a", B: "b", "52:54:00:00:00:0d": "a"}
    assert guest_pairs(by_mac, local) == {("a", "b"): 150, (REMOTE, "a"): 10}


NFT_JSON = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {
            "set": {
                "family": "bridge",
                "name": "flows",
                "table": "podium_flows",
                "elem": [
                    {
                        "elem": {
                            "val": {"concat": [B, A]},
                            "expires": 599,
                            "counter": {"packets": 5, "bytes": 5140},
                        }
                    },
                    {
                        "elem": {
                            "val": {"concat": [A.upper(), B]},
                            "counter": {"packets": 1, "bytes": 1028},
                        }
                    },
                ],
            }
        },
    ]
}


def test_parse_set_reads_nfts_json() -> None:
    assert parse_set(json.dumps(NFT_JSON)) == {(B, A): 5140, (A, B): 1028}
    assert parse_set(json.dumps({"nftables": [{"set": {"name": "flows"}}]})) == {}  # empty set
    with pytest.raises(NetworkError, match="unexpected output of nft"):
        parse_set("Error: syntax")


class FakeNft:
    """Records nft calls; ``missing`` makes listing fail once (the table was deleted)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.missing = False

    def __call__(self, argv: Sequence[str], stdin: str | None) -> str:
        self.calls.append((list(argv), stdin))
        if argv[1:3] == ["-j", "list"]:
            if self.missing:
                self.missing = False
                raise NetworkError("nft -j list set: No such file or directory")
            return json.dumps(NFT_JSON)
        return ""


def test_bridge_flows_sets_up_once_and_again_when_the_table_vanished() -> None:
    nft = FakeNft()
    flows = BridgeFlows(runner=nft)
    assert flows.counters() == {(B, A): 5140, (A, B): 1028}
    flows.counters()
    assert [c[0][1] for c in nft.calls] == ["-f", "-j", "-j"]  # ensured once, then listed
    script = nft.calls[0][1] or ""
    assert "table bridge podium_flows" in script and "hook prerouting" in script
    assert "flush chain bridge podium_flows prerouting" in script  # re-running keeps one rule
    assert "update @flows { ether saddr . ether daddr }" in script
    nft.missing = True
    assert flows.counters() == {(B, A): 5140, (A, B): 1028}
    assert [c[0][1] for c in nft.calls[3:]] == ["-j", "-f", "-j"]


def test_bridge_flows_of_another_namespace_run_nft_there() -> None:
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], stdin: str | None) -> str:
        calls.append(list(argv))
        return json.dumps(NFT_JSON)

    BridgeFlows(netns="pdm-x-h1", runner=runner).counters()
    assert [c[:5] for c in calls] == [["ip", "netns", "exec", "pdm-x-h1", "nft"]] * 2


def test_a_missing_nft_says_what_to_install() -> None:
    with pytest.raises(NetworkError, match="install nftables"):
        BridgeFlows(nft="/nonexistent/nft").counters()


def test_qemu_guest_macs_and_no_flows_without_a_network(tmp_path: Path) -> None:
    configs = [
        GuestConfig("a", "u1", 1, {"nics": [{"mac": A.upper()}, {"mac": C}]}),
        GuestConfig("b", "u2", 1, {}),  # no nics: one NIC, MAC derived from the uid
        GuestConfig("bad", "u3", 1, {"image": "other"}),  # refused by the driver: skipped
    ]
    macs = guest_macs(configs)
    assert macs[A] == "a" and macs[C] == "a"
    assert list(macs.values()).count("b") == 1 and len(macs) == 3
    driver = QemuDriver(
        capacity=Resources(cpu=1), state_dir=tmp_path / "s", volumes_dir=tmp_path / "v"
    )
    assert isinstance(driver, FlowSource)


async def test_qemu_driver_without_a_network_measures_nothing(tmp_path: Path) -> None:
    driver = QemuDriver(
        capacity=Resources(cpu=1), state_dir=tmp_path / "s", volumes_dir=tmp_path / "v"
    )
    assert await driver.flow_counters() is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _run(driver: SimDriver, name: str, **spec: object) -> None:
    await driver.create(GuestConfig(name, f"uid-{name}", 1, {"request": {"cpu": 1}, **spec}))
    await driver.start(name)


async def test_sim_traffic_counts_running_pairs_on_both_hosts() -> None:
    clock = Clock()
    model = SimTraffic(apps={("web", "db"): 100.0, ("web", "web"): 10.0}, clock=clock)
    cap = Resources(cpu=8, memory_mib=8192)
    h1 = SimDriver(name="h1", capacity=cap, start_delay=(0, 0), traffic=model)
    h2 = SimDriver(name="h2", capacity=cap, start_delay=(0, 0), traffic=model)
    await _run(h1, "web-1", app="web")
    await _run(h1, "web-2", app="web")
    await _run(h2, "db-1", app="db")
    assert await h1.flow_counters() == {} and await h2.flow_counters() == {}  # nothing yet
    clock.now = 10.0
    assert await h1.flow_counters() == {
        ("db-1", "web-1"): 1000,
        ("db-1", "web-2"): 1000,
        ("web-1", "web-2"): 100,  # two local guests: counted once
    }
    assert await h2.flow_counters() == {("db-1", "web-1"): 1000, ("db-1", "web-2"): 1000}
    await h1.stop("web-2")
    clock.now = 20.0
    assert await h2.flow_counters() == {("db-1", "web-1"): 2000, ("db-1", "web-2"): 1000}
    with pytest.raises(ValueError, match="negative"):
        SimTraffic(guests={("a", "b"): -1.0})
    with pytest.raises(ValueError, match="negative"):
        model.set_rate("web", "db", -5.0)
