"""The host agent: hold the host lease, run what is assigned here, report what runs.

Live migration, as the two agents see it (the control plane drives it through their
assignments; docs/contracts.md, "Issue 3 contracts")::

    target agent                                 source agent
    assignment e+1 + incoming ──> prepare_incoming (paused, -S)
                                  report ready {uri} ──> CP: source assignment + migrate
                                                         migrate_out(uri) ── progress /0.5 s
                                                         source gone ──> report completed
    CP flips the binding to e+1, deletes the source assignment, drops incoming
    incoming gone ──> activate ──> running at e+1           stopped, never restarted at e
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn

import podium
from podium._aio import supervise
from podium.agent._link import FenceReport, LeaseExpired, LinkError, Registration, ServerLink
from podium.agent._longops import Cancelled, Outgoing, keep_last, pump, send_final, tail
from podium.agent._plan import (
    Activate,
    CancelMigration,
    LocalAction,
    MigrateOut,
    PrepareIncoming,
    RunBackup,
    StartGuest,
    StopGuest,
    plan_local,
    reports,
)
from podium.agent._routes import NetworkRouter, RuleSource, routes_loop
from podium.agent._traffic import DEFAULT_INTERVAL as DEFAULT_TRAFFIC_INTERVAL
from podium.agent._traffic import check_interval, traffic_loop
from podium.agent._usage import DEFAULT_INTERVAL as DEFAULT_USAGE_INTERVAL
from podium.agent._usage import UsageReports, usage_loop
from podium.agent._usage import check_interval as check_usage_interval
from podium.agent._watchdog import DEFAULT_WATCHDOG, Fence, Watchdog
from podium.drivers import (
    BackupRequest,
    BlockBackup,
    ConsoleSource,
    Driver,
    DriverError,
    DriverGuestState,
    FlowSource,
    GuestConfig,
    GuestInfo,
    LiveMigration,
    MigrationProgress,
    UsageSource,
)
from podium.model import Resources

log = logging.getLogger("podium.agent")

JSON = dict[str, Any]

CONSOLE_TAIL = 16 * 1024  # bytes of console text pushed per guest (the server keeps this much)
_HANDLED_KEPT = 4096  # migration/backup ids remembered (each runs at most once per agent)


class AgentState(enum.StrEnum):
    """The agent's run state (``Agent.history`` keeps the recent transitions)."""

    STARTING = "starting"  # adopting what the driver already runs
    REGISTERING = "registering"  # no lease: registering (again)
    ACTIVE = "active"  # lease held: watching assignments, reconciling, reporting
    FENCED = "fenced"  # renewal overdue or lease lost: every guest killed, nothing reported
    STOPPED = "stopped"  # run() returned or was cancelled


class _SessionEnded(Exception):
    """The current registration is over (fenced or lease expired): register again."""


def _end_session(reason: str) -> NoReturn:
    raise _SessionEnded(reason)


class Agent:
    """One host's agent. ``await run()`` until cancelled.

    Cancelling ``run`` leaves guests running (a restarted agent adopts them); an
    unexpected error fences first (kills every guest), since no one renews the lease
    any more. Every ``clock`` reading (fencing deadlines, retry times) comes from the
    injected ``clock``; ``on_host_token`` receives the host's own token when the
    server mints one at the first registration (persist it).

    ``migration_address``: the address incoming live migrations listen on (this host's
    address on the network the other hosts reach; ``podium agent --migration-address``);
    ``None`` refuses incoming migrations. Migration and backup progress is reported at
    most every ``progress_interval`` s; console tails are pushed at most every
    ``console_interval`` s per guest, if the driver is a ``ConsoleSource``. Traffic
    between guests is reported every ``traffic_interval`` s if the driver is a
    ``FlowSource`` (``_traffic``); what each guest uses is measured every
    ``usage_interval`` s and sent with its status when it moved, if the driver is a
    ``UsageSource`` (``_usage``). With a ``router`` (``podium agent --router-netns``),
    the host routes between the networks that network rules allow, following the
    server's list every ``resync_interval`` s (``_routes``).
    """

    def __init__(
        self,
        name: str,
        link: ServerLink,
        driver: Driver,
        *,
        capacity: Resources,
        labels: Mapping[str, str] | None = None,
        taints: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_host_token: Callable[[str], None] | None = None,
        safety_margin: float | None = None,
        watchdog: Watchdog | None = None,
        resync_interval: float = 5.0,
        report_interval: float = 0.05,
        stop_timeout: float = 30.0,
        max_backoff: float = 5.0,
        migration_address: str | None = None,
        progress_interval: float = 0.5,
        console_interval: float = 2.0,
        traffic_interval: float = DEFAULT_TRAFFIC_INTERVAL,
        usage_interval: float = DEFAULT_USAGE_INTERVAL,
        router: NetworkRouter | None = None,
    ) -> None:
        self.name = name
        self.link = link
        self.driver = driver
        self.capacity = capacity
        self.labels = dict(labels or {})
        self.taints = dict(taints or {})
        self._clock = clock
        self._on_host_token = on_host_token
        self._safety_margin = safety_margin
        self._watchdog = watchdog or DEFAULT_WATCHDOG
        self._resync_interval = resync_interval
        self._report_interval = report_interval
        self._stop_timeout = stop_timeout
        self._max_backoff = max_backoff
        self.migration_address = migration_address
        self._progress_interval = progress_interval
        self._console_interval = console_interval
        self._traffic_interval = check_interval(traffic_interval)
        self._usage_interval = check_usage_interval(usage_interval)
        self._usage = UsageReports()
        self.router = router
        self.state = AgentState.STOPPED
        self.history: collections.deque[AgentState] = collections.deque(maxlen=256)
        self.registration: Registration | None = None
        self.fence = Fence(name, clock, driver.kill_all, self._wake_from_thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fenced_event = asyncio.Event()
        self._dirty = asyncio.Event()
        self._report_dirty = asyncio.Event()
        self._desired: dict[str, JSON] = {}
        self._rejected: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._last_reported: dict[str, tuple[int, str, str]] = {}
        self._ops: dict[str, asyncio.Task[None]] = {}
        self._listed = False  # this session listed its assignments (desired is not a guess)
        # Migration and backup ids run (or refused) here, kept across sessions so a
        # re-listed assignment never runs one twice.
        self._handled: dict[str, None] = {}
        self._outgoing: dict[str, Outgoing] = {}  # guest -> its migrate_out in flight
        # guest -> (uid, epoch) it migrated away at: never started again at that epoch.
        # Forgotten only when the server says the assignment changed or went away.
        self._migrated: dict[str, tuple[str, int]] = {}

    # -- run state -----------------------------------------------------------------------

    def _enter(self, state: AgentState) -> None:
        if state is not self.state:
            log.info("agent %s: %s -> %s", self.name, self.state.value, state.value)
        self.state = state
        self.history.append(state)

    def _wake_from_thread(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._fenced_event.set)

    def _kick(self) -> None:
        self._dirty.set()

    # -- main loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Register, then hold the lease and reconcile; register again after a fence."""
        self._loop = asyncio.get_running_loop()
        self._enter(AgentState.STARTING)
        adopted = await self.driver.list()
        if adopted:
            log.info("agent %s adopts %d guest(s) already on the host", self.name, len(adopted))
        self._watchdog.add(self.fence)
        try:
            while True:
                registration = await self._register()
                try:
                    async with asyncio.TaskGroup() as tg:
                        supervise(tg, self._sync_assignments(), name=f"{self.name}-assignments")
                        supervise(tg, self._reconcile_loop(tg), name=f"{self.name}-reconcile")
                        supervise(tg, self._report_loop(), name=f"{self.name}-report")
                        if isinstance(self.driver, ConsoleSource):
                            supervise(
                                tg,
                                self._console_loop(self.driver),
                                name=f"{self.name}-console",
                            )
                        if isinstance(self.driver, FlowSource):
                            traffic = traffic_loop(
                                self.name,
                                self.link,
                                self.driver,
                                interval=self._traffic_interval,
                                clock=self._clock,
                                fenced=self.fence.is_fenced,
                            )
                            supervise(tg, traffic, name=f"{self.name}-traffic")
                        if isinstance(self.driver, UsageSource):
                            usage = usage_loop(
                                self.name,
                                self.driver,
                                self._usage,
                                interval=self._usage_interval,
                                fenced=self.fence.is_fenced,
                                wake=self._report_dirty.set,
                            )
                            supervise(tg, usage, name=f"{self.name}-usage")
                        if self.router is not None and isinstance(self.link, RuleSource):
                            rules = routes_loop(
                                self.name, self.link, self.router, interval=self._resync_interval
                            )
                            supervise(tg, rules, name=f"{self.name}-routes")
                        _end_session(await self._hold_lease(registration))
                except* _SessionEnded as group:
                    log.warning("agent %s: %s; registering again", self.name, group.exceptions[0])
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            self.fence.fire("agent stopped on an error")
            raise _unwrap(err) from None
        finally:
            self._watchdog.remove(self.fence)
            self._enter(AgentState.STOPPED)

    async def _backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(self._max_backoff, 0.1 * 2**attempt))

    async def _register(self) -> Registration:
        self._enter(AgentState.REGISTERING)
        attempt = 0
        while True:
            try:
                if self._fence_report(self._clock()) is not None:
                    # The fence's age is measured when the report is sent; a first
                    # connection may take seconds to open (or fail), which would age it
                    # wrongly on the server's timeline. Register over a link that answers.
                    await self.link.ping()
                sent = self._clock()
                extra: dict[str, Any] = {"taints": dict(self.taints)} if self.taints else {}
                reg = await self.link.register(
                    self.name,
                    self.capacity.to_dict(),
                    dict(self.labels),
                    self.driver.kind,
                    podium.__version__,
                    fenced=self._fence_report(sent),
                    **extra,  # only when tainted: links that predate taints still work
                )
            except LinkError as err:
                log.warning("agent %s: cannot register (%s); retrying", self.name, err)
                await self._backoff(attempt)
                attempt += 1
                continue
            if reg.host_token and self._on_host_token is not None:
                self._on_host_token(reg.host_token)
            self.registration = reg
            self.fence.arm(sent + reg.ttl - self._margin(reg))
            self.fence.clear()
            self._fenced_event.clear()
            self._desired = {}
            self._listed = False
            self._rejected.clear()
            self._last_reported.clear()
            self._enter(AgentState.ACTIVE)
            log.info("agent %s registered (lease %x, ttl %d s)", self.name, reg.lease, reg.ttl)
            return reg

    def _fence_report(self, now: float) -> FenceReport | None:
        """Why and how long ago this host fenced itself, if it did since registering."""
        fired_at = self.fence.fired_at
        if not self.fence.is_fenced() or fired_at is None:
            return None
        return FenceReport(self.fence.reason, max(0.0, now - fired_at), self.fence.killed)

    def _margin(self, reg: Registration) -> float:
        """How long before the server could expire the lease the host fences itself.

        The server's lease runs from when it received the keepalive, which is after we
        sent it: fencing at ``sent + ttl - margin`` leaves ``margin`` for watchdog ticks
        and killing. Default: a fifth of the TTL, at least half a second.
        """
        if self._safety_margin is not None:
            return self._safety_margin
        return max(0.5, reg.ttl * 0.2)

    async def _hold_lease(self, reg: Registration) -> str:
        """Keep the lease alive; return why the session ended (fenced or lease expired)."""
        interval = reg.keepalive_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._fenced_event.wait()
            if self.fence.is_fenced():
                self._enter(AgentState.FENCED)
                return f"fenced: {self.fence.reason}"
            sent = self._clock()
            try:
                async with asyncio.timeout(max(reg.keepalive_interval, 1.0)):
                    await self.link.keepalive(self.name, reg.lease)
            except LeaseExpired:
                self.fence.fire("the server says the lease expired")
                self._enter(AgentState.FENCED)
                return "lease expired"
            except (LinkError, TimeoutError) as err:
                log.warning(
                    "agent %s: keepalive failed (%s)", self.name, str(err) or "no answer in time"
                )
                interval = min(reg.keepalive_interval, 0.5)
                continue
            self.fence.arm(sent + reg.ttl - self._margin(reg))
            interval = reg.keepalive_interval

    # -- assignments -------------------------------------------------------------------

    async def _sync_assignments(self) -> None:
        attempt = 0
        while True:
            try:
                items, revision = await self.link.assignments(self.name)
            except LinkError as err:
                log.warning("agent %s: cannot list assignments (%s)", self.name, err)
                await self._backoff(attempt)
                attempt += 1
                continue
            attempt = 0
            self._desired = {a["guest"]: a for a in items}
            self._listed = True
            for guest in list(self._migrated):
                self._forget_migrated(guest, self._desired.get(guest))
            self._kick()
            await self._follow(revision)

    async def _follow(self, revision: int) -> None:
        """Apply the watch stream from ``revision`` + 1; return when a re-list is needed."""
        attempt = 0
        while True:
            stream = self.link.watch_assignments(self.name, revision + 1)
            try:
                async for line in stream:
                    kind = line.get("type")
                    if kind == "ERROR":
                        log.warning("agent %s: %s; listing again", self.name, line.get("error"))
                        return
                    if kind == "PUT":
                        assignment = line["assignment"]
                        self._desired[assignment["guest"]] = assignment
                        self._forget_migrated(assignment["guest"], assignment)
                        self._kick()
                    elif kind == "DELETE":
                        self._desired.pop(line["guest"], None)
                        self._forget_migrated(line["guest"], None)
                        self._kick()
                    revision = max(revision, int(line.get("revision", revision)))
                    attempt = 0
            except LinkError as err:
                log.warning("agent %s: assignment stream failed (%s)", self.name, err)
            finally:
                await _aclose(stream)
            await self._backoff(attempt)
            attempt += 1

    def _forget_migrated(self, guest: str, assignment: JSON | None) -> None:
        """Forget that ``guest`` migrated away once the server moved its assignment on.

        Only the server's word counts (a list or a watch line), never the driver's: a
        destroyed source must not be started again if the old assignment shows up again.
        """
        held = self._migrated.get(guest)
        if held is None:
            return
        if assignment is None or (str(assignment["uid"]), int(assignment["epoch"])) != held:
            del self._migrated[guest]

    # -- reconcile ---------------------------------------------------------------------

    async def _reconcile_loop(self, tg: asyncio.TaskGroup) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._resync_interval):
                    await self._dirty.wait()
            self._dirty.clear()
            await self._reconcile_once(tg)

    async def _reconcile_once(self, tg: asyncio.TaskGroup) -> None:
        """One pass: compare assignments with the driver and start per-guest operations."""
        if self.fence.is_fenced() or not self._listed:
            return  # fenced: no new operations; not listed yet: desired is not known
        observed = {g.name: g for g in await self.driver.list()}
        plan = plan_local(
            self._desired,
            observed,
            rejected=self._rejected,
            busy=set(self._ops),
            retry_at=self._retry_at,
            now=self._clock(),
            handled=self._handled.keys(),
            migrating=self._migrating(),
            migrated=self._migrated,
        )
        for guest, steps in plan.items():
            if guest in self._ops:  # busy: the plan only ever cancels its migration
                for step in steps:
                    if isinstance(step, CancelMigration):
                        self._cancel_outgoing(step)
                continue
            self._ops[guest] = tg.create_task(
                self._execute(guest, steps), name=f"{self.name}/{guest}"
            )
        self._report_dirty.set()

    def _migrating(self) -> dict[str, str]:
        return {guest: out.migration for guest, out in self._outgoing.items()}

    def _handle(self, op_id: str) -> None:
        """Remember that migration or backup ``op_id`` ran here (or was refused)."""
        self._handled[op_id] = None
        while len(self._handled) > _HANDLED_KEPT:
            del self._handled[next(iter(self._handled))]

    async def _execute(self, guest: str, steps: Iterable[LocalAction]) -> None:
        try:
            for step in steps:
                if isinstance(step, StopGuest):
                    log.info("agent %s: stopping %s (%s)", self.name, guest, step.reason)
                    await self.driver.stop(guest, timeout=self._stop_timeout)
                    if step.destroy:
                        await self.driver.destroy(guest)
                    continue
                if self.fence.is_fenced():
                    return  # fenced: nothing new starts, not even a report of one
                if isinstance(step, StartGuest):
                    await self._start(step)
                elif isinstance(step, Activate):
                    await self._activate(step)
                elif isinstance(step, PrepareIncoming):
                    await self._prepare_incoming(step)
                elif isinstance(step, MigrateOut):
                    await self._migrate_out(step)
                elif isinstance(step, CancelMigration):
                    await self._cancel_unbegun(step)
                else:
                    await self._backup(step)
            self._failures.pop(guest, None)
            self._retry_at.pop(guest, None)
        except Exception as err:
            failures = self._failures.get(guest, 0) + 1
            self._failures[guest] = failures
            delay = min(self._max_backoff * 6, 0.5 * 2 ** min(failures - 1, 16))
            self._retry_at[guest] = self._clock() + delay
            if isinstance(err, DriverError):
                log.warning("agent %s: %s: %s (retry in %.1f s)", self.name, guest, err, delay)
            else:
                log.exception("agent %s: %s failed unexpectedly", self.name, guest)
        finally:
            self._ops.pop(guest, None)
            self._report_dirty.set()
            self._kick()

    async def _start(self, step: StartGuest) -> None:
        guest = step.guest
        await self.driver.create(GuestConfig(guest, step.uid, step.epoch, step.spec))
        self._report_dirty.set()
        await self.driver.start(guest)
        if self.fence.is_fenced():  # fenced while starting: it must not survive
            self.driver.kill(guest)

    # -- live migration ----------------------------------------------------------------

    async def _prepare_incoming(self, step: PrepareIncoming) -> None:
        """Target side: start the paused destination, then tell the server its URI."""
        report: JSON = {"guest": step.guest, "id": step.migration, "role": "target"}
        driver = self.driver
        if not isinstance(driver, LiveMigration):
            why = f"driver {driver.kind} cannot receive live migrations"
        elif self.migration_address is None:
            why = "agent has no --migration-address: it cannot receive live migrations"
        else:
            config = GuestConfig(step.guest, step.uid, step.epoch, step.spec)
            log.info(
                "agent %s: preparing %s for migration %s from %s",
                self.name,
                step.guest,
                step.migration,
                step.source,
            )
            try:
                uri = await driver.prepare_incoming(config, listen=self.migration_address)
            except DriverError as err:
                why = f"cannot prepare {step.guest} on {self.name}: {err}"
            else:
                if self.fence.is_fenced():  # fenced meanwhile: the watchdog kills it
                    driver.kill(step.guest)
                    return
                # Handled only once the server has the URI: otherwise the next pass
                # prepares again (idempotent) and reports again.
                if await self._send_final("migration", {**report, "state": "ready", "uri": uri}):
                    self._handle(step.migration)
                return
        log.warning("agent %s: migration %s refused: %s", self.name, step.migration, why)
        self._handle(step.migration)
        await self._send_final("migration", {**report, "state": "failed", "message": why})

    async def _activate(self, step: Activate) -> None:
        """Target side, after the switch-over: resume the incoming guest at its epoch."""
        driver = self.driver
        if not isinstance(driver, LiveMigration):
            raise DriverError(f"driver {driver.kind} cannot activate incoming guests")
        log.info("agent %s: activating %s at epoch %d", self.name, step.guest, step.epoch)
        await driver.activate(step.guest)
        if self.fence.is_fenced():  # fenced meanwhile: it must not survive
            self.driver.kill(step.guest)

    async def _migrate_out(self, step: MigrateOut) -> None:
        """Source side: pre-copy to the target, then report how it ended (once per id)."""
        report: JSON = {"guest": step.guest, "id": step.migration, "role": "source"}
        driver = self.driver
        if not isinstance(driver, LiveMigration):
            self._handle(step.migration)
            why = f"driver {driver.kind} cannot live-migrate guests"
            await self._send_final("migration", {**report, "state": "failed", "message": why})
            return
        outgoing = Outgoing(step.migration)
        self._outgoing[step.guest] = outgoing
        self._report_dirty.set()  # status: migrating
        latest: list[MigrationProgress] = []

        def progress() -> JSON | None:
            if not latest:
                return None
            sample = dataclasses.asdict(latest[-1])
            return {**report, "state": "progress", "progress": sample}

        log.info("agent %s: migrating %s to %s (%s)", self.name, step.guest, step.to, step.uri)
        try:
            work = driver.migrate_out(step.guest, step.uri, on_progress=keep_last(latest))
            result = await pump(
                work,
                progress,
                self._sender("migration"),
                interval=self._progress_interval,
                fenced=self.fence.is_fenced,
                outgoing=outgoing,
            )
        except Cancelled:
            final = {**report, "state": "failed", "message": f"cancelled: {outgoing.reason}"}
        except Exception as err:
            if not isinstance(err, DriverError):
                log.exception("agent %s: migrate_out of %s failed", self.name, step.guest)
            final = {**report, "state": "failed", "message": str(err) or type(err).__name__}
        else:
            # Recorded before the guest stops being busy: no pass may see it stopped
            # and not know it migrated away.
            self._migrated[step.guest] = (step.uid, step.epoch)
            outcome = {
                "total_ms": result.total_ms,
                "downtime_ms": result.downtime_ms,
                "transferred": result.transferred,
            }
            final = {**report, "state": "completed", "result": outcome}
        finally:
            self._outgoing.pop(step.guest, None)
            self._report_dirty.set()
        self._handle(step.migration)
        log.info(
            "agent %s: migration %s of %s %s %s",
            self.name,
            step.migration,
            step.guest,
            final["state"],
            final.get("message", ""),
        )
        await self._send_final("migration", final)

    def _cancel_outgoing(self, step: CancelMigration) -> None:
        outgoing = self._outgoing.get(step.guest)
        if outgoing is None or outgoing.migration != step.migration or outgoing.cancel.is_set():
            return
        log.info("agent %s: cancelling migration %s (%s)", self.name, step.migration, step.reason)
        outgoing.reason = step.reason
        outgoing.cancel.set()

    async def _cancel_unbegun(self, step: CancelMigration) -> None:
        self._handle(step.migration)
        report = {
            "guest": step.guest,
            "id": step.migration,
            "role": "source",
            "state": "failed",
            "message": f"cancelled: {step.reason}",
        }
        await self._send_final("migration", report)

    # -- backup ------------------------------------------------------------------------

    async def _backup(self, step: RunBackup) -> None:
        """Back up a running guest through the driver; report running/progress/outcome."""
        report: JSON = {"guest": step.guest, "id": step.backup}
        driver = self.driver
        self._handle(step.backup)
        if not isinstance(driver, BlockBackup):
            why = f"driver {driver.kind} cannot back up guests"
            await self._send_final("backup", {**report, "state": "failed", "message": why})
            return
        answer = await self._send_final("backup", {**report, "state": "running"})
        if answer is not None and not answer.get("accepted", False):
            return  # the server no longer wants it (guest moved, backup gone)
        latest: list[tuple[int, int]] = []

        def progress() -> JSON | None:
            if not latest:
                return None
            done, total = latest[-1]
            return {**report, "state": "running", "progress": {"done": done, "total": total}}

        def on_progress(done: int, total: int) -> None:
            latest[:] = [(done, total)]

        request = BackupRequest(
            step.backup, step.mode, step.parent_path, step.target, dict(step.parent_volumes)
        )
        log.info(
            "agent %s: backing up %s (%s, %s, to %s)",
            self.name,
            step.guest,
            step.backup,
            step.mode,
            step.target,
        )
        try:
            work = driver.backup(step.guest, request, on_progress=on_progress)
            result = await pump(
                work,
                progress,
                self._sender("backup"),
                interval=self._progress_interval,
                fenced=self.fence.is_fenced,
            )
        except Exception as err:
            if not isinstance(err, DriverError):
                log.exception("agent %s: backup of %s failed", self.name, step.guest)
            final = {**report, "state": "failed", "message": str(err) or type(err).__name__}
        else:
            final = {
                **report,
                "state": "completed",
                "path": result.path,
                "volumes": dict(result.volumes),
                "mode": result.mode,
                "bytes": result.bytes,
            }
        await self._send_final("backup", final)

    def _sender(self, kind: str) -> Callable[[JSON], Awaitable[JSON]]:
        send = self.link.report_migration if kind == "migration" else self.link.report_backup
        return functools.partial(send, self.name)

    async def _send_final(self, kind: str, report: JSON) -> JSON | None:
        what = f"agent {self.name}: {kind} {report['id']} of {report['guest']}"
        return await send_final(self._sender(kind), report, backoff=self._backoff, what=what)

    # -- console -----------------------------------------------------------------------

    async def _console_loop(self, source: ConsoleSource) -> None:
        """Push each running guest's console tail when it changed, every interval at most."""
        pushed: dict[str, str] = {}
        while True:
            await asyncio.sleep(self._console_interval)
            if self.fence.is_fenced():
                continue
            try:
                guests = await self.driver.list()
            except DriverError as err:
                log.warning("agent %s: cannot list guests for consoles (%s)", self.name, err)
                continue
            live: set[str] = set()
            for info in guests:
                if not self._holds(info):
                    continue
                live.add(info.name)
                try:
                    text = tail(source.console(info.name), CONSOLE_TAIL)
                    if pushed.get(info.name) != text:
                        await self.link.push_console(self.name, info.name, text)
                        pushed[info.name] = text
                except Exception as err:  # a console is never worth a session
                    log.warning("agent %s: console of %s: %s", self.name, info.name, err)
            for name in set(pushed) - live:
                del pushed[name]

    def _holds(self, info: GuestInfo) -> bool:
        """Whether ``info`` runs here at its assignment (the binding is this host's)."""
        assignment = self._desired.get(info.name)
        return (
            info.state is DriverGuestState.RUNNING
            and assignment is not None
            and not assignment.get("incoming")
            and (str(assignment["uid"]), int(assignment["epoch"])) == (info.uid, info.epoch)
        )

    # -- reports -----------------------------------------------------------------------

    async def _report_loop(self) -> None:
        attempt = 0
        while True:
            await self._report_dirty.wait()
            await asyncio.sleep(self._report_interval)  # coalesce a burst into one batch
            self._report_dirty.clear()
            if self.fence.is_fenced():
                continue
            try:
                await self._report_once()
                attempt = 0
            except LinkError as err:
                log.warning("agent %s: cannot report (%s)", self.name, err)
                self._report_dirty.set()
                await self._backoff(attempt)
                attempt += 1

    async def _report_once(self) -> None:
        """Send one batch of state changes; stop guests whose report was rejected."""
        observed: dict[str, GuestInfo] = {g.name: g for g in await self.driver.list()}
        batch = reports(
            self._desired,
            observed,
            self._last_reported,
            rejected=self._rejected,
            migrating=self._migrating(),
            migrated=self._migrated,
        )
        usage_only = self._usage.attach(batch, self._last_reported, skip=self._migrating())
        if not (batch or usage_only) or self.fence.is_fenced():
            return
        answer = await self.link.report(self.name, batch + usage_only)
        self._usage.settle(batch + usage_only, answer.get("accepted", []))
        by_guest = {r["guest"]: r for r in batch}  # a rejected usage stops nothing
        for name in answer.get("accepted", []):
            r = by_guest.get(name)
            if r is not None:
                self._last_reported[name] = (r["epoch"], r["state"], r["message"])
        for rejection in answer.get("rejected", []):
            name = rejection["guest"]
            if name in by_guest:
                log.warning(
                    "agent %s: report of %s rejected (%s); stopping it",
                    self.name,
                    name,
                    rejection.get("reason", "stale epoch"),
                )
                self._rejected[name] = int(by_guest[name]["epoch"])
                self._kick()


def _unwrap(err: BaseException) -> BaseException:
    """The error itself rather than a TaskGroup's group of one."""
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    return err


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def run_many(agents: Iterable[Agent]) -> None:
    """Run many agents in this process until cancelled (the demo's simulated hosts).

    Every agent gets its own link and driver; all share one watchdog thread. An
    unexpected error in one agent stops them all (and is raised).
    """
    async with asyncio.TaskGroup() as tg:
        for agent in agents:
            supervise(tg, agent.run(), name=f"agent-{agent.name}")
