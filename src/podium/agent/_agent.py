"""The host agent: hold the host lease, run what is assigned here, report what runs."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, NoReturn

import podium
from podium._aio import supervise
from podium.agent._link import LeaseExpired, LinkError, Registration, ServerLink
from podium.agent._plan import StartGuest, StopGuest, plan_local, reports
from podium.agent._watchdog import DEFAULT_WATCHDOG, Fence, Watchdog
from podium.drivers import Driver, DriverError, GuestConfig, GuestInfo
from podium.model import Resources

log = logging.getLogger("podium.agent")

JSON = dict[str, Any]


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
    """

    def __init__(
        self,
        name: str,
        link: ServerLink,
        driver: Driver,
        *,
        capacity: Resources,
        labels: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_host_token: Callable[[str], None] | None = None,
        safety_margin: float | None = None,
        watchdog: Watchdog | None = None,
        resync_interval: float = 5.0,
        report_interval: float = 0.05,
        stop_timeout: float = 30.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.name = name
        self.link = link
        self.driver = driver
        self.capacity = capacity
        self.labels = dict(labels or {})
        self._clock = clock
        self._on_host_token = on_host_token
        self._safety_margin = safety_margin
        self._watchdog = watchdog or DEFAULT_WATCHDOG
        self._resync_interval = resync_interval
        self._report_interval = report_interval
        self._stop_timeout = stop_timeout
        self._max_backoff = max_backoff
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
            sent = self._clock()
            try:
                reg = await self.link.register(
                    self.name,
                    self.capacity.to_dict(),
                    dict(self.labels),
                    self.driver.kind,
                    podium.__version__,
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
            self._rejected.clear()
            self._last_reported.clear()
            self._enter(AgentState.ACTIVE)
            log.info("agent %s registered (lease %x, ttl %d s)", self.name, reg.lease, reg.ttl)
            return reg

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
                log.warning("agent %s: keepalive failed (%s)", self.name, err or "timeout")
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
                        self._kick()
                    elif kind == "DELETE":
                        self._desired.pop(line["guest"], None)
                        self._kick()
                    revision = max(revision, int(line.get("revision", revision)))
                    attempt = 0
            except LinkError as err:
                log.warning("agent %s: assignment stream failed (%s)", self.name, err)
            finally:
                await _aclose(stream)
            await self._backoff(attempt)
            attempt += 1

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
        if self.fence.is_fenced():
            return
        observed = {g.name: g for g in await self.driver.list()}
        plan = plan_local(
            self._desired,
            observed,
            rejected=self._rejected,
            busy=set(self._ops),
            retry_at=self._retry_at,
            now=self._clock(),
        )
        for guest, steps in plan.items():
            self._ops[guest] = tg.create_task(
                self._execute(guest, steps), name=f"{self.name}/{guest}"
            )
        self._report_dirty.set()

    async def _execute(self, guest: str, steps: Iterable[StartGuest | StopGuest]) -> None:
        try:
            for step in steps:
                if isinstance(step, StopGuest):
                    log.info("agent %s: stopping %s (%s)", self.name, guest, step.reason)
                    await self.driver.stop(guest, timeout=self._stop_timeout)
                    if step.destroy:
                        await self.driver.destroy(guest)
                    continue
                if self.fence.is_fenced():
                    return
                await self.driver.create(GuestConfig(guest, step.uid, step.epoch, step.spec))
                self._report_dirty.set()
                await self.driver.start(guest)
                if self.fence.is_fenced():  # fenced while starting: it must not survive
                    self.driver.kill(guest)
            self._failures.pop(guest, None)
            self._retry_at.pop(guest, None)
        except Exception as err:
            failures = self._failures.get(guest, 0) + 1
            self._failures[guest] = failures
            delay = min(self._max_backoff * 6, 0.5 * 2 ** (failures - 1))
            self._retry_at[guest] = self._clock() + delay
            if isinstance(err, DriverError):
                log.warning("agent %s: %s: %s (retry in %.1f s)", self.name, guest, err, delay)
            else:
                log.exception("agent %s: %s failed unexpectedly", self.name, guest)
        finally:
            self._ops.pop(guest, None)
            self._report_dirty.set()
            self._kick()

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
        batch = reports(self._desired, observed, self._last_reported, rejected=self._rejected)
        if not batch or self.fence.is_fenced():
            return
        answer = await self.link.report(self.name, batch)
        by_guest = {r["guest"]: r for r in batch}
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
