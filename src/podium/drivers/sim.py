"""SimDriver: an in-process model of one host, for simulating hundreds of hosts at once.

It keeps capacity accounting (a guest that does not fit is refused) and timing (start
and stop take a while), and nothing else: no processes, no threads, a dict and a lock
per host. Delays are drawn from a generator seeded by ``(seed, guest, epoch)``, so a
run replays exactly whatever order the agent starts guests in.

::

    create ──> defined ──start──> starting ──(delay)──> running ──stop──> stopping ──> stopped
                                     │                    │
                                     └──── kill / crash ──┴──────────────────────────> stopped

Live migration is a timed model (:class:`~podium.drivers.LiveMigration`): the target's
``prepare_incoming`` holds capacity (``incoming``) and answers ``sim://<host>/<guest>``;
the source's ``migrate_out`` takes memory / bandwidth seconds, reporting progress, then
leaves its guest ``stopped`` ("migrated to ..."); ``activate`` makes the target run.
Hosts may live in different processes, so the source does not reach into the target.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from podium.drivers._capacity import shortfall
from podium.drivers._protocol import (
    DriverError,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestInfo,
    GuestKilled,
    GuestNotFound,
    InsufficientResources,
    MigrationError,
    MigrationProgress,
    MigrationResult,
)
from podium.drivers._qos import GuestQos
from podium.drivers._sim_traffic import SimTraffic
from podium.drivers._sim_usage import SimUsage
from podium.drivers._usage import Usage
from podium.model import Resources

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
S = DriverGuestState


@dataclass(slots=True)
class _Guest:
    config: GuestConfig
    state: DriverGuestState
    message: str
    since: float
    generation: int = 0  # bumped by every kill/stop, so a start in flight knows it lost
    migrated: MigrationResult | None = None  # the guest left this host (source side)


class SimDriver:
    """A simulated host. See :class:`podium.drivers.Driver` for the contract.

    ``start_delay`` and ``stop_delay`` are ``(low, high)`` seconds, drawn uniformly per
    operation; a migration takes ``memory_mib / migration_mib_s`` seconds, in
    ``MIGRATION_STEPS`` sleeps with a progress report each. ``sleep`` and ``clock`` are
    injectable for tests. ``data_dir`` is accepted (the registry passes it to every
    driver) and ignored: nothing here touches disk.
    """

    kind = "sim"
    MIGRATION_STEPS = 4

    def __init__(
        self,
        *,
        name: str = "sim",
        capacity: Resources,
        start_delay: tuple[float, float] = (0.2, 0.5),
        stop_delay: tuple[float, float] = (0.05, 0.1),
        migration_mib_s: float = 1024.0,
        seed: int = 0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        data_dir: Path | None = None,
        traffic: SimTraffic | None = None,
        usage: SimUsage | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self._start_delay = start_delay
        self._stop_delay = stop_delay
        self._migration_mib_s = migration_mib_s
        self._seed = seed
        self._clock = clock
        self._sleep = sleep
        self._guests: dict[str, _Guest] = {}
        self._lock = threading.Lock()
        self.starts = 0  # how many starts were attempted (tests assert on restarts)
        self.traffic = traffic  # FlowSource model, shared by the hosts of one simulation
        if traffic is not None:
            traffic.attach(self)
        self.usage = usage  # UsageSource model (_sim_usage)

    # -- helpers -------------------------------------------------------------------

    def _delay(self, bounds: tuple[float, float], op: str, config: GuestConfig) -> float:
        low, high = bounds
        if high <= low:
            return low
        key = f"{self._seed}/{op}/{config.name}/{config.epoch}".encode()
        return random.Random(zlib.crc32(key)).uniform(low, high)

    def _info(self, g: _Guest) -> GuestInfo:
        c = g.config
        return GuestInfo(c.name, c.uid, c.epoch, g.state, g.message, g.since)

    def _set(self, g: _Guest, state: DriverGuestState, message: str = "") -> None:
        g.state, g.message, g.since = state, message, self._clock()

    def _get(self, name: str) -> _Guest:
        g = self._guests.get(name)
        if g is None:
            raise GuestNotFound(f"guest {name!r} is not defined on {self.name}")
        return g

    def allocated(self) -> Resources:
        """Resources held by active guests."""
        with self._lock:
            total = Resources()
            for g in self._guests.values():
                if g.state.active:
                    total = total + g.config.request
            return total

    def _shortfall(self, request: Resources) -> str:
        """Empty if ``request`` fits in what is free now (caller holds the lock)."""
        used = (g.config.request for g in self._guests.values() if g.state.active)
        return shortfall(self.name, self.capacity, used, request)

    # -- Driver protocol -------------------------------------------------------------

    async def create(self, config: GuestConfig) -> GuestInfo:
        with self._lock:
            g = self._guests.get(config.name)
            if g is None:
                g = _Guest(config, S.DEFINED, "", self._clock())
                self._guests[config.name] = g
            elif g.config != config:
                if g.state.active:
                    raise GuestBusy(
                        f"guest {config.name!r} runs at epoch {g.config.epoch}; stop it before "
                        f"defining epoch {config.epoch}"
                    )
                g.config = config
            return self._info(g)

    async def start(self, name: str) -> GuestInfo:
        with self._lock:
            g = self._get(name)
            if g.state is S.RUNNING:
                return self._info(g)
            if g.state in (S.STOPPING, S.INCOMING):
                raise GuestBusy(f"guest {name!r} is {g.state.value}; start it once that settles")
            if g.state is not S.STARTING:
                self.starts += 1
                self._claim(g, S.STARTING, "starting")
            generation = g.generation
            delay = self._delay(self._start_delay, "start", g.config)
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            with self._lock:
                if g.generation == generation and g.state is S.STARTING:
                    self._set(g, S.STOPPED, "start cancelled")
            raise
        with self._lock:
            if g.generation != generation or g.state is not S.STARTING:
                raise GuestKilled(f"guest {name!r} was stopped while starting ({g.message})")
            self._set(g, S.RUNNING)
            return self._info(g)

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        with self._lock:
            g = self._guests.get(name)
            if g is None:
                return None
            if not g.state.active:
                return self._info(g)
            g.generation += 1
            generation = g.generation
            self._set(g, S.STOPPING, "stopping")
            delay = self._delay(self._stop_delay, "stop", g.config)
        try:
            await self._sleep(min(delay, timeout))
        finally:
            with self._lock:
                if g.generation == generation and g.state is S.STOPPING:
                    self._set(g, S.STOPPED, "stopped")
        return self._info(g)

    def kill(self, name: str) -> None:
        with self._lock:
            g = self._guests.get(name)
            if g is not None and g.state.active:
                g.generation += 1
                self._set(g, S.STOPPED, "killed")

    def kill_all(self) -> builtins.list[str]:
        with self._lock:
            killed = []
            for g in self._guests.values():
                if g.state.active:
                    g.generation += 1
                    self._set(g, S.STOPPED, "killed (host fenced)")
                    killed.append(g.config.name)
            return killed

    async def destroy(self, name: str) -> None:
        with self._lock:
            g = self._guests.get(name)
            if g is None:
                return
            if g.state.active:
                raise GuestBusy(f"guest {name!r} is {g.state.value}; stop it before destroying it")
            del self._guests[name]

    async def list(self) -> builtins.list[GuestInfo]:
        with self._lock:
            return [self._info(self._guests[n]) for n in sorted(self._guests)]

    async def status(self, name: str) -> GuestInfo | None:
        with self._lock:
            g = self._guests.get(name)
            return self._info(g) if g else None

    def running_configs(self) -> builtins.list[GuestConfig]:
        """The configs of the guests running now (for :class:`SimTraffic`)."""
        with self._lock:
            return [g.config for g in self._guests.values() if g.state is S.RUNNING]

    async def flow_counters(self) -> dict[tuple[str, str], int] | None:
        """See :class:`~podium.drivers.FlowSource`: the ``traffic`` model's counters;
        ``None`` without a model."""
        return None if self.traffic is None else self.traffic.counters(self.name)

    async def guest_usage(self) -> dict[str, Resources | dict[str, float]] | None:
        """See :class:`~podium.drivers.UsageSource`: the ``usage`` model's figures for the
        running guests; ``None`` without a model."""
        if self.usage is None:
            return None
        measured: dict[str, Usage] = self.usage.usage(self.running_configs())
        return dict(measured)

    def _claim(self, g: _Guest, state: DriverGuestState, message: str) -> None:
        """Check capacity and make ``g`` active in ``state`` (caller holds the lock)."""
        short = self._shortfall(g.config.request)
        if short:
            self._set(g, S.FAILED, short)
            raise InsufficientResources(f"cannot start {g.config.name}: {short}")
        g.generation += 1
        g.migrated = None
        self._set(g, state, message)

    # -- LiveMigration -------------------------------------------------------------------

    async def prepare_incoming(self, config: GuestConfig, *, listen: str) -> str:
        """See :class:`~podium.drivers.LiveMigration`; ``listen`` is ignored (nothing listens)."""
        uri = f"sim://{self.name}/{config.name}"
        with self._lock:
            g = self._guests.get(config.name)
            if g is not None and g.config == config and g.state is S.INCOMING:
                return uri
        await self.create(config)
        with self._lock:
            g = self._get(config.name)
            if g.state.active:
                raise GuestBusy(f"guest {g.config.name!r} is {g.state.value}; not a destination")
            self._claim(g, S.INCOMING, f"waiting for a migration on {uri}")
        return uri

    async def migrate_out(
        self,
        name: str,
        uri: str,
        *,
        on_progress: Callable[[MigrationProgress], None] | None = None,
        stall_timeout: float = 30.0,
    ) -> MigrationResult:
        """See :class:`~podium.drivers.LiveMigration`. Only ``sim://`` URIs are reachable;
        a kill or stop during the transfer fails it."""
        with self._lock:
            g = self._get(name)
            if g.migrated is not None and g.migrated.uri == uri and not g.state.active:
                return g.migrated
            if g.state is not S.RUNNING:
                raise MigrationError(f"guest {name!r} is {g.state.value}, not running")
            if not uri.startswith("sim://"):
                raise MigrationError(f"guest {name!r}: cannot reach {uri!r} (sim://HOST/GUEST)")
            generation = g.generation
            total = int(g.config.request.memory_mib) * 1024 * 1024
        seconds = total / (self._migration_mib_s * 1024 * 1024)
        steps = self.MIGRATION_STEPS
        for step in range(1, steps + 1):
            await self._sleep(seconds / steps)
            with self._lock:
                if g.generation != generation or g.state is not S.RUNNING:
                    raise MigrationError(f"guest {name!r} was {g.message} while migrating")
            if on_progress is not None:
                sent = total * step // steps
                elapsed = seconds * step / steps * 1000
                status = "completed" if step == steps else "active"
                on_progress(MigrationProgress(status, sent, total - sent, total, 0.0, 1.0, elapsed))
        result = MigrationResult(uri, seconds * 1000, 1.0, total)
        with self._lock:
            g.generation += 1
            g.migrated = result
            self._set(g, S.STOPPED, f"migrated to {uri}")
        return result

    async def activate(self, name: str) -> GuestInfo:
        """See :class:`~podium.drivers.LiveMigration`. The model cannot see the source, so
        an incoming guest is taken as completed."""
        with self._lock:
            g = self._get(name)
            if g.state is S.INCOMING:
                self._set(g, S.RUNNING)
            elif g.state is not S.RUNNING:
                raise MigrationError(f"guest {name!r} is {g.state.value}, not incoming")
            return self._info(g)

    # -- simulation controls (not part of the Driver protocol) ---------------------------

    def crash(self, name: str | None = None) -> None:
        """A guest dies on its own (``name``), or the whole host does (every guest)."""
        with self._lock:
            victims = [self._guests[name]] if name in self._guests else []
            if name is None:
                victims = builtins.list(self._guests.values())
            for g in victims:
                if g.state.active:
                    g.generation += 1
                    self._set(g, S.FAILED, "crashed")

    def qos(self, name: str) -> GuestQos | None:
        """The limits and shares an active guest is held to (its spec's ``qos``; the model
        keeps them for simulations and tests, and enforces nothing), else None."""
        with self._lock:
            g = self._guests.get(name)
            return GuestQos.of(g.config.spec) if g is not None and g.state.active else None

    def running_uids(self) -> builtins.list[str]:
        """Uids of guests running now (to hunt double runs across simulated hosts)."""
        with self._lock:
            return [g.config.uid for g in self._guests.values() if g.state is S.RUNNING]

    def snapshot(self) -> dict[str, GuestInfo]:
        """Every guest, synchronously (for tests and the demo's invariant checks)."""
        with self._lock:
            return {n: self._info(g) for n, g in self._guests.items()}


__all__ = ["DriverError", "SimDriver"]
