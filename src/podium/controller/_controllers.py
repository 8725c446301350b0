"""The controllers: each maps store events to keys and reconciles one key at a time.

Reconcile reads the current state (level-based; an event only says *which* key to look
at), asks a pure ``plan_*`` function what to do, and applies the actions with
leader-guarded writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from podium.controller import _snapshot as snap
from podium.controller._backups import BackupSweeper
from podium.controller._cache import ClusterCache
from podium.controller._drain import DrainController
from podium.controller._errors import TemporaryError
from podium.controller._events import EventRecorder
from podium.controller._leader import Leadership
from podium.controller._migration_plans import MigrationLimits
from podium.controller._migrations import MigrationController
from podium.controller._plans import (
    Bind,
    CreateGuests,
    DeleteGuests,
    NoteUnplaced,
    PlacementAction,
    RetryLater,
    SetHostState,
    Unbind,
    is_stale,
    placement_actions,
    plan_app,
    plan_host,
)
from podium.controller._replication import ReplicationController
from podium.model import HostState, Kind
from podium.scheduler import Scheduler
from podium.state import ClusterState, NewBinding, NotFound, keys, loads, read_traffic
from podium.store import Compare, Event, EventType, bulk_writes

log = logging.getLogger("podium.controller")

PLACEMENT_KEY = "cluster"
CACHE_WAIT = 10.0  # seconds a controller waits for its own writes to reach the cache
THREAD_PLACEMENT = 256  # guests to place from which the scheduler runs off the event loop
# After a pass that placed a burst, the next waits this long first: guests keep coming
# (an app scaling by thousands), and one batch of thousands is placed by whole groups
# (the scheduler's bulk path) where a few hundred go one guest at a time.
BURST_GATHER = 0.25
LIVENESS_SWEEP = "~liveness"  # the host controller's periodic key (no host name has a "~")
# Guest creation: each create call fills store transactions (at most 128 operations,
# etcd's limit) one after another, so one app is a chain of store round trips. An app
# runs up to CREATE_PER_APP calls at once, and all apps together CREATE_IN_FLIGHT: a
# rollout keeps a bounded number of writes queued in the store, yet when only a few apps
# are left to create each of them gets more of it.
CREATE_CHUNK = 256  # guests per create call
CREATE_PER_APP = 4
CREATE_IN_FLIGHT = 32


@dataclass(eq=False)
class Context:
    """What every controller shares during one term of leadership."""

    state: ClusterState
    leadership: Leadership
    events: EventRecorder
    scheduler: Scheduler
    host_ttl: float
    clock: Callable[[], float]
    bind_concurrency: int = 16
    migrations: MigrationLimits = field(default_factory=MigrationLimits)
    suspect_after: float | None = None  # no renewal for this long: suspect (None: ttl / 2)
    liveness_interval: float = 0.5  # how often the host controller sweeps renewal ages
    # guests, bindings and hosts in memory, fed by the manager's watch (see _cache)
    cache: ClusterCache = field(default_factory=ClusterCache)

    @property
    def suspect_threshold(self) -> float:
        return self.host_ttl / 2 if self.suspect_after is None else self.suspect_after


class Controller(Protocol):
    """A reconcile loop. ``reconcile`` is never called twice at once for one key."""

    name: str
    workers: int
    debounce: float  # wait this long after a trigger, to batch bursts
    # keys_for sees only events of keys under these (the manager routes by them)
    prefixes: tuple[str, ...]

    def keys_for(self, event: Event) -> Iterable[str]:
        """Keys an event makes stale (cheap; no I/O). Called only for keys under
        ``prefixes``: an event elsewhere must make no key stale."""
        ...

    async def all_keys(self) -> Iterable[str]:
        """Every key, for the initial list and periodic resyncs."""
        ...

    async def reconcile(self, key: str) -> float | None:
        """Converge ``key``. Raises ``TemporaryError`` (retry) or ``PermanentError`` (report).

        Returns ``None``, or a delay in seconds after which to look at ``key`` again
        even if nothing changes (controller-runtime's ``RequeueAfter``).
        """
        ...


def _owner(event: Event) -> str | None:
    for kv in (event.kv, event.prev_kv):
        if kv is not None and kv.value:
            owner = loads(kv.value).get("owner")
            if owner:
                return str(owner)
    return None


class AppController:
    """App replicas -> owned guests ``<app>-<n>``.

    Reads its guests from the cache; after creating or deleting, the next reconcile of
    the app first waits for those writes to come back through the watch. Guest events
    wake the owner only when a guest goes away or changes hands (its own creations it
    already counted).
    """

    name = "app"
    workers = 16  # apps created at once: each is a chain of store round trips
    debounce = 0.05

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._apps = keys.object_prefix(Kind.APP)
        self._guests = keys.object_prefix(Kind.GUEST)
        self._written: dict[str, int] = {}  # app -> store revision after its last write
        self._creating = asyncio.Semaphore(CREATE_IN_FLIGHT)  # create calls of all apps
        self.prefixes: tuple[str, ...] = (self._apps, self._guests)

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        if key.startswith(self._apps):
            return [key[len(self._apps) :]]
        if key.startswith(self._guests):
            if event.type is EventType.PUT and event.prev_kv is None:
                return []  # a creation: the app that created it counted it
            owner = _owner(event)
            return [owner] if owner else []
        return []

    async def all_keys(self) -> Iterable[str]:
        """Apps that exist, and owners named by guests (orphans to clean up)."""
        apps, _ = await self.ctx.state.list_records(Kind.APP)
        owners = {app for app, guests in self.ctx.cache.owned.items() if guests}
        return {a["name"] for a in apps} | owners

    async def reconcile(self, key: str) -> None:
        state, cache = self.ctx.state, self.ctx.cache
        if not await cache.wait_for(self._written.get(key, 0), CACHE_WAIT):
            raise TemporaryError(f"app {key}: the cache lags the store", delay=0.5)
        record = await state.get_record(Kind.APP, key)
        guests = [found[0] for n in sorted(cache.owned.get(key, ())) if (found := cache.guest(n))]
        guard = [self.ctx.leadership.compare]  # a deposed leader creates and deletes nothing
        wrote = False
        for action in plan_app(key, record, guests, taken=lambda n: cache.guest(n) is not None):
            if isinstance(action, CreateGuests):
                await self._create(action, guard)
                wrote = True
            elif isinstance(action, DeleteGuests):
                for name in action.names:
                    with contextlib.suppress(NotFound):
                        await state.delete_object(Kind.GUEST, name, force_owned=True, guard=guard)
                wrote = True
            else:
                self.ctx.events.record(action.kind, action.name, action.reason, action.message)
        if wrote:
            self._written[key] = await state.store.revision()
        elif record is None:
            self._written.pop(key, None)

    async def _create(self, action: CreateGuests, guard: list[Compare]) -> None:
        """Create the action's guests, CREATE_CHUNK per call, up to CREATE_PER_APP calls
        at once; the first failure cancels the rest (a retry creates what is missing)."""
        chunks = [
            action.guests[i : i + CREATE_CHUNK] for i in range(0, len(action.guests), CREATE_CHUNK)
        ]
        own = asyncio.Semaphore(CREATE_PER_APP)

        async def one(chunk: Sequence[tuple[str, dict[str, Any]]]) -> None:
            async with own, self._creating:
                with bulk_writes():  # requests and keepalives go first
                    await self.ctx.state.create_owned_guests(
                        action.app, chunk, guard=guard, known=self.ctx.cache
                    )

        try:
            async with asyncio.TaskGroup() as group:
                for chunk in chunks:
                    group.create_task(one(chunk))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None  # the first is the cause; the rest follow


class HostController:
    """Host liveness: ready while renewals come, suspect when they are late, lost once
    the lease expired.

    Late renewals make no store event, so one more key, :data:`LIVENESS_SWEEP`, looks at
    every host's last renewal every ``liveness_interval`` seconds (a few range reads) and
    reconciles the hosts whose judgement changes; a renewal of a suspect host wakes its
    key at once. Both paths write with a compare on the status's mod revision, so a
    sweep and a per-host reconcile racing on one host cannot both win.
    """

    name = "host"
    workers = 4
    debounce = 0.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._was_live: dict[str, bool] = {}
        self._suspect: set[str] = set()
        self._prefixes = (keys.object_prefix(Kind.HOST), keys.HOST_STATUS, keys.HOST_LIVE)
        self.prefixes: tuple[str, ...] = (*self._prefixes, keys.HOST_BEAT)

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        for prefix in self._prefixes:
            if key.startswith(prefix):
                return [key[len(prefix) :]]
        if key.startswith(keys.HOST_BEAT):  # a renewal: news only for a suspect host
            name = key[len(keys.HOST_BEAT) :]
            return [name] if name in self._suspect else []
        return []

    async def all_keys(self) -> Iterable[str]:
        return [*self.ctx.cache.host_names(), LIVENESS_SWEEP]

    async def reconcile(self, key: str) -> float | None:
        if key == LIVENESS_SWEEP:
            await self._sweep()
            return self.ctx.liveness_interval
        await self._reconcile_host(key)
        return None

    def _settled(self, key: str) -> bool:
        """The cache shows a ready host, renewing, as it was last time: nothing to do.

        Periodic resyncs reconcile every host; this keeps them from reading thousands
        of hosts from the store. Only the do-nothing case is decided on the cache (which
        may lag): any change is judged on a fresh read.
        """
        cache = self.ctx.cache
        host = cache.host(key) if cache.loaded else None
        return (
            host is not None
            and self._was_live.get(key) is True
            and host.live
            and host.state == HostState.READY.value
            and not is_stale(host, self.ctx.clock(), self.ctx.suspect_threshold)
        )

    async def _sweep(self) -> None:
        """Reconcile every live host whose renewal age crossed the suspect threshold."""
        ctx = self.ctx
        now, threshold = ctx.clock(), ctx.suspect_threshold
        for name in ctx.cache.liveness_changes(now, threshold):
            with contextlib.suppress(TemporaryError):  # raced: the next sweep sees it
                await self._reconcile_host(name)

    async def _reconcile_host(self, key: str) -> None:
        ctx = self.ctx
        if self._settled(key):
            return
        host = await snap.read_host(ctx.state, key)
        lease_alive = False
        if host is not None and not host.live and host.state != HostState.LOST.value:
            lease_alive = not await snap.lease_expired(ctx.state, host)
        actions = plan_host(
            host,
            lease_alive=lease_alive,
            was_live=self._was_live.get(key),
            retry=ctx.host_ttl / 4,
            now=ctx.clock(),
            suspect_after=ctx.suspect_threshold,
        )
        for action in actions:
            if isinstance(action, SetHostState):
                guard = [ctx.leadership.compare]
                if not await snap.set_host_state(ctx.state, key, action.state, ctx.clock(), guard):
                    raise TemporaryError(f"host {key}: status changed meanwhile")
            elif isinstance(action, RetryLater):
                raise TemporaryError(action.reason, delay=action.delay)
            else:
                ctx.events.record(
                    action.kind, action.name, action.reason, action.message, warning=action.warning
                )
        if host is None:
            self._was_live.pop(key, None)
        else:
            self._was_live[key] = host.live
        states = [a.state for a in actions if isinstance(a, SetHostState)]
        final = states[-1].value if states else (host.state if host else None)
        if final == HostState.SUSPECT.value:
            self._suspect.add(key)
        else:
            self._suspect.discard(key)


class PlacementController:
    """One pass over the whole cluster: place unbound guests, move guests off lost hosts.

    A single key, so one worker: every binding decision in the cluster is made by one
    sequential pass, over one view of the cache, and capacity is never double-booked.
    A pass first waits until the cache holds the previous pass's writes, and costs
    O(guests to place + hosts); first placements are written many per transaction.
    """

    name = "placement"
    workers = 1
    debounce = 0.05

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._written = 0  # store revision after this controller's last writes
        self._burst = False  # the last pass placed a burst: gather the next one a moment
        self._triggers = (
            keys.object_prefix(Kind.GUEST),
            keys.object_prefix(Kind.HOST),
            keys.HOST_STATUS,
            keys.HOST_LIVE,
        )
        self.prefixes: tuple[str, ...] = (*self._triggers, keys.BINDINGS)

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        if key.startswith(self._triggers):
            return [PLACEMENT_KEY]
        if key.startswith(keys.BINDINGS) and event.type is EventType.DELETE:
            return [PLACEMENT_KEY]  # capacity freed
        return []

    async def all_keys(self) -> Iterable[str]:
        return [PLACEMENT_KEY]

    async def reconcile(self, key: str) -> None:
        ctx = self.ctx
        cache = ctx.cache
        if self._burst:
            self._burst = False
            await asyncio.sleep(BURST_GATHER)
        if not await cache.wait_for(self._written, CACHE_WAIT):
            raise TemporaryError("placement: the cache lags the store", delay=0.5)
        # lost hosts still holding guests: confirm each lease is gone (never merely late)
        expired = frozenset(
            [h.name for h in cache.holding_lost() if await snap.lease_expired(ctx.state, h)]
        )
        if not cache.pending and not expired:
            return
        traffic = (await read_traffic(ctx.state)).rates()
        request, moving = cache.placement_request(expired, traffic)
        if len(request.guests) >= THREAD_PLACEMENT:  # keep serving keepalives meanwhile
            self._burst = True
            result = await asyncio.to_thread(ctx.scheduler.place, request)
        else:
            result = ctx.scheduler.place(request)

        def revision_of(guest: str) -> int:
            binding = cache.binding(guest)
            return 0 if binding is None else binding.revision

        def message_of(guest: str) -> str | None:
            status = cache.status(guest)
            return None if status is None else status.get("message")

        actions = placement_actions(result, moving, revision_of, message_of)
        failed = await self._apply(actions)
        self._written = await ctx.state.store.revision()
        if failed:
            raise TemporaryError(f"{failed} binding(s) changed during the pass", delay=0.1)

    async def _apply(self, actions: Sequence[PlacementAction]) -> int:
        """Apply: first placements in bulk, the rest ``bind_concurrency`` at a time;
        return how many lost a race."""
        first: list[NewBinding] = []
        rest: list[PlacementAction] = []
        for action in actions:
            found = self.ctx.cache.guest(action.guest)
            if (
                isinstance(action, Bind)
                and action.moved_from is None
                and action.revision == 0
                and found is not None
            ):
                first.append(NewBinding(action.guest, action.host, found[0], found[1]))
            else:
                rest.append(action)
        failed = 0
        if first:
            with bulk_writes():  # thousands at a time: requests and keepalives go first
                result = await self.ctx.state.bind_new(first, guard=[self.ctx.leadership.compare])
            for item in result.bound:
                self.ctx.events.record(
                    "Guest",
                    item.guest,
                    "GuestPlaced",
                    f"placed on {item.host} (epoch 1)",
                    group=("Host", item.host),
                )
            # a guest in a transaction that raced: one at a time, which re-reads
            rest += [Bind(item.guest, item.host, 0) for item in result.raced]
        n = self.ctx.bind_concurrency
        for i in range(0, len(rest), n):
            chunk = rest[i : i + n]
            results = await asyncio.gather(
                *(self._apply_one(a) for a in chunk), return_exceptions=True
            )
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome  # every task of the chunk has finished: nothing leaks
            failed += results.count(False)
        return failed

    async def _apply_one(self, action: PlacementAction) -> bool:
        ctx = self.ctx
        state = ctx.state
        guard: list[Compare] = [ctx.leadership.compare]
        if isinstance(action, NoteUnplaced):
            return await state.note_unplaced(action.guest, action.reason, guard=guard[:1])
        if action.moved_from is not None:  # only while the lost host stays gone
            guard.append(Compare(keys.host_live_key(action.moved_from), "version", "=", 0))
        if isinstance(action, Unbind):
            bound = await state.bind(
                action.guest, None, expected_revision=action.revision, extra=guard
            )
            if bound is None:
                return False
            waiting = f"waiting for capacity (host {action.moved_from} lost): {action.reason}"
            await state.note_unplaced(action.guest, waiting, guard=guard[:1])
            ctx.events.record(
                "Guest",
                action.guest,
                "GuestPending",
                f"host {action.moved_from} lost and no host can take it: {action.reason}",
                warning=True,
                group=("Host", action.moved_from),
            )
            return True
        assert isinstance(action, Bind)
        bound = await state.bind(
            action.guest, action.host, expected_revision=action.revision, extra=guard
        )
        if bound is None:
            return False
        if action.moved_from is None:
            reason, message = "GuestPlaced", f"placed on {action.host} (epoch {bound.epoch})"
        else:
            reason = "GuestRebound"
            message = (
                f"moved from lost host {action.moved_from} to {action.host} (epoch {bound.epoch})"
            )
        ctx.events.record("Guest", action.guest, reason, message, group=("Host", action.host))
        return True


def guest_running_event(event: Event) -> tuple[str, str, str] | None:
    """``(guest, host, message)`` if this status write made a guest running at a new epoch."""
    if event.type is not EventType.PUT or not event.kv.key.startswith(keys.GUEST_STATUS):
        return None
    status = loads(event.kv.value)
    if status.get("state") != "running":
        return None
    if event.prev_kv is not None:
        prev = loads(event.prev_kv.value)
        if prev.get("state") == "running" and prev.get("epoch") == status.get("epoch"):
            return None
    guest = event.kv.key[len(keys.GUEST_STATUS) :]
    host = str(status.get("host"))
    return guest, host, f"running on {host} (epoch {status.get('epoch')})"


ControllerFactory = Callable[[Context], Controller]
CONTROLLERS: tuple[ControllerFactory, ...] = (
    AppController,
    HostController,
    PlacementController,
    BackupSweeper,
    MigrationController,
    DrainController,
    ReplicationController,
)
