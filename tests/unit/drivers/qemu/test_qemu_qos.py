"""QoS on the qemu driver without QEMU: the plan, the enforcer over fakes, cgroup files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podium.drivers import GuestConfig, GuestQos
from podium.drivers.net import NetworkError
from podium.drivers.qemu._cgroup import (
    CgroupError,
    CgroupV1Cpu,
    CgroupV2Cpu,
    detect,
    group_name,
    v1_shares,
    v2_weight,
)
from podium.drivers.qemu._qos import Enforcer, plan

REQUEST = {"cpu": 1, "memory_mib": 256}


def cfg(qos: dict[str, Any], name: str = "web-1") -> GuestConfig:
    return GuestConfig(name, "u-" + name, 1, {"request": REQUEST, "qos": qos})


def test_the_plan_takes_each_limit_to_its_mechanism() -> None:
    p = plan(cfg({"iops": {"limit": 50.0}, "net_mbps": {"limit": 20.0}, "cpu": {"limit": 1.5}}))
    assert (p.iops, p.net_mbps, p.cpu_quota, p.cpu_shares) == (50, 20.0, 1.5, 100)
    assert p.needs_cgroup and p.notes == ()
    assert not plan(cfg({})).needs_cgroup
    assert plan(cfg({"cpu": {"shares": 400}})).needs_cgroup


def test_what_cannot_be_enforced_is_noted_not_faked() -> None:
    p = plan(
        cfg(
            {
                "memory_mib": {"limit": 512.0},
                "iops": {"shares": 300},
                "net_mbps": {"shares": 50},
            }
        )
    )
    assert p.notes == (
        "memory_mib limit 512 not enforced: the guest has 256 MiB (-m, its reservation) "
        "and cannot use more",
        "iops shares not enforced: no per-guest I/O weights (needs BFQ)",
        "net_mbps shares not enforced: no per-guest arbiter on the switch",
    )
    # a memory limit equal to the reservation is what -m does already: nothing to note
    assert plan(cfg({"memory_mib": {"limit": 256.0}})).notes == ()


@dataclass
class FakeNetwork:
    bridge: str = "br0"
    netns: str | None = "pdq-test"

    def attach(self, guest: str, index: int, mac: str, vlan: int | None = None) -> str:
        raise AssertionError("not used")

    def detach(self, tap: str) -> None:
        raise AssertionError("not used")

    def taps(self) -> list[str]:
        return []


@dataclass
class FakeTc:
    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail: bool = False

    def limit(self, tap: str, mbps: float, *, netns: str | None) -> None:
        if self.fail:
            raise NetworkError(f"limiting tap {tap}: Operation not supported")
        self.calls.append(("limit", tap, f"{mbps:g}", str(netns)))

    def clear(self, tap: str, *, netns: str | None) -> None:
        self.calls.append(("clear", tap, str(netns)))


@dataclass
class FakeCpu:
    placed: dict[str, tuple[int, float | None, int]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    version: int = 1
    root: Path = Path("/fake")

    def place(self, group: str, pid: int, *, quota: float | None, shares: int) -> Path:
        self.placed[group] = (pid, quota, shares)
        return self.root / group

    def read(self, group: str) -> None:
        return None

    busy: int = 0  # removals that fail first (a QEMU leaving its cgroup a moment late)

    def remove(self, group: str) -> None:
        if self.busy:
            self.busy -= 1
            raise CgroupError(f"cgroup {group} still holds processes")
        self.removed.append(group)


def enforcer(tc: FakeTc, cpu: FakeCpu | str) -> Enforcer:
    return Enforcer("h1", FakeNetwork(), cpu=cpu, limit=tc.limit, clear=tc.clear)


def test_apply_limits_every_tap_in_the_networks_namespace_and_places_qemu() -> None:
    tc, cpu = FakeTc(), FakeCpu()
    config = cfg({"net_mbps": {"limit": 20.0}, "cpu": {"limit": 1.5, "shares": 200}})
    qos = enforcer(tc, cpu).apply(config, 4242, ("pd00000001-0", "pd00000001-1"))
    assert qos == GuestQos(
        {"cpu": 1.5, "net_mbps": 20.0},
        {"cpu": 200, "memory_mib": 100, "iops": 100, "net_mbps": 100},
        (),
    )
    assert tc.calls == [
        ("limit", "pd00000001-0", "20", "pdq-test"),
        ("limit", "pd00000001-1", "20", "pdq-test"),
    ]
    assert cpu.placed == {"podium/h1/web-1": (4242, 1.5, 200)}


def test_a_tap_without_a_limit_is_cleared_of_an_earlier_one() -> None:
    tc, cpu = FakeTc(), FakeCpu()
    enforcer(tc, cpu).apply(cfg({}), 4242, ("pd00000001-0",))
    assert tc.calls == [("clear", "pd00000001-0", "pdq-test")]
    assert cpu.placed == {}  # no cpu limit nor shares: QEMU stays where it is


def test_without_cgroups_a_cpu_limit_is_reported_as_not_enforced() -> None:
    tc = FakeTc(fail=True)
    reason = "no cgroup hierarchy offers the cpu controller (v1 cpu, or v2 with cpu enabled)"
    config = cfg({"net_mbps": {"limit": 20.0}, "cpu": {"limit": 1.0}})
    qos = enforcer(tc, reason).apply(config, 4242, ("pd00000001-0",))
    assert qos.notes == (
        "net_mbps limit not enforced on pd00000001-0: limiting tap pd00000001-0: "
        "Operation not supported",
        f"cpu limit not enforced: {reason}",
    )
    assert qos.summary().startswith("qos: net_mbps limit not enforced on pd00000001-0")


def test_release_clears_taps_and_removes_the_cgroup_and_may_be_repeated() -> None:
    tc, cpu = FakeTc(), FakeCpu()
    e = enforcer(tc, cpu)
    e.release("web-1", ("pd00000001-0",))
    e.release("web-1", ("pd00000001-0",))
    assert tc.calls == [("clear", "pd00000001-0", "pdq-test")] * 2
    assert cpu.removed == ["podium/h1/web-1"] * 2


def test_a_net_limit_on_a_guest_without_a_network_is_noted() -> None:
    e = Enforcer("h1", None, cpu=FakeCpu())
    qos = e.apply(cfg({"net_mbps": {"limit": 5.0}}), 4242, ())
    assert qos.notes == ("net_mbps limit: the guest has no NIC",)


def fake_v1(tmp_path: Path) -> CgroupV1Cpu:
    root = tmp_path / "cpu"
    root.mkdir()
    return CgroupV1Cpu(root)


def test_cgroup_v1_files_for_a_limit_and_shares(tmp_path: Path) -> None:
    control = fake_v1(tmp_path)
    group = group_name("h1", "web-1")
    folder = control.place(group, 4242, quota=1.5, shares=200)
    assert folder == tmp_path / "cpu/podium/h1/web-1"
    files = {f: (folder / f).read_text() for f in ("cpu.cfs_period_us", "cpu.cfs_quota_us")}
    assert files == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"}
    assert (folder / "cpu.shares").read_text() == "2048"  # 1024 * 200 / DEFAULT_SHARES
    assert (folder / "cgroup.procs").read_text() == "4242"
    settings = control.read(group)
    assert settings is not None and (settings.quota, settings.weight, settings.pids) == (
        1.5,
        2048,
        (4242,),
    )
    control.place(group, 4242, quota=None, shares=100)  # idempotent; no limit: -1
    assert (folder / "cpu.cfs_quota_us").read_text() == "-1"


def test_cgroup_v2_enables_cpu_down_the_tree_and_writes_cpu_max(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("")
    for part in ("podium", "podium/h1"):  # a real cgroupfs makes these files itself
        (root / part).mkdir()
        (root / part / "cgroup.subtree_control").write_text("")
    control = CgroupV2Cpu(root)
    folder = control.place(group_name("h1", "web-1"), 7, quota=0.5, shares=300)
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert (folder / "cpu.weight").read_text() == "300"
    for part in ("", "podium", "podium/h1"):
        assert (root / part / "cgroup.subtree_control").read_text() == "+cpu"


def test_shares_map_to_the_kernels_ranges() -> None:
    assert (v1_shares(100), v1_shares(1), v1_shares(10_000)) == (1024, 10, 102_400)
    assert (v2_weight(100), v2_weight(1), v2_weight(10_000)) == (100, 1, 10_000)


def test_removing_a_cgroup_that_still_holds_qemu_says_so(tmp_path: Path) -> None:
    control = fake_v1(tmp_path)
    control.remove("podium/h1/none")  # missing: no error
    folder = control.place("podium/h1/web-1", 4242, quota=1.0, shares=100)
    with pytest.raises(CgroupError, match="removing cgroup"):
        control.remove("podium/h1/web-1")  # (a fake folder has files, like a busy group)
    assert folder.is_dir()


def test_detect_prefers_the_v1_cpu_hierarchy_and_explains_an_absence(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    v1 = tmp_path / "cpu"
    v1.mkdir()
    mounts.write_text(
        f"cgroup2 {tmp_path}/unified cgroup2 rw 0 0\ncgroup {v1} cgroup rw,relatime,cpu 0 0\n"
    )
    found = detect(mounts)
    assert isinstance(found, CgroupV1Cpu) and found.root == v1
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    mounts.write_text(f"cgroup2 {unified} cgroup2 rw 0 0\n")
    found = detect(mounts)
    assert isinstance(found, CgroupV2Cpu) and found.root == unified
    (unified / "cgroup.controllers").write_text("hugetlb\n")  # this platform's v2 mount
    assert detect(mounts) == (
        "no cgroup hierarchy offers the cpu controller (v1 cpu, or v2 with cpu enabled)"
    )


def test_release_waits_a_moment_for_an_exiting_qemu_to_leave_its_cgroup() -> None:
    tc, cpu, pauses = FakeTc(), FakeCpu(busy=3), []
    e = Enforcer("h1", None, cpu=cpu, limit=tc.limit, clear=tc.clear, sleep=pauses.append)
    e.release("web-1", ())
    assert cpu.removed == ["podium/h1/web-1"] and pauses == [0.05] * 3
    stuck = FakeCpu(busy=1000)  # never leaves: given up (logged), the next start reuses it
    Enforcer("h1", None, cpu=stuck, sleep=pauses.append).release("web-1", ())
    assert stuck.removed == [] and stuck.busy == 1000 - 20
