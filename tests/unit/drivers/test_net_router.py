"""The network-rules router: its nft ruleset, MACs, and what it does to a (fake) host."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from podium.drivers.net import NetworkError, OvsNetwork, RoutedNetwork, Router, gateway_mac
from podium.drivers.net._router import ruleset

NS = "pdm-lab-h1"


def routed(name: str, vlan: int, net: int, *peers: str) -> RoutedNetwork:
    return RoutedNetwork.of({"name": name, "vlan": vlan, "subnet": f"10.{net}.0.0/24",
                             "gateway": f"10.{net}.0.1", "peers": list(peers)})  # fmt: skip


FRONT, BACK = routed("front", 100, 10, "back"), routed("back", 200, 20, "front")


class FakeHost:
    """Links (per namespace), addresses, OVS ports, sysctls and nft scripts of one host."""

    def __init__(self) -> None:
        self.links: dict[str | None, dict[str, str]] = {None: {"br0": "aa:00:00:00:00:01"}}
        self.links[NS] = {}
        self.peer: dict[str, str] = {}
        self.up: set[str] = set()
        self.addrs: dict[str, set[str]] = {}
        self.ports: dict[str, str] = {"upv0": ""}
        self.sysctl = {"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.arp_ignore": "0"}
        self.nft: list[str] = []
        self.calls: list[list[str]] = []

    def where(self, name: str) -> str | None:
        return next(ns for ns, links in self.links.items() if name in links)

    def run(self, argv: Sequence[str], stdin: str | None) -> str:
        argv = list(argv)
        self.calls.append(argv)
        ns: str | None = None
        if argv[:3] == ["ip", "netns", "exec"]:
            ns, argv = argv[3], argv[4:]
        if argv[0] == "nft":
            assert stdin is not None
            self.nft.append(stdin)
            return ""
        if argv[0] == "sysctl":
            if argv[1] == "-n":
                return self.sysctl.get(argv[2], "0") + "\n"
            self.sysctl.update(kv.split("=", 1) for kv in argv[2:])
            return ""
        assert argv[0] == "ip", argv
        args = argv[1:]
        if args[0] == "-n":
            ns, args = args[1], args[2:]
        links = self.links[ns]
        match args:
            case ["-j", "link", "show"]:
                return json.dumps([{"ifname": n, "address": m} for n, m in links.items()])
            case ["-j", "addr", "show", "dev", dev]:
                info = [{"family": "inet", "local": a.split("/")[0],
                         "prefixlen": int(a.split("/")[1]), "scope": "global"}
                        for a in sorted(self.addrs.get(dev, set()))]  # fmt: skip
                return json.dumps([{"ifname": dev, "addr_info": info}])
            case ["link", "add", sw, "type", "veth", "peer", "name", gw]:
                links[sw], links[gw] = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
                self.peer[sw], self.peer[gw] = gw, sw
            case ["link", "set", dev, "netns", target]:
                self.links[target][dev] = links.pop(dev)
            case ["link", "set", dev, "address", mac]:
                links[dev] = mac
            case ["link", "set", dev, "up"]:
                assert dev in links
                self.up.add(dev)
            case ["link", "del", dev]:
                other = self.peer.pop(dev)
                del self.peer[other], links[dev]
                self.links[self.where(other)].pop(other)
                self.addrs.pop(dev, None)
            case ["addr", "flush", "dev", dev]:
                self.addrs[dev] = set()
            case ["addr", "add", address, "dev", dev]:
                self.addrs.setdefault(dev, set()).add(address)
            case _:
                raise AssertionError(f"unexpected command {argv}")
        return ""

    def vsctl(self, argv: Sequence[str]) -> str:
        args = list(argv)[3:]  # ovs-vsctl --db=... --timeout=...
        if args[:2] == ["list-ports", "brv"]:
            return "\n".join(sorted(self.ports)) + "\n"
        if args[:3] == ["--may-exist", "add-port", "brv"]:
            assert args[3] in self.links[None], "the switch end lives where OVS runs"
            self.ports[args[3]] = next(a for a in args if a.startswith("tag="))
            return ""
        if args[:3] == ["--if-exists", "del-port", "brv"]:
            self.ports.pop(args[3], None)
            return ""
        raise AssertionError(f"unexpected vsctl {args}")


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


def router(host: FakeHost, netns: str | None = NS) -> Router:
    ovs = OvsNetwork("brv", db="unix:/x/db.sock", runner=host.vsctl)
    return Router(ovs, host="h1", netns=netns, runner=host.run)


def test_ruleset_accepts_only_allowed_pairs_both_ways() -> None:
    lonely = routed("lonely", 300, 30, "front")  # listed, but front does not list it here
    text = ruleset([BACK, FRONT, lonely])
    assert text.startswith("add table inet podium_rules\ndelete table inet podium_rules\n")
    head = "add rule inet podium_rules "
    rules = [line.removeprefix(head) for line in text.splitlines() if line.startswith(head)]
    assert rules == [
        'forward iifname "pd*" drop',
        'forward iifname "rsw*" drop',
        'forward iifname "rgw100" oifname "rgw200" accept',
        'forward iifname "rgw200" oifname "rgw100" accept',
        'forward iifname "rgw300" oifname "rgw100" accept',
        'forward iifname "rgw*" drop',
        'forward oifname "rgw*" drop',
        'input iifname "pd*" drop',
        'input iifname "rsw*" drop',
        'input iifname "rgw100" ip daddr 10.10.0.1 meta l4proto icmp accept',
        'input iifname "rgw200" ip daddr 10.20.0.1 meta l4proto icmp accept',
        'input iifname "rgw300" ip daddr 10.30.0.1 meta l4proto icmp accept',
        'input iifname "rgw*" meta l4proto ipv6-icmp accept',
        'input iifname "rgw*" drop',
    ]
    assert ruleset([]) == "add table inet podium_rules\ndelete table inet podium_rules\n"


def test_gateway_macs_are_local_unicast_and_distinct_per_host_and_vlan() -> None:
    macs = {gateway_mac(f"h{i}", vlan) for i in range(200) for vlan in (1, 100, 4094)}
    assert len(macs) == 600
    assert all(int(m[:2], 16) & 0b11 == 0b10 for m in macs)
    assert gateway_mac("h1", 100) == gateway_mac("h1", 100)
    assert gateway_mac("h1", 100).endswith(":00:64")


def test_routed_networks_are_checked() -> None:
    assert FRONT.address == "10.10.0.1/24" and FRONT.peers == ("back",)
    with pytest.raises(NetworkError, match="not in"):
        RoutedNetwork.of({"name": "x", "vlan": 5, "subnet": "10.0.0.0/24",
                          "gateway": "10.1.0.1", "peers": []})  # fmt: skip
    with pytest.raises(NetworkError, match="bad routed network"):
        RoutedNetwork.of({"name": "x", "vlan": 5})


def test_reconcile_makes_gateway_ports_forwarding_and_rules_then_undoes_them(
    host: FakeHost,
) -> None:
    r = router(host)
    r.reconcile([FRONT, BACK])
    assert set(host.links[NS]) == {"rgw100", "rgw200"}
    assert host.links[NS]["rgw100"] == gateway_mac("h1", 100)
    assert {"rsw100", "rsw200"} <= set(host.links[None])
    assert host.ports == {"upv0": "", "rsw100": "tag=100", "rsw200": "tag=200"}
    assert host.addrs == {"rgw100": {"10.10.0.1/24"}, "rgw200": {"10.20.0.1/24"}}
    assert {"rgw100", "rgw200", "rsw100", "rsw200"} <= host.up
    assert host.sysctl["net.ipv4.ip_forward"] == "1"
    assert host.sysctl["net.ipv4.conf.all.arp_ignore"] == "1"
    assert host.sysctl["net.ipv4.conf.rgw100.arp_announce"] == "2"
    assert host.nft[-1] == ruleset([FRONT, BACK])
    assert all(c[:4] == ["ip", "netns", "exec", NS] for c in host.calls if "nft" in c)

    # idempotent: nothing is made twice, nothing re-addressed
    host.calls.clear()
    r.reconcile([FRONT, BACK])
    assert not any(c[1:] and ("add" in c[1:4] or "flush" in c) for c in host.calls)

    # drift: an address lost, an OVS port gone: put back
    host.addrs["rgw200"] = set()
    del host.ports["rsw100"]
    r.reconcile([FRONT, BACK])
    assert host.addrs["rgw200"] == {"10.20.0.1/24"} and host.ports["rsw100"] == "tag=100"

    # a network leaves: its port and switch end go; none left: rules go, forwarding back
    r.reconcile([routed("front", 100, 10)])
    assert set(host.links[NS]) == {"rgw100"} and "rsw200" not in host.links[None]
    assert set(host.ports) == {"upv0", "rsw100"}
    r.clear()
    assert host.links[NS] == {} and host.links[None] == {"br0": "aa:00:00:00:00:01"}
    assert host.ports == {"upv0": ""}
    assert host.nft[-1] == ruleset([]) and host.sysctl["net.ipv4.ip_forward"] == "0"
    assert host.sysctl["net.ipv4.conf.all.arp_ignore"] == "0"


def test_the_callers_own_namespace_and_leftovers_of_a_failed_move(host: FakeHost) -> None:
    host.links[None]["rsw100"] = "02:00:00:00:00:0c"  # half a pair, from an earlier failure
    host.peer["rsw100"] = "ghost"
    host.peer["ghost"] = "rsw100"
    host.links[NS]["ghost"] = "02:00:00:00:00:0d"
    r = router(host, netns=None)
    r.reconcile([FRONT, BACK])
    assert {"rgw100", "rgw200", "rsw100", "rsw200"} <= set(host.links[None])
    assert "ghost" not in host.links[NS]
    assert not any(c[:3] == ["ip", "netns", "exec"] for c in host.calls)
    assert not any("netns" in c for c in host.calls)  # nothing to move: all here


def test_one_vlan_twice_is_refused(host: FakeHost) -> None:
    with pytest.raises(NetworkError, match="share a VLAN"):
        router(host).reconcile([FRONT, routed("other", 100, 30)])
