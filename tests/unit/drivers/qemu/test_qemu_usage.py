"""The qemu driver's usage arithmetic: /proc/PID/stat, query-blockstats and tap bytes
turned into rates, with fake /proc files and fake QMP answers (no QEMU needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

from podium.drivers.net import NetworkError
from podium.drivers.qemu._errors import QmpError
from podium.drivers.qemu._qmp import Monitor, MonitorState
from podium.drivers.qemu._usage import (
    Probe,
    Sample,
    UsageMeter,
    UsageProbe,
    block_ops,
    cpu_seconds,
)

HZ = 100


def write_stat(proc: Path, pid: int, utime: int, stime: int, comm: str = "qemu-system-x86") -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True, exist_ok=True)
    # fields 3..13 then utime (14) stime (15) and a few more, as the kernel writes them
    rest = ["S", "1", str(pid), str(pid), "0", "-1", "4194560", "10", "0", "0", "0"]
    tail = ["0", "0", "20", "0", "3", "0", "12345"]
    text = f"{pid} ({comm}) " + " ".join([*rest, str(utime), str(stime), *tail]) + "\n"
    (folder / "stat").write_text(text)


def test_cpu_seconds_reads_utime_and_stime_even_with_an_odd_command_name(tmp_path: Path) -> None:
    write_stat(tmp_path, 41, utime=250, stime=50, comm="qemu (db) 1")
    assert cpu_seconds(41, proc=tmp_path, ticks=HZ) == pytest.approx(3.0)
    assert cpu_seconds(42, proc=tmp_path, ticks=HZ) is None  # gone


def test_block_ops_sums_reads_and_writes_of_top_level_devices() -> None:
    reply = [
        {
            "device": "",
            "node-name": "root",
            "stats": {"rd_operations": 120, "wr_operations": 30, "flush_operations": 9},
            "parent": {"stats": {"rd_operations": 120, "wr_operations": 30}},  # same requests
        },
        {"device": "cd0", "stats": {"rd_operations": 5}},
    ]
    assert block_ops(reply) == 155
    assert block_ops({"unexpected": True}) == 0


def sample(pid: int, at: float, cpu: float | None, ops: int | None, net: int | None) -> Sample:
    return Sample(pid, at, 512.0, cpu, ops, net)


def test_the_meter_turns_deltas_into_rates_per_second() -> None:
    meter = UsageMeter()
    assert meter.sample({"g": sample(7, 10.0, 1.0, 100, 1_000_000)}) == {}  # baseline
    usage = meter.sample({"g": sample(7, 14.0, 3.0, 500, 6_000_000)})
    # 2 CPU s in 4 s: half a core; 400 ops / 4 s; 5 MB * 8 / 4 s = 10 Mbit/s
    assert usage == {"g": {"cpu": 0.5, "memory_mib": 512.0, "iops": 100.0, "net_mbps": 10.0}}


def test_a_new_pid_starts_over_and_a_smaller_counter_counts_zero() -> None:
    meter = UsageMeter()
    meter.sample({"g": sample(7, 0.0, 5.0, 900, 10_000)})
    assert meter.sample({"g": sample(8, 2.0, 0.1, 3, 10)}) == {}  # restarted: a new baseline
    usage = meter.sample({"g": sample(8, 4.0, 0.5, 1, None)})  # ops reset, net unread
    assert usage["g"]["cpu"] == pytest.approx(0.2)
    assert (usage["g"]["iops"], usage["g"]["net_mbps"]) == (0.0, 0.0)
    # a guest not sampled any more is forgotten: back, it needs a baseline again
    meter.sample({})
    assert meter.sample({"g": sample(8, 6.0, 0.9, 5, 0)}) == {}


class FakeMonitor:
    """Answers query-blockstats from a script of cumulative op counts."""

    def __init__(self, ops: list[int], *, fail: bool = False) -> None:
        self.state = MonitorState.CONNECTED
        self.ops, self.fail, self.asked = ops, fail, 0

    async def execute(self, command: str, arguments: Any = None, *, timeout: float = 10.0) -> Any:
        assert command == "query-blockstats"
        if self.fail:
            raise QmpError("fake: query-blockstats failed")
        n = self.ops[min(self.asked, len(self.ops) - 1)]
        self.asked += 1
        return [{"device": "", "stats": {"rd_operations": n, "wr_operations": n}}]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_probe_measures_cpu_iops_and_tap_bytes(tmp_path: Path) -> None:
    clock, hz = Clock(), os.sysconf("SC_CLK_TCK")
    counters = {"tap-a0": 0, "tap-a1": 0, "tap-b0": 0}
    asked: list[tuple[list[str], str | None]] = []

    def taps(names: Any, netns: str | None) -> dict[str, int]:
        asked.append((sorted(names), netns))
        return {n: counters[n] for n in names if n in counters}

    probe = UsageProbe("pdm-u1", network=True, clock=clock, proc=tmp_path, taps=taps)
    a_mon, b_mon = FakeMonitor([0, 150]), FakeMonitor([0], fail=True)
    guests = [
        Probe("a", 11, 1024, cast(Monitor, a_mon), ("tap-a0", "tap-a1")),
        Probe("b", 12, 256, cast(Monitor, b_mon), ("tap-b0",)),
        Probe("c", 13, 128, None, ()),  # monitor not connected yet, no NIC
    ]
    for pid in (11, 12, 13):
        write_stat(tmp_path, pid, 0, 0)
    assert await probe.measure(guests) == {}
    clock.now = 10.0
    write_stat(tmp_path, 11, 15 * hz, 5 * hz)  # 20 CPU s in 10 s: two cores
    write_stat(tmp_path, 12, hz, 0)
    counters.update({"tap-a0": 1_000_000, "tap-a1": 250_000, "tap-b0": 0})
    usage = await probe.measure(guests)
    assert usage["a"] == {"cpu": 2.0, "memory_mib": 1024, "iops": 30.0, "net_mbps": 1.0}
    assert usage["b"] == {"cpu": 0.1, "memory_mib": 256, "iops": 0.0, "net_mbps": 0.0}
    assert usage["c"]["cpu"] == 0.0 and usage["c"]["iops"] == 0.0
    assert asked[-1] == (["tap-a0", "tap-a1", "tap-b0"], "pdm-u1")


async def test_a_netlink_failure_costs_only_the_network_rate(tmp_path: Path) -> None:
    clock = Clock()

    def broken(names: Any, netns: str | None) -> dict[str, int]:
        raise NetworkError("fake: netlink is down")

    probe = UsageProbe(None, network=True, clock=clock, proc=tmp_path, taps=broken)
    write_stat(tmp_path, 5, 0, 0)
    guests = [Probe("a", 5, 64, None, ("tap-a0",))]
    await probe.measure(guests)
    clock.now = 2.0
    write_stat(tmp_path, 5, 100, 0)
    hz = os.sysconf("SC_CLK_TCK")
    assert (await probe.measure(guests))["a"] == {
        "cpu": pytest.approx(100 / hz / 2.0, abs=1e-4),
        "memory_mib": 64,
        "iops": 0.0,
        "net_mbps": 0.0,
    }
