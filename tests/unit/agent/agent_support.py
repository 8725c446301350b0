"""Fakes for agent tests: the server's agent endpoints, drivers, and the control plane's
part of a live migration (docs/contracts.md, "Issue 3 contracts")."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from podium.agent import FenceReport, LeaseExpired, LinkError, Registration
from podium.drivers import (
    BackupError,
    BackupRequest,
    BackupResult,
    DriverGuestState,
    GuestBusy,
    GuestConfig,
    GuestInfo,
    GuestKilled,
    GuestNotFound,
    MigrationError,
    MigrationProgress,
    MigrationResult,
    SimDriver,
)
from podium.model import Resources
from tests.support.tasks import running

CAPACITY = Resources(cpu=8, memory_mib=8192, iops=1000, net_mbps=1000)
SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 256}, "running": True}


class FakeLink:
    """The agent endpoints of docs/contracts.md, over dicts. Knobs simulate faults."""

    def __init__(self, *, ttl: int = 10, interval: float = 0.05) -> None:
        self.ttl = ttl
        self.interval = interval
        self.lease = 0
        self.registrations = 0
        self.pings = 0
        self.on_ping: Callable[[], None] = lambda: None  # e.g. a slow connection: clock moves
        self.fence_reports: list[FenceReport | None] = []  # per registration, in order
        self.keepalives = 0
        self.revision = 1
        self.assigned: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []  # watch lines, in revision order
        self.compacted = 0  # lines below this revision are gone
        self.changed = asyncio.Event()
        self.list_calls = 0
        self.watch_from: list[int] = []
        self.reports: list[dict[str, Any]] = []  # accepted reports, in order
        self.rejected: list[dict[str, Any]] = []
        self.reject: set[str] = set()
        self.down = False  # every call raises LinkError
        self.keepalive_down = False  # only keepalives fail
        self.register_down = False  # only registrations fail
        self.list_down = False  # only assignment lists fail
        self.tokens: list[str] = []
        self.closed = False
        # Live migration, backup and console endpoints: every call, in order.
        self.migration_reports: list[dict[str, Any]] = []
        self.backup_reports: list[dict[str, Any]] = []
        self.consoles: list[tuple[float, str, str]] = []  # (monotonic time, guest, text)
        self.answer_migration: Callable[[dict[str, Any]], dict[str, Any]] = _accept
        self.answer_backup: Callable[[dict[str, Any]], dict[str, Any]] = _accept
        self.console_down = False  # only console pushes fail
        self.traffic_reports: list[tuple[str, dict[str, Any]]] = []  # (host, body), in order
        self._generation = 0  # bumped to drop open watch streams
        self.error_once = False

    # -- knobs -------------------------------------------------------------------------

    def _bump(self, line: dict[str, Any]) -> None:
        self.revision += 1
        line["revision"] = self.revision
        self.log.append(line)
        self.changed.set()
        self.changed = asyncio.Event()

    def assign(
        self,
        guest: str,
        epoch: int = 1,
        *,
        uid: str | None = None,
        extras: Mapping[str, Any] | None = None,
        **spec: Any,
    ) -> None:
        """Put an assignment; ``extras``: its ``incoming``/``migrate``/``backup`` keys."""
        a = {"guest": guest, "uid": uid or f"uid-{guest}", "epoch": epoch, "spec": {**SPEC, **spec}}
        a.update(extras or {})
        self.assigned[guest] = a
        self._bump({"type": "PUT", "assignment": a})

    def unassign(self, guest: str) -> None:
        del self.assigned[guest]
        self._bump({"type": "DELETE", "guest": guest})

    def drop_streams(self) -> None:
        """Every open watch stream ends (as when a proxy closes idle connections)."""
        self._generation += 1
        self.changed.set()
        self.changed = asyncio.Event()

    def compact(self) -> None:
        self.compacted = self.revision + 1
        self.drop_streams()

    def relist(self) -> None:
        """The open watch ends with ERROR once: the agent lists everything again."""
        self.error_once = True
        self.drop_streams()

    def states(self, guest: str) -> list[str]:
        return [r["state"] for r in self.reports if r["guest"] == guest]

    def migration_states(self, role: str | None = None) -> list[str]:
        return [r["state"] for r in self.migration_reports if role in (None, r["role"])]

    # -- ServerLink ----------------------------------------------------------------------

    def _check(self) -> None:
        if self.down:
            raise LinkError("server unreachable (fake)")

    async def ping(self) -> None:
        self._check()
        if self.register_down:
            raise LinkError("no answer (fake)")
        self.pings += 1
        self.on_ping()

    async def register(
        self,
        name: str,
        capacity: dict[str, Any],
        labels: dict[str, Any],
        driver: str,
        agent_version: str,
        *,
        fenced: FenceReport | None = None,
    ) -> Registration:
        self._check()
        if self.register_down:
            raise LinkError("register timed out (fake)")
        self.fence_reports.append(fenced)
        self.registrations += 1
        self.lease += 1
        token = "pdm_agent_fake" if self.registrations == 1 else None
        return Registration(token, self.lease, self.ttl, self.interval)

    async def keepalive(self, host: str, lease: int) -> int:
        self._check()
        if self.keepalive_down:
            raise LinkError("keepalive timed out (fake)")
        if lease != self.lease:
            raise LeaseExpired("lease expired: register again")
        self.keepalives += 1
        return self.ttl

    async def assignments(self, host: str) -> tuple[list[dict[str, Any]], int]:
        self._check()
        if self.list_down:
            raise LinkError("assignments timed out (fake)")
        self.list_calls += 1
        return list(self.assigned.values()), self.revision

    async def watch_assignments(
        self, host: str, from_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        self._check()
        self.watch_from.append(from_revision)
        generation = self._generation
        if from_revision < self.compacted or self.error_once:
            self.error_once = False
            yield {"type": "ERROR", "error": "compacted: list again"}
            return
        sent = from_revision - 1
        while generation == self._generation:
            changed = self.changed
            for line in self.log:
                if line["revision"] > sent:
                    sent = line["revision"]
                    yield line
            if generation != self._generation:
                return
            await changed.wait()

    async def report(self, host: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        self._check()
        accepted, rejected = [], []
        for r in reports:
            a = self.assigned.get(r["guest"])
            # as the server: a migration target does not hold the binding yet
            stale = a is None or a["epoch"] != r["epoch"] or "incoming" in a
            if r["guest"] in self.reject or stale:
                rejected.append({"guest": r["guest"], "reason": "stale epoch"})
                self.rejected.append(r)
            else:
                accepted.append(r["guest"])
                self.reports.append(r)
        return {"accepted": accepted, "rejected": rejected}

    async def report_migration(self, host: str, report: dict[str, Any]) -> dict[str, Any]:
        self._check()
        self.migration_reports.append(report)
        return self.answer_migration(report)

    async def report_backup(self, host: str, report: dict[str, Any]) -> dict[str, Any]:
        self._check()
        self.backup_reports.append(report)
        return self.answer_backup(report)

    async def push_console(self, host: str, guest: str, text: str) -> None:
        self._check()
        if self.console_down:
            raise LinkError("console push timed out (fake)")
        self.consoles.append((time.monotonic(), guest, text))

    async def report_traffic(self, host: str, report: dict[str, Any]) -> None:
        self._check()
        self.traffic_reports.append((host, report))

    async def close(self) -> None:
        self.closed = True


def _accept(report: dict[str, Any]) -> dict[str, Any]:
    return {"accepted": True, "reason": ""}


class LoggingDriver(SimDriver):
    """A SimDriver that logs every call, to assert operation sequences."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("name", "h1")
        kwargs.setdefault("capacity", CAPACITY)
        kwargs.setdefault("start_delay", (0.01, 0.02))
        kwargs.setdefault("stop_delay", (0.0, 0.01))
        super().__init__(**kwargs)
        self.calls: list[tuple[str, str]] = []

    async def create(self, config: GuestConfig) -> GuestInfo:
        self.calls.append(("create", f"{config.name}@{config.epoch}"))
        return await super().create(config)

    async def start(self, name: str) -> GuestInfo:
        self.calls.append(("start", name))
        return await super().start(name)

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        self.calls.append(("stop", name))
        return await super().stop(name, timeout=timeout)

    async def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        await super().destroy(name)

    def ops(self, guest: str) -> list[str]:
        return [op for op, g in self.calls if g.split("@")[0] == guest]

    def running(self) -> list[str]:
        return sorted(n for n, g in self.snapshot().items() if g.state.value == "running")


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


# -- drivers with live migration, backup and console ---------------------------------------

S = DriverGuestState


class Fabric:
    """The network between fake hosts: incoming migrations by URI, and a one-runner check.

    Every time a guest starts running anywhere, ``violations`` records it if another
    host already runs it (invariant 1), so a test checks every transition, not samples.
    """

    def __init__(self) -> None:
        self.hosts: list[FakeHost] = []
        self.listeners: dict[str, tuple[FakeHost, str]] = {}
        self.violations: list[str] = []
        self.ports = 49152

    def runners(self, guest: str) -> list[str]:
        return [h.name for h in self.hosts if h.state(guest) is S.RUNNING]

    def check(self, guest: str) -> None:
        if len(self.runners(guest)) > 1:
            self.violations.append(f"{guest} runs on {self.runners(guest)}")


@dataclass(slots=True)
class _FakeGuest:
    config: GuestConfig
    state: DriverGuestState
    message: str = ""
    generation: int = 0
    uri: str = ""  # incoming: where it listens
    received: bool = False  # incoming: the migration completed


class FakeHost:
    """A minimal Driver (no capacity, short delays), one per host on a :class:`Fabric`."""

    def __init__(self, name: str, fabric: Fabric, *, kind: str = "fake") -> None:
        self.name = name
        self.kind = kind
        self.fabric = fabric
        fabric.hosts.append(self)
        self.guests: dict[str, _FakeGuest] = {}
        self.calls: list[tuple[str, str]] = []
        self.delay = 0.01

    def state(self, name: str) -> DriverGuestState | None:
        g = self.guests.get(name)
        return g.state if g else None

    def ops(self, guest: str) -> list[str]:
        return [op for op, g in self.calls if g == guest]

    def _info(self, g: _FakeGuest) -> GuestInfo:
        c = g.config
        return GuestInfo(c.name, c.uid, c.epoch, g.state, g.message)

    def _get(self, name: str) -> _FakeGuest:
        if name not in self.guests:
            raise GuestNotFound(f"{name} is not defined on {self.name}")
        return self.guests[name]

    def _run(self, g: _FakeGuest) -> None:
        g.state, g.message = S.RUNNING, ""
        self.fabric.check(g.config.name)

    async def create(self, config: GuestConfig) -> GuestInfo:
        self.calls.append(("create", config.name))
        g = self.guests.get(config.name)
        if g is not None and g.config != config and g.state.active:
            raise GuestBusy(f"{config.name} is active")
        if g is None or g.config != config:
            g = self.guests[config.name] = _FakeGuest(config, S.DEFINED)
        return self._info(g)

    async def start(self, name: str) -> GuestInfo:
        self.calls.append(("start", name))
        g = self._get(name)
        if g.state is S.RUNNING:
            return self._info(g)
        g.generation += 1
        generation = g.generation
        g.state = S.STARTING
        await asyncio.sleep(self.delay)
        if g.generation != generation:
            raise GuestKilled(f"{name} was killed while starting")
        self._run(g)
        return self._info(g)

    async def stop(self, name: str, *, timeout: float = 30.0) -> GuestInfo | None:
        self.calls.append(("stop", name))
        g = self.guests.get(name)
        if g is None:
            return None
        if g.state.active:
            g.generation += 1
            g.state, g.message = S.STOPPED, "stopped"
        return self._info(g)

    def kill(self, name: str) -> None:
        g = self.guests.get(name)
        if g is not None and g.state.active:
            g.generation += 1
            g.state, g.message = S.STOPPED, "killed"

    def kill_all(self) -> builtins.list[str]:
        killed = [n for n, g in self.guests.items() if g.state.active]
        for name in killed:
            self.kill(name)
        return killed

    async def destroy(self, name: str) -> None:
        self.calls.append(("destroy", name))
        g = self.guests.get(name)
        if g is not None and g.state.active:
            raise GuestBusy(f"{name} is active")
        self.guests.pop(name, None)

    async def list(self) -> builtins.list[GuestInfo]:
        return [self._info(self.guests[n]) for n in sorted(self.guests)]

    async def status(self, name: str) -> GuestInfo | None:
        g = self.guests.get(name)
        return self._info(g) if g else None


class MigratingHost(FakeHost):
    """A :class:`FakeHost` that is also LiveMigration, BlockBackup and ConsoleSource.

    Knobs: ``fail_prepare``/``fail_migrate``/``fail_backup`` (a message: that call
    raises), ``hold`` (migrate_out waits for it after its first progress sample),
    ``steps`` progress samples ``step_delay`` apart, ``console_text`` per guest.
    """

    def __init__(self, name: str, fabric: Fabric, *, kind: str = "fake") -> None:
        super().__init__(name, fabric, kind=kind)
        self.fail_prepare = ""
        self.fail_migrate = ""
        self.fail_backup = ""
        self.backup_requests: list[BackupRequest] = []
        self.hold: asyncio.Event | None = None
        self.steps = 5
        self.step_delay = 0.01
        self.console_text: dict[str, str] = {}
        self.results: dict[str, MigrationResult] = {}  # guest -> its completed migration

    async def prepare_incoming(self, config: GuestConfig, *, listen: str) -> str:
        self.calls.append(("prepare_incoming", config.name))
        g = self.guests.get(config.name)
        if g is not None and g.config == config and g.state is S.INCOMING:
            return g.uri  # idempotent
        if self.fail_prepare:
            raise MigrationError(self.fail_prepare)
        if g is not None and g.state.active:
            raise GuestBusy(f"{config.name} is active")
        self.fabric.ports += 1
        uri = f"tcp:{listen}:{self.fabric.ports}"
        self.guests[config.name] = _FakeGuest(config, S.INCOMING, "incoming", uri=uri)
        self.fabric.listeners[uri] = (self, config.name)
        return uri

    async def migrate_out(
        self,
        name: str,
        uri: str,
        *,
        on_progress: Callable[[MigrationProgress], None] | None = None,
        stall_timeout: float = 30.0,
    ) -> MigrationResult:
        self.calls.append(("migrate_out", name))
        g = self._get(name)
        if g.state is S.STOPPED and name in self.results:
            return self.results[name]  # completed before: the same result again
        if g.state is not S.RUNNING:
            raise MigrationError(f"{name} is not running")
        target, target_guest = self.fabric.listeners[uri]
        generation = g.generation
        total = 1000 * self.steps
        for i in range(1, self.steps + 1):
            await asyncio.sleep(self.step_delay)
            if g.generation != generation:
                raise MigrationError(f"{name} was killed while migrating")
            if on_progress is not None:
                on_progress(
                    MigrationProgress("active", 1000 * i, total - 1000 * i, total, 0.0, 5.0, i)
                )
            if self.hold is not None:
                await self.hold.wait()
            if self.fail_migrate:
                raise MigrationError(self.fail_migrate)  # the source keeps running
        incoming = target.guests.get(target_guest)
        if incoming is None or incoming.state is not S.INCOMING:
            raise MigrationError(f"nothing listens at {uri} any more")
        g.generation += 1
        g.state, g.message = S.STOPPED, f"migrated to {uri}"  # the source QEMU is gone
        incoming.received = True
        self.results[name] = MigrationResult(uri, 10.0 * self.steps, 3.0, total)
        return self.results[name]

    async def activate(self, name: str) -> GuestInfo:
        self.calls.append(("activate", name))
        g = self._get(name)
        if g.state is not S.INCOMING or not g.received:
            raise MigrationError(f"the incoming migration of {name} has not completed")
        self._run(g)
        return self._info(g)

    async def backup(
        self,
        name: str,
        request: BackupRequest,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> BackupResult:
        self.calls.append(("backup", name))
        self.backup_requests.append(request)
        if self._get(name).state is not S.RUNNING:
            raise BackupError(f"{name} is not running")
        for i in range(1, self.steps + 1):
            await asyncio.sleep(self.step_delay)
            if on_progress is not None:
                on_progress(100 * i, 100 * self.steps)
            if self.fail_backup:
                raise BackupError(self.fail_backup)
        base = f"/{'backups' if request.target == 'local' else request.target}/{name}"
        path = f"{base}/{request.id}.qcow2"
        luns = {
            v: f"{base}/{v.replace('/', '+')}/{request.id}.qcow2" for v in request.parent_volumes
        }
        return BackupResult(request.id, path, request.mode, 100 * self.steps, 1.0, luns)

    def console(self, name: str) -> str:
        return self.console_text.get(name, "")


class FakeControlPlane:
    """The control plane's side of one live migration, over one fake link per host.

    ``start`` puts the target's incoming assignment; ``ready`` gives the source its
    ``migrate``; ``completed`` flips the binding (deletes the source assignment, drops
    ``incoming``); ``failed`` drops the target assignment and ``migrate``. ``flip``
    false: accept the source's outcome but leave the assignments as they are (a slow
    control plane). ``phases`` records what happened, in order.
    """

    def __init__(self, links: Mapping[str, FakeLink], *, flip: bool = True) -> None:
        self.links = dict(links)
        self.flip = flip
        self.phases: list[str] = []
        self.id = ""
        self.guest = self.source = self.target = ""
        self.epoch = 0
        for host, link in self.links.items():
            link.answer_migration = self._answerer(host)

    def start(self, guest: str, source: str, target: str, mid: str = "m1") -> None:
        a = self.links[source].assigned[guest]
        self.id, self.guest, self.source, self.target = mid, guest, source, target
        self.epoch = int(a["epoch"])
        incoming = {"incoming": {"id": mid, "source": source}}
        self.links[target].assign(guest, self.epoch + 1, uid=a["uid"], extras=incoming)
        self.phases.append("preparing")

    def cancel(self) -> None:
        a = self.links[self.source].assigned[self.guest]
        migrate = {"id": self.id, "to": self.target, "cancel": True}
        self._put(self.source, a, migrate=migrate)

    def _put(self, host: str, a: dict[str, Any], **extras: Any) -> None:
        keep = {k: v for k, v in a.items() if k not in ("guest", "epoch", "uid", "spec")}
        for key in ("incoming", "migrate"):
            keep.pop(key, None)
        keep.update(extras)
        spec = {k: v for k, v in a["spec"].items() if k not in SPEC}
        self.links[host].assign(a["guest"], a["epoch"], uid=a["uid"], extras=keep, **spec)

    def _answerer(self, host: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def answer(report: dict[str, Any]) -> dict[str, Any]:
            done = self.phases[-1:] in (["completed"], ["failed"])
            if report["id"] != self.id or done:
                return {"accepted": False, "reason": "stale"}
            state = report["state"]
            if state == "ready" and host == self.target:
                self.phases.append("transferring")
                a = self.links[self.source].assigned[self.guest]
                migrate = {"id": self.id, "to": self.target, "uri": report["uri"]}
                self._put(self.source, a, migrate=migrate)
            elif state == "completed" and host == self.source:
                self.phases.append("completed")
                if self.flip:
                    self.links[self.source].unassign(self.guest)
                    self._put(self.target, self.links[self.target].assigned[self.guest])
            elif state == "failed":
                self.phases.append("failed")
                if self.flip:
                    if self.guest in self.links[self.target].assigned:
                        self.links[self.target].unassign(self.guest)
                    self._put(self.source, self.links[self.source].assigned[self.guest])
            return {"accepted": True, "reason": ""}

        return answer


@contextlib.asynccontextmanager
async def running_agent(agent: Any) -> AsyncIterator[None]:
    """Run ``agent`` for the ``async with`` block; cancel it and wait for it after."""
    async with running(agent.run()):
        yield
