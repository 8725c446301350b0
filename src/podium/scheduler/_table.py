"""Scheduler inputs and outputs: the struct-of-arrays host snapshot and placement requests."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from podium.model import DIMENSIONS, Resources, Spread

NDIM = len(DIMENSIONS)
Floats = NDArray[np.float64]
Bools = NDArray[np.bool_]
Ints = NDArray[np.int64]


def name_hash(name: str) -> int:
    """A stable 64-bit hash of a name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host, as the caller knows it; :meth:`HostTable.build` turns rows into arrays."""

    name: str
    capacity: Resources
    allocated: Resources = field(default_factory=Resources)
    ready: bool = True
    cordoned: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    draining: bool = False  # being emptied: takes no new guests
    taints: Mapping[str, str] = field(default_factory=dict)  # only tolerating guests land
    health_risk: float = 0.0  # 0 healthy .. 1 about to fail (telemetry); high: avoid


@dataclass(frozen=True, eq=False)
class HostTable:
    """A struct-of-arrays snapshot of every host, row ``i`` for host ``names[i]``.

    ``capacity`` and ``allocated`` are ``(n, 4)`` over :data:`podium.model.DIMENSIONS`;
    ``rack``/``site`` are integer codes into ``rack_names``/``site_names`` (a host
    without the label has the code of ``""``: unlabeled hosts share one domain, so a
    spread is never broken by a missing label, only made stricter).

    Taints are columns: ``taint_names[t]`` is a ``(key, value)`` pair and
    ``tainted[i, t]`` says host ``i`` carries it, so a toleration check is one
    boolean reduction over ``(n, T)`` (T: distinct taints in the cluster, usually few).
    """

    names: tuple[str, ...]
    capacity: Floats
    allocated: Floats
    ready: Bools
    cordoned: Bools
    rack: Ints
    site: Ints
    rack_names: tuple[str, ...]
    site_names: tuple[str, ...]
    draining: Bools
    health_risk: Floats  # 0 healthy .. 1 failing, clipped
    tainted: Bools  # (n, T)
    taint_names: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, rows: Sequence[HostRow]) -> HostTable:
        """Arrays from rows (rows are sorted by name so the table is canonical)."""
        rows = sorted(rows, key=lambda r: r.name)
        n = len(rows)
        capacity = np.array([r.capacity.as_tuple() for r in rows], dtype=np.float64)
        allocated = np.array([r.allocated.as_tuple() for r in rows], dtype=np.float64)
        racks, rack = _codes([r.labels.get("rack", "") for r in rows])
        sites, site = _codes([r.labels.get("site", "") for r in rows])
        taint_names = tuple(sorted({(str(k), str(v)) for r in rows for k, v in r.taints.items()}))
        column = {t: j for j, t in enumerate(taint_names)}
        tainted = np.zeros((n, len(taint_names)), dtype=np.bool_)
        for i, r in enumerate(rows):  # once per snapshot, not per guest
            for k, v in r.taints.items():
                tainted[i, column[(str(k), str(v))]] = True
        return cls(
            names=tuple(r.name for r in rows),
            capacity=capacity.reshape(n, NDIM),
            allocated=allocated.reshape(n, NDIM),
            ready=np.array([r.ready for r in rows], dtype=np.bool_),
            cordoned=np.array([r.cordoned for r in rows], dtype=np.bool_),
            rack=rack,
            site=site,
            rack_names=racks,
            site_names=sites,
            draining=np.array([r.draining for r in rows], dtype=np.bool_),
            health_risk=np.clip(
                np.array([r.health_risk for r in rows], dtype=np.float64), 0.0, 1.0
            ),
            tainted=tainted,
            taint_names=taint_names,
        )

    def __len__(self) -> int:
        return len(self.names)

    def with_allocated(self, allocated: Floats) -> HostTable:
        """The same hosts with other allocations (``(n, 4)``, rows as ``names``); the
        per-host indexes already computed are shared, not rebuilt."""
        if allocated.shape != self.capacity.shape:
            raise ValueError(f"allocated has shape {allocated.shape}, not {self.capacity.shape}")
        table = replace(self, allocated=allocated)
        for cached in ("index", "at_risk", "host_hash"):
            if cached in self.__dict__:
                table.__dict__[cached] = self.__dict__[cached]
        return table

    @cached_property
    def index(self) -> dict[str, int]:
        """Row of each host name."""
        return {name: i for i, name in enumerate(self.names)}

    @cached_property
    def at_risk(self) -> bool:
        """Whether any host has a health risk above zero."""
        return bool(self.health_risk.any())

    @cached_property
    def host_hash(self) -> NDArray[np.uint64]:
        """Stable per-host hashes: tie-breaks do not depend on row order."""
        return np.array([name_hash(n) for n in self.names], dtype=np.uint64)

    def domain(self, spread: Spread) -> tuple[Ints, int]:
        """Per-host domain codes for a spread level, and how many domains there are."""
        if spread is Spread.HOST:
            return np.arange(len(self.names), dtype=np.int64), len(self.names)
        if spread is Spread.RACK:
            return self.rack, len(self.rack_names)
        return self.site, len(self.site_names)


def _codes(values: list[str]) -> tuple[tuple[str, ...], Ints]:
    names = tuple(sorted(set(values)))
    lookup = {v: i for i, v in enumerate(names)}
    return names, np.array([lookup[v] for v in values], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class GuestRequest:
    """One guest to place. ``spread`` applies among guests of the same ``app``.

    ``moving``: the guest ran before (its host was lost); it goes before new guests of
    the same priority, so a failover is not starved by pending guests.
    """

    name: str
    request: Resources
    app: str | None = None
    spread: Spread | None = None
    priority: int = 0
    moving: bool = False
    near: tuple[str, ...] = ()  # hard: hosts that run a guest of one of these apps
    talks_to: tuple[str, ...] = ()  # soft: prefer hosts running these apps
    tolerations: tuple[str, ...] = ()  # KEY or KEY=VALUE: may land on hosts so tainted
    site: str | None = None  # hard: only hosts whose ``site`` label is this (DR: its storage)


@dataclass(frozen=True)
class PlacementRequest:
    """A batch to place on ``hosts``.

    ``placed`` names, per app, the hosts of replicas already placed outside this
    batch (one entry per replica), so spreads account for them; their resources must
    already be in ``hosts.allocated``.
    """

    hosts: HostTable
    guests: Sequence[GuestRequest]
    placed: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Measured traffic between guests, bytes/s, keyed by the sorted pair of guest names
    # (agents' flow accounting); with ``guest_hosts`` (where each already-placed guest
    # runs) the traffic score puts heavy talkers together.
    traffic: Mapping[tuple[str, str], float] = field(default_factory=dict)
    guest_hosts: Mapping[str, str] = field(default_factory=dict)
    # The app of each already-placed guest: a new guest with no traffic of its own is
    # expected to talk like its app's guests do (traffic aggregated to app pairs).
    guest_apps: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlacementResult:
    """Where each guest goes, in placement order (higher priority first), and why not.

    ``unplaced`` maps a guest to a one-line reason, e.g.
    ``"0/8 hosts fit: 5 lacked memory_mib, 3 already hold a replica of app web (spread host)"``.
    """

    placements: dict[str, str]
    unplaced: dict[str, str]
