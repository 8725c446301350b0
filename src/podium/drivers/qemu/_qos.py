"""Per-guest QoS on the qemu driver: what each limit and share becomes on this host.

::

    spec qos ─plan─> iops limit ──> argv: throttle filter over the root node (_argv; the
                 │                  same argv builder serves a migration destination)
                 ├─> net_mbps limit ─> tc on every tap: tbf + ifb (net._tc), after spawn
                 ├─> cpu limit, cpu shares ─> cgroup podium/<host>/<guest> (_cgroup)
                 └─> notes: asked for, not enforced, and why (the guest's status message)

    release (stop, migrated away, destroy): tc off the taps, the cgroup removed.

Not enforced, by design (each becomes a note when a spec asks for it):

- ``memory_mib`` limit above the reservation: a guest's memory is its ``-m`` (the
  reservation), so it can never use more; the limit has nothing to add.
- ``iops`` shares: per-guest weights need the BFQ I/O scheduler and a blkio weight per
  guest; QEMU's I/O is file I/O on the volumes' filesystem, and this kernel has no BFQ.
- ``net_mbps`` and ``memory_mib`` shares: no per-guest arbiter (a tbf is a ceiling).

Enforcement that fails at start (no cgroup cpu controller, a tc error) leaves the guest
running without that limit and says so in its status message and the log: never
silently unlimited, never a guest refused for a host's missing feature.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from podium.drivers._protocol import GuestConfig
from podium.drivers._qos import GuestQos
from podium.drivers.net import HostNetwork, NetworkError, clear_tap, limit_tap
from podium.drivers.qemu._argv import MIN_MEMORY_MIB, iops_limit
from podium.drivers.qemu._cgroup import CgroupError, CpuControl, detect, group_name
from podium.model import DEFAULT_SHARES, limits_of, shares_of

log = logging.getLogger("podium.drivers.qemu")
REMOVE_TRIES = 20
REMOVE_PAUSE = 0.05  # seconds


@dataclass(frozen=True, slots=True)
class QosPlan:
    """What the qemu driver does with one guest's QoS."""

    iops: int | None  # whole operations per second (QEMU block throttling)
    net_mbps: float | None  # each tap, each direction
    cpu_quota: float | None  # CPUs
    cpu_shares: int
    notes: tuple[str, ...]  # asked for and never enforced here

    @property
    def needs_cgroup(self) -> bool:
        return self.cpu_quota is not None or self.cpu_shares != DEFAULT_SHARES


def plan(config: GuestConfig) -> QosPlan:
    """The plan for ``config`` (pure)."""
    limits, shares = limits_of(config.spec), shares_of(config.spec)
    notes: list[str] = []
    memory = limits.get("memory_mib")
    booted = max(MIN_MEMORY_MIB, int(config.request.memory_mib))
    if memory is not None and memory > booted:
        notes.append(
            f"memory_mib limit {memory:g} not enforced: the guest has {booted} MiB (-m, its "
            "reservation) and cannot use more"
        )
    elif memory is not None and memory < booted:
        notes.append(f"memory_mib limit {memory:g} raised to {booted}: QEMU's minimum guest")
    for dim, why in (
        ("iops", "no per-guest I/O weights (needs BFQ)"),
        ("net_mbps", "no per-guest arbiter on the switch"),
        ("memory_mib", "memory is reserved, not shared"),
    ):
        if shares[dim] != DEFAULT_SHARES:
            notes.append(f"{dim} shares not enforced: {why}")
    return QosPlan(
        iops=iops_limit(config),
        net_mbps=limits.get("net_mbps"),
        cpu_quota=limits.get("cpu"),
        cpu_shares=shares["cpu"],
        notes=tuple(notes),
    )


Detect = Callable[[], "CpuControl | str"]


class Enforcer:
    """Applies and releases the limits that live outside QEMU (tc, cgroups) for one host.

    ``cpu`` is found by :func:`~podium.drivers.qemu._cgroup.detect` at the first guest
    that needs it (unit tests pass a fake, or a reason string for "no cgroups").
    ``limit``/``clear`` are the tc edge (:func:`~podium.drivers.net.limit_tap`).
    Methods are synchronous (netlink and cgroup files take milliseconds): call them
    from a thread. They never raise: failures become notes and log warnings.
    """

    def __init__(
        self,
        host: str,
        network: HostNetwork | None,
        *,
        cpu: CpuControl | str | None = None,
        limit: Callable[..., object] = limit_tap,
        clear: Callable[..., None] = clear_tap,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host
        self.network = network
        self._cpu = cpu
        self._limit = limit
        self._clear = clear
        self._sleep = sleep

    def cpu(self) -> CpuControl | str:
        if self._cpu is None:
            self._cpu = detect()
        return self._cpu

    def apply(self, config: GuestConfig, pid: int, taps: Sequence[str]) -> GuestQos:
        """Enforce ``config``'s limits on its QEMU (``pid``) and taps; what holds now."""
        p = plan(config)
        notes = list(p.notes)
        notes += self._apply_net(p, taps)
        notes += self._apply_cpu(config.name, p, pid)
        for note in notes:
            log.warning("%s: guest %s: %s", self.host, config.name, note)
        return GuestQos.of(config.spec, tuple(notes))

    def _apply_net(self, p: QosPlan, taps: Sequence[str]) -> list[str]:
        if self.network is None:
            return [] if p.net_mbps is None else ["net_mbps limit: the guest has no NIC"]
        netns = self.network.netns
        notes = []
        for tap in taps:
            try:
                if p.net_mbps is None:  # a tap kept from an earlier epoch may hold a limit
                    self._clear(tap, netns=netns)
                else:
                    self._limit(tap, p.net_mbps, netns=netns)
            except NetworkError as err:
                notes.append(f"net_mbps limit not enforced on {tap}: {err}")
        return notes

    def _apply_cpu(self, name: str, p: QosPlan, pid: int) -> list[str]:
        if not p.needs_cgroup:
            return []
        control = self.cpu()
        asked = "cpu limit" if p.cpu_quota is not None else "cpu shares"
        if isinstance(control, str):
            return [f"{asked} not enforced: {control}"]
        try:
            control.place(group_name(self.host, name), pid, quota=p.cpu_quota, shares=p.cpu_shares)
        except CgroupError as err:
            return [f"{asked} not enforced: {err}"]
        return []

    def adopted(self, config: GuestConfig) -> GuestQos:
        """What an adopted QEMU is held to: what its start applied (QEMU's argv, tc and
        cgroups outlive the agent), noted as far as the plan alone tells."""
        return GuestQos.of(config.spec, plan(config).notes)

    def release(self, name: str, taps: Sequence[str]) -> None:
        """Undo :meth:`apply` once the guest's QEMU is gone (idempotent)."""
        if self.network is not None:
            for tap in taps:
                try:
                    self._clear(tap, netns=self.network.netns)
                except NetworkError as err:
                    log.warning("%s: guest %s: removing tc from %s: %s", self.host, name, tap, err)
        control = self._cpu  # never probe just to remove nothing
        if control is None or isinstance(control, str):
            return
        for attempt in range(REMOVE_TRIES):  # an exiting QEMU leaves its cgroup a moment later
            try:
                control.remove(group_name(self.host, name))
                return
            except CgroupError as err:
                if attempt == REMOVE_TRIES - 1:  # left behind: the next start reuses it
                    log.warning("%s: guest %s: %s", self.host, name, err)
                else:
                    self._sleep(REMOVE_PAUSE)
