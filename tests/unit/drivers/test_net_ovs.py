"""The OVS VLAN switch and the host switch that routes NICs to it, over fakes: the
ovs-vsctl commands made, the netlink calls on the tap, where each NIC goes."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from podium.drivers.net import HostSwitch, NetworkError, OvsNetwork, _ovs, tap_name
from podium.drivers.net._switch import drop_tagged, guard_ruleset

DB = "unix:/run/ovs/db.sock"
VSCTL = ["ovs-vsctl", f"--db={DB}", "--timeout=10"]
TAP = tap_name("db-1", 0)


@dataclass
class FakeRunner:
    """ovs-vsctl as a function: records argv, answers from ``outputs`` by subcommand."""

    outputs: dict[str, str] = field(default_factory=dict)
    fail: str | None = None
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        if self.fail is not None:
            raise NetworkError(self.fail)
        sub = next((a for a in argv[3:] if not a.startswith("-")), "")
        return self.outputs.get(sub, "")


@dataclass
class Msg:
    attrs: dict[Any, Any]

    def get(self, key: Any) -> Any:
        return self.attrs.get(key)


@dataclass
class FakeIpr:
    """Links by name: index, kind, master, state; every set recorded."""

    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def link_lookup(self, *, ifname: str) -> list[int]:
        return [v["index"] for k, v in self.links.items() if k == ifname]

    def _name(self, index: int) -> str:
        return next(k for k, v in self.links.items() if v["index"] == index)

    def link(self, command: str, **kw: Any) -> list[Msg]:
        if command == "add":
            self.links[kw["ifname"]] = {"index": 10 + len(self.links), "kind": "tun", "master": 0}
            self.calls.append(("add", kw["ifname"]))
            return []
        name = self._name(kw["index"])
        if command == "get":
            link = self.links[name]
            return [Msg({("linkinfo", "kind"): link["kind"], "master": link["master"]})]
        if command == "set":
            rest = {k: v for k, v in kw.items() if k != "index"}
            self.calls.append(("set", name, tuple(sorted(rest.items()))))
            if "master" in rest:
                self.links[name]["master"] = rest["master"]
        if command == "del":
            self.calls.append(("del", name))
            del self.links[name]
        return []


@pytest.fixture
def ipr(monkeypatch: pytest.MonkeyPatch) -> FakeIpr:
    fake = FakeIpr()

    def netlink(netns: str | None, fn: Callable[[Any], Any], what: str) -> Any:
        return fn(fake)

    monkeypatch.setattr(_ovs, "netlink", netlink)
    return fake


def test_attach_makes_the_tap_then_one_transaction_makes_it_an_access_port(ipr: FakeIpr) -> None:
    runner = FakeRunner()
    ovs = OvsNetwork("brv", db="/run/ovs/db.sock", runner=runner)  # a path becomes unix:PATH
    assert ovs.attach("db-1", 0, "02:00:0a:00:00:01", vlan=100) == TAP
    assert runner.calls == [
        [
            *VSCTL, "--may-exist", "add-port", "brv", TAP,
            "--", "set", "port", TAP, "tag=100", "vlan_mode=access",
            "external_ids:podium-guest=db-1",
        ]
    ]  # fmt: skip
    alias = (("address", "fe:00:0a:00:00:01"), ("ifalias", "podium guest db-1 nic 0"))
    assert ipr.calls == [("add", TAP), ("set", TAP, alias), ("set", TAP, (("state", "up"),))]


def test_attach_again_retags_and_takes_a_tap_off_br0(ipr: FakeIpr) -> None:
    ipr.links[TAP] = {"index": 7, "kind": "tun", "master": 3}  # it was an untagged NIC's
    runner = FakeRunner()
    OvsNetwork(db=DB, runner=runner).attach("db-1", 0, "02:00:0a:00:00:01", vlan=200)
    assert ("set", TAP, (("master", 0),)) in ipr.calls
    assert "tag=200" in runner.calls[0] and ("add", TAP) not in ipr.calls


def test_the_ovs_switch_refuses_nics_without_a_vlan_and_bad_vlans(ipr: FakeIpr) -> None:
    runner = FakeRunner()
    ovs = OvsNetwork(db=DB, runner=runner)
    with pytest.raises(NetworkError, match="NICs with a VLAN only"):
        ovs.attach("db-1", 0, "02:00:0a:00:00:01")
    with pytest.raises(NetworkError, match="bad VLAN"):
        ovs.attach("db-1", 0, "02:00:0a:00:00:01", vlan=4095)
    assert runner.calls == [] and ipr.calls == []


def test_a_failing_vsctl_names_the_database_and_leaves_the_tap_down(ipr: FakeIpr) -> None:
    ovs = OvsNetwork(db=DB, runner=FakeRunner(fail="database connection failed"))
    with pytest.raises(NetworkError, match=r"database connection failed .*ovs-vswitchd"):
        ovs.attach("db-1", 0, "02:00:0a:00:00:01", vlan=100)
    assert not any(call[-1] == (("state", "up"),) for call in ipr.calls)


def test_detach_removes_port_then_tap_and_taps_lists_podium_ports(ipr: FakeIpr) -> None:
    ipr.links[TAP] = {"index": 7, "kind": "tun", "master": 0}
    runner = FakeRunner(outputs={"list-ports": f"upv0\n{TAP}\n"})
    ovs = OvsNetwork(db=DB, runner=runner)
    ovs.detach(TAP)
    assert runner.calls == [[*VSCTL, "--if-exists", "del-port", "brv", TAP]]
    assert ipr.calls == [("del", TAP)]
    ovs.detach(TAP)  # idempotent: the tap is gone, del-port --if-exists again
    assert ovs.taps() == [TAP]
    with pytest.raises(NetworkError, match="not a podium tap"):
        ovs.detach("upv0")


def test_port_tags_reads_the_csv_listing() -> None:
    csv = f'"{TAP}",100\n"upv0",[]\n"other",5\n'
    runner = FakeRunner(outputs={"list": csv, "list-ports": f"upv0\n{TAP}"})
    assert OvsNetwork(db=DB, runner=runner).port_tags() == {TAP: 100, "upv0": None}


def test_db_targets_and_a_missing_vsctl() -> None:
    assert _ovs.db_target("tcp:127.0.0.1:6640") == "tcp:127.0.0.1:6640"
    assert _ovs.db_target("/x/db.sock") == "unix:/x/db.sock"
    with pytest.raises(NetworkError, match="socket is needed"):
        _ovs.db_target("")
    with pytest.raises(NetworkError, match="apt-get install openvswitch-switch"):
        _ovs._run(["/nonexistent/ovs-vsctl", "show"])


def test_a_vsctl_that_hangs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(NetworkError, match="no answer within 15 s"):
        _ovs._run(["ovs-vsctl", "show"])


@dataclass
class FakeLinux:
    bridge: str = "br0"
    netns: str | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        self.calls.append(("attach", guest, index, vlan))
        return tap_name(guest, index)

    def detach(self, tap: str) -> None:
        self.calls.append(("detach", tap))

    def taps(self) -> list[str]:
        return [tap_name("web-1", 0)]


@dataclass
class World:
    linux: FakeLinux
    runner: FakeRunner
    masters: dict[str, int]  # tap -> master index (0: none); absent: no such tap
    events: list[str]

    def switch(self, *, filters: bool, ovs: bool = True) -> HostSwitch:
        def probe() -> bool:
            self.events.append("probe")
            return filters

        return HostSwitch(
            self.linux,
            OvsNetwork(db=DB, runner=self.runner) if ovs else None,
            filters=probe,
            guard=lambda: self.events.append("guard"),
            master_of=lambda netns, tap: self.masters.get(tap),
        )


@pytest.fixture
def world(ipr: FakeIpr) -> World:
    return World(FakeLinux(), FakeRunner(outputs={"list-ports": f"upv0\n{TAP}"}), {}, [])


def test_untagged_nics_stay_on_br0_and_br0_is_guarded_once(world: World) -> None:
    switch = world.switch(filters=False)
    switch.attach("web-1", 0, "52:54:00:00:00:01")
    switch.attach("web-1", 1, "52:54:00:00:00:02")
    assert world.linux.calls == [("attach", "web-1", 0, None), ("attach", "web-1", 1, None)]
    assert world.events == ["guard"]  # no probe: no VLAN asked for yet
    assert world.runner.calls == []  # new taps: nothing to take off OVS
    assert switch.checksum_offload(None)


def test_vlan_nics_go_to_ovs_where_the_kernel_cannot_filter(world: World) -> None:
    switch = world.switch(filters=False)
    assert switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=100) == TAP
    switch.attach("db-1", 1, "02:00:0a:00:00:02", vlan=200)
    assert world.linux.calls == []
    assert [c[6] for c in world.runner.calls] == [TAP, tap_name("db-1", 1)]
    assert world.events == ["probe"]  # probed once
    assert not switch.checksum_offload(100)


def test_vlan_nics_stay_on_br0_where_the_kernel_filters(world: World) -> None:
    switch = world.switch(filters=True)
    switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=100)
    assert world.linux.calls == [("attach", "db-1", 0, 100)]
    assert world.runner.calls == [] and switch.checksum_offload(100)


def test_a_vlan_without_any_vlan_switch_says_what_to_install(world: World) -> None:
    switch = world.switch(filters=False, ovs=False)
    with pytest.raises(NetworkError) as err:
        switch.attach("db-1", 0, "02:00:0a:00:00:01", vlan=100)
    for hint in ("CONFIG_BRIDGE_VLAN_FILTERING", "openvswitch-switch", "--ovs-db", "VLAN 100"):
        assert hint in str(err.value)
    switch.attach("web-1", 0, "52:54:00:00:00:01")  # untagged NICs still work
    assert world.events == ["probe"]  # and nothing to guard without VLANs on OVS


def test_a_tap_that_loses_its_vlan_leaves_ovs_first(world: World) -> None:
    world.masters[TAP] = 0  # exists, no kernel master: an OVS port
    switch = world.switch(filters=False)
    switch.attach("db-1", 0, "02:00:0a:00:00:01")
    assert world.runner.calls == [[*VSCTL, "--if-exists", "del-port", "brv", TAP]]
    assert world.linux.calls == [("attach", "db-1", 0, None)]
    world.runner.calls.clear()
    world.masters[TAP] = 3  # on br0 now: no OVS call on the next start
    switch.attach("db-1", 0, "02:00:0a:00:00:01")
    assert world.runner.calls == []


def test_detach_releases_an_ovs_tap_and_deletes_it_even_when_ovs_fails(world: World) -> None:
    world.masters[TAP] = 0
    world.runner.fail = "connection refused"
    with pytest.raises(NetworkError, match="connection refused"):
        world.switch(filters=False).detach(TAP)
    assert world.linux.calls == [("detach", TAP)]


def test_taps_are_both_switches_taps(world: World) -> None:
    assert world.switch(filters=False).taps() == sorted([TAP, tap_name("web-1", 0)])
    assert world.switch(filters=False, ovs=False).taps() == [tap_name("web-1", 0)]


def test_the_switches_must_share_a_namespace() -> None:
    with pytest.raises(NetworkError, match="one network namespace"):
        HostSwitch(FakeLinux(netns="a"), OvsNetwork(db=DB, netns="b"))


def test_the_guard_drops_tagged_frames_from_the_given_ports_idempotently() -> None:
    text = guard_ruleset("taps", ["pd*", "up0"])
    assert text.splitlines() == [
        "add table bridge podium_vlan",
        "add chain bridge podium_vlan taps { type filter hook prerouting priority -200; "
        "policy accept; }",
        "flush chain bridge podium_vlan taps",
        'add rule bridge podium_vlan taps iifname "pd*" ether type { 8021q, 8021ad } drop',
        'add rule bridge podium_vlan taps iifname "up0" ether type { 8021q, 8021ad } drop',
    ]
    seen: list[tuple[list[str], str | None]] = []

    def runner(argv: Sequence[str], stdin: str | None) -> str:
        seen.append((list(argv), stdin))
        return ""

    drop_tagged("ns1", "uplinks", ["up0"], runner=runner)
    assert seen == [
        (["ip", "netns", "exec", "ns1", "nft", "-f", "-"], guard_ruleset("uplinks", ["up0"]))
    ]
