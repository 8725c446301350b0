"""Frozen domain dataclasses and state enums."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NewType

HostName = NewType("HostName", str)

DIMENSIONS: tuple[str, ...] = ("cpu", "memory_mib", "iops", "net_mbps")


class Kind(enum.StrEnum):
    """Object kinds the API serves."""

    HOST = "Host"  # a server running an agent
    APP = "App"  # a group of identical guests with QoS and spread
    GUEST = "Guest"  # one virtual machine
    POOL = "Pool"  # a range of MACs, WWNs, IPs or VLAN ids that identities come from
    NETWORK = "Network"  # a VLAN (and ip pool) that profile NICs attach to
    PROFILE = "Profile"  # a server identity (NICs, HBAs, boot order) a guest wears


KINDS: dict[str, Kind] = {
    alias: kind
    for kind in Kind
    for alias in (kind.value.lower(), kind.value.lower() + "s", kind.value)
}
KIND_NAMES = ", ".join(kind.value.lower() + "s" for kind in Kind)  # for error messages


class Spread(enum.StrEnum):
    """Failure domain that replicas of one app never share."""

    HOST = "host"
    RACK = "rack"
    SITE = "site"


class HostState(enum.StrEnum):
    """Liveness of a host, as the control plane sees it."""

    READY = "ready"  # lease alive, renewals on time
    SUSPECT = "suspect"  # renewals missed, lease not yet expired: guests stay put
    LOST = "lost"  # lease expired: its guests may be restarted elsewhere
    LEFT = "left"  # removed by an operator


class GuestState(enum.StrEnum):
    """Lifecycle of a guest (DESIGN.md: the states acceptance checks read)."""

    PENDING = "pending"  # accepted, waiting for placement or for its host to start it
    STARTING = "starting"  # its host is starting it
    RUNNING = "running"  # its host reports it running
    MIGRATING = "migrating"  # live migration in progress
    STOPPED = "stopped"  # stopped on purpose
    FAILED = "failed"  # could not start or crashed; the reason is in status.message


@dataclass(frozen=True, slots=True)
class Resources:
    """A resource vector over :data:`DIMENSIONS`."""

    cpu: float = 0.0
    memory_mib: int = 0
    iops: int = 0
    net_mbps: int = 0

    def as_tuple(self) -> tuple[float, ...]:
        return (self.cpu, float(self.memory_mib), float(self.iops), float(self.net_mbps))

    def to_dict(self) -> dict[str, float | int]:
        return {
            "cpu": self.cpu,
            "memory_mib": self.memory_mib,
            "iops": self.iops,
            "net_mbps": self.net_mbps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resources:
        return cls(
            cpu=float(data.get("cpu", 0)),
            memory_mib=int(data.get("memory_mib", 0)),
            iops=int(data.get("iops", 0)),
            net_mbps=int(data.get("net_mbps", 0)),
        )

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu + other.cpu,
            self.memory_mib + other.memory_mib,
            self.iops + other.iops,
            self.net_mbps + other.net_mbps,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu - other.cpu,
            self.memory_mib - other.memory_mib,
            self.iops - other.iops,
            self.net_mbps - other.net_mbps,
        )

    def fits_in(self, other: Resources) -> bool:
        """True if every dimension of ``self`` is at most that of ``other``."""
        return all(a <= b + 1e-9 for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True)
class HostSpec:
    """What a host offers: registered by its agent, cordoned by an operator."""

    capacity: Resources
    labels: dict[str, str] = field(default_factory=dict)
    cordoned: bool = False

    @property
    def rack(self) -> str:
        return self.labels.get("rack", "")

    @property
    def site(self) -> str:
        return self.labels.get("site", "")


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What the control plane knows of a host's liveness."""

    state: HostState
    lease: int = 0
    agent_version: str = ""
    driver: str = ""
    since: float = 0.0  # wall-clock time of the last state change (for display)


@dataclass(frozen=True, slots=True)
class AppSpec:
    """A group of identical guests."""

    replicas: int
    image: str
    request: Resources
    spread: Spread | None = None
    priority: int = 0  # restart order after a host loss: higher first


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """One guest's desired shape."""

    image: str
    request: Resources
    app: str | None = None  # owning App, if any
    spread: Spread | None = None
    priority: int = 0
    running: bool = True  # desired power state


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a guest should run. ``epoch`` only grows; an agent acts only on the current one."""

    guest: str
    host: HostName | None
    epoch: int


@dataclass(frozen=True, slots=True)
class GuestStatus:
    """What the guest's host last reported (or the control plane, before placement)."""

    state: GuestState
    host: HostName | None = None
    epoch: int = 0
    message: str = ""
    since: float = 0.0
