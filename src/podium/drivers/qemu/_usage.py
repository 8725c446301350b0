"""The qemu driver's :class:`~podium.drivers.UsageSource`: what each running guest uses.

::

    per running guest, one sample:
      cpu_s      utime + stime of its QEMU (/proc/PID/stat, clock ticks / SC_CLK_TCK)
      ops        Σ rd_operations + wr_operations of its drives (QMP query-blockstats,
                 over the driver's own monitor: QEMU serves one client per socket)
      net_bytes  Σ rx_bytes + tx_bytes of its taps (netlink stats64, in the switch's netns)
      memory_mib its -m
    UsageMeter: rate = (sample - previous) / seconds between them, per guest
      cpu = cpu_s/s (cores), iops = ops/s, net_mbps = bytes/s * 8 / 1e6, memory_mib as is

*Memory is the guest's -m, not QEMU's RSS*: without a balloon QEMU never gives back a
page the guest touched, so -m is what the host must hold for it in the long run; RSS
under-reports a young guest (its RAM not touched yet) and, under TCG, adds the
translation cache. A counter smaller than before (QEMU restarted under a new PID, a tap
recreated) starts a new baseline; a new PID leaves the guest out of this round. A
rate whose counter was not read at both ends (monitor reconnecting, netlink failing)
counts 0 this round.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.drivers._protocol import GuestConfig
from podium.drivers._usage import Usage
from podium.drivers.net import NetworkError
from podium.drivers.net._netlink import netlink
from podium.drivers.qemu._argv import MIN_MEMORY_MIB
from podium.drivers.qemu._errors import QmpError
from podium.drivers.qemu._qmp import Monitor, MonitorState

PROC = Path("/proc")
QMP_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Probe:
    """What the driver knows of one running guest, to measure it."""

    name: str
    pid: int
    memory_mib: float
    monitor: Monitor | None
    taps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative counters of one guest at one moment (None: not read this time)."""

    pid: int
    at: float
    memory_mib: float
    cpu_s: float | None
    ops: int | None
    net_bytes: int | None


def memory_of(config: GuestConfig) -> float:
    """The guest's -m in MiB (as ``_argv.layout`` sets it)."""
    return float(max(MIN_MEMORY_MIB, int(config.request.memory_mib)))


def cpu_seconds(pid: int, *, proc: Path = PROC, ticks: int | None = None) -> float | None:
    """CPU seconds (user + system) of process ``pid`` so far; None if it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "PID (comm) S ppid ...": comm may hold spaces and ')', so split after the last ')'
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
    hz = ticks or os.sysconf("SC_CLK_TCK")
    return (utime + stime) / hz


def block_ops(reply: Any) -> int:
    """Σ read + write operations over the devices of a ``query-blockstats`` reply (the
    top-level nodes only: their ``parent`` protocol nodes count the same requests)."""
    total = 0
    for device in reply if isinstance(reply, list) else []:
        stats = device.get("stats") or {}
        total += int(stats.get("rd_operations", 0)) + int(stats.get("wr_operations", 0))
    return total


def tap_bytes(taps: Iterable[str], netns: str | None) -> dict[str, int]:
    """rx + tx bytes of each of ``taps`` that exists (blocking: call from a thread).

    Raises :class:`NetworkError` when netlink fails.
    """
    wanted = set(taps)

    def body(ipr: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for msg in ipr.link("dump"):
            name = msg.get("ifname")
            if name in wanted:
                stats = msg.get("stats64") or msg.get("stats") or {}
                out[name] = int(stats.get("rx_bytes", 0)) + int(stats.get("tx_bytes", 0))
        return out

    if not wanted:
        return {}
    result: dict[str, int] = netlink(netns, body, "reading tap counters")
    return result


async def _ops(monitor: Monitor | None) -> int | None:
    if monitor is None or monitor.state is not MonitorState.CONNECTED:
        return None
    try:
        return block_ops(await monitor.execute("query-blockstats", timeout=QMP_TIMEOUT))
    except QmpError:
        return None


def _rate(now: float | int | None, before: float | int | None, seconds: float) -> float | None:
    if now is None or before is None or now < before:
        return None  # not read at one end, or the counter restarted
    return (now - before) / seconds


class UsageMeter:
    """Turns successive samples into rates per guest (see the module docstring)."""

    def __init__(self) -> None:
        self._last: dict[str, Sample] = {}

    def sample(self, samples: Mapping[str, Sample]) -> dict[str, Usage]:
        """Usage of every guest with a previous sample under the same PID; guests absent
        from ``samples`` are forgotten."""
        last, self._last = self._last, dict(samples)
        out: dict[str, Usage] = {}
        for name, s in samples.items():
            before = last.get(name)
            if before is None or before.pid != s.pid or s.at <= before.at:
                continue
            seconds = s.at - before.at
            cpu = _rate(s.cpu_s, before.cpu_s, seconds)
            iops = _rate(s.ops, before.ops, seconds)
            net = _rate(s.net_bytes, before.net_bytes, seconds)
            if cpu is None:  # the process is not what it was: no rates this round
                continue
            out[name] = {
                "cpu": round(cpu, 4),
                "memory_mib": s.memory_mib,
                "iops": round(iops or 0.0, 3),
                "net_mbps": round((net or 0.0) * 8 / 1e6, 6),
            }
        return out


class UsageProbe:
    """Measures the running guests of one qemu driver (its ``guest_usage``)."""

    def __init__(
        self,
        netns: str | None,
        *,
        network: bool,
        clock: Callable[[], float] = time.monotonic,
        proc: Path = PROC,
        taps: Callable[[Iterable[str], str | None], dict[str, int]] = tap_bytes,
    ) -> None:
        self._netns, self._network, self._clock = netns, network, clock
        self._proc, self._taps = proc, taps
        self.meter = UsageMeter()

    async def measure(self, probes: Sequence[Probe]) -> dict[str, Usage]:
        """Usage since the previous call of every guest of ``probes``."""
        ops = await asyncio.gather(*(_ops(p.monitor) for p in probes))
        net: dict[str, int] | None = None
        if self._network:
            try:
                all_taps = [t for p in probes for t in p.taps]
                net = await asyncio.to_thread(self._taps, all_taps, self._netns)
            except NetworkError:
                net = None  # rates need both ends: this round has none for the network
        at = self._clock()
        cpus = await asyncio.to_thread(
            lambda: [cpu_seconds(p.pid, proc=self._proc) for p in probes]
        )
        samples = {}
        for p, count, cpu in zip(probes, ops, cpus, strict=True):
            nbytes = None if net is None else sum(net.get(t, 0) for t in p.taps)
            samples[p.name] = Sample(p.pid, at, p.memory_mib, cpu, count, nbytes)
        return self.meter.sample(samples)
