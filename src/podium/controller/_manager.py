"""ControllerManager: one store watch feeding every controller's work queue, while leading."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from podium._aio import supervise
from podium.controller._cache import ClusterCache
from podium.controller._controllers import (
    CONTROLLERS,
    Context,
    Controller,
    ControllerFactory,
    guest_running_event,
)
from podium.controller._errors import PermanentError, TemporaryError
from podium.controller._events import EventRecorder
from podium.controller._leader import Leadership
from podium.controller._migration_plans import MigrationLimits
from podium.controller._queue import WorkQueue
from podium.controller._routing import PrefixRouter
from podium.scheduler import Scheduler
from podium.state import ClusterState, Conflict, keys
from podium.store import Compacted, StoreError

log = logging.getLogger("podium.controller")


def controller_router(controllers: list[Controller]) -> PrefixRouter[Controller]:
    """Routes a key to the controllers whose ``prefixes`` it falls under (all of them for
    a controller that declares none: one from elsewhere keeps seeing every event)."""
    return PrefixRouter((c, getattr(c, "prefixes", None)) for c in controllers)


class _LeadershipLost(Exception):
    pass


async def _until_lost(leadership: Leadership) -> None:
    await leadership.lost.wait()
    raise _LeadershipLost


class ControllerManager:
    """Runs the controllers (app, host, placement) plus event pruning, while leading.

    ::

        store.watch(/podium/) ──> controller.keys_for(event) ──> WorkQueue per controller
             │  (Compacted: re-list)   of the controllers whose      │ one worker per key
             │                         prefixes hold the key         │
             └── status -> running ──> GuestRunning events           ▼
        resync every ``resync_interval`` ──> all_keys()          reconcile(key)
                                                      TemporaryError: retry with backoff
                                                      PermanentError: warning event, no spin

    ``host_ttl`` is the agents' lease TTL (retry pacing for hosts whose lease is late).
    A live host with no renewal for more than ``suspect_after`` seconds (default
    ``host_ttl / 2``; server flag ``--host-suspect-after``) is shown ``suspect``; renewal
    ages are swept every ``liveness_interval`` seconds.
    ``clock`` stamps status changes. ``migrations``: limits and timeouts of live migrations
    and drains (server flags ``--max-migrations``, ``--max-migrations-per-host``).
    ``stats()`` counts reconciles per controller.

    An event goes only to the controllers with a ``prefixes`` entry its key starts with
    (one without the attribute sees every event), routed in O(1) per event.
    """

    def __init__(
        self,
        state: ClusterState,
        scheduler: Scheduler,
        *,
        host_ttl: float = 8.0,
        clock: Callable[[], float] = time.time,
        resync_interval: float = 30.0,
        prune_interval: float = 60.0,
        keep_events: int = 10_000,
        event_interval: float = 0.5,
        controllers: tuple[ControllerFactory, ...] = CONTROLLERS,
        migrations: MigrationLimits | None = None,
        suspect_after: float | None = None,
        liveness_interval: float = 0.5,
    ) -> None:
        self.state = state
        self.migrations = migrations or MigrationLimits()
        self.scheduler = scheduler
        self.host_ttl = host_ttl
        self.clock = clock
        self.resync_interval = resync_interval
        self.prune_interval = prune_interval
        self.keep_events = keep_events
        self.event_interval = event_interval
        self._factories = controllers
        self.suspect_after = suspect_after
        self.liveness_interval = liveness_interval
        self._stats: Counter[str] = Counter()

    def stats(self) -> Mapping[str, int]:
        """Reconciles run per controller (and ``<name>_errors``), since this manager started."""
        return dict(self._stats)

    async def run(self, leadership: Leadership) -> None:
        """Run every controller until cancelled, or until ``leadership.lost`` (then return)."""
        events = EventRecorder(self.state, interval=self.event_interval)
        ctx = Context(
            self.state,
            leadership,
            events,
            self.scheduler,
            self.host_ttl,
            self.clock,
            migrations=self.migrations,
            suspect_after=self.suspect_after,
            liveness_interval=self.liveness_interval,
        )
        controllers = [factory(ctx) for factory in self._factories]
        queues = {c.name: WorkQueue() for c in controllers}
        try:
            async with asyncio.TaskGroup() as tg:
                supervise(
                    tg, self._watch(controllers, queues, events, ctx.cache), name="controller-watch"
                )
                supervise(tg, self._resync(controllers, queues), name="controller-resync")
                supervise(tg, self._prune(), name="controller-prune-events")
                supervise(tg, events.run(), name="controller-events")
                for c in controllers:
                    for i in range(c.workers):
                        supervise(tg, self._worker(c, queues[c.name]), name=f"{c.name}-worker-{i}")
                await _until_lost(leadership)
        except* _LeadershipLost:
            log.warning("leadership lost: controllers stopped")
        finally:
            for q in queues.values():
                q.close()

    # -- feeding the queues -------------------------------------------------------------

    @staticmethod
    def _enqueue(c: Controller, queue: WorkQueue, key: str) -> None:
        if c.debounce > 0:
            queue.add_after(key, c.debounce)
        else:
            queue.add(key)

    async def _relist(self, controllers: list[Controller], queues: dict[str, WorkQueue]) -> None:
        for c in controllers:
            for key in await c.all_keys():
                self._enqueue(c, queues[c.name], key)

    async def _watch(
        self,
        controllers: list[Controller],
        queues: dict[str, WorkQueue],
        events: EventRecorder,
        cache: ClusterCache,
    ) -> None:
        delay = 0.1
        revision: int | None = None
        router = controller_router(controllers)
        while True:
            try:
                if revision is None:
                    revision = await self.state.store.revision()
                    await cache.load(self.state, revision)
                    await self._relist(controllers, queues)
                watch = self.state.store.watch(keys.ROOT, revision + 1)
                try:
                    async for event in watch:
                        revision = event.revision
                        delay = 0.1
                        cache.apply(event)  # first: keys_for and reconciles read it
                        if event.kv.key.startswith(keys.EVENTS):
                            continue
                        for c in router.route(event.kv.key):
                            for key in c.keys_for(event):
                                self._enqueue(c, queues[c.name], key)
                        running = guest_running_event(event)
                        if running:
                            guest, host, message = running
                            events.record(
                                "Guest", guest, "GuestRunning", message, group=("Host", host)
                            )
                finally:
                    aclose = getattr(watch, "aclose", None)
                    if aclose is not None:
                        await aclose()
                log.warning("store watch ended; resuming from revision %d", revision + 1)
            except Compacted as err:
                log.warning("watch history compacted (%s); listing again", err)
                revision = None
                continue
            except StoreError as err:
                log.warning("store watch failed (%s); retrying in %.1f s", err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _resync(self, controllers: list[Controller], queues: dict[str, WorkQueue]) -> None:
        while True:
            await asyncio.sleep(self.resync_interval)
            try:
                await self._relist(controllers, queues)
            except StoreError as err:
                log.warning("resync failed: %s", err)

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(self.prune_interval)
            try:
                pruned = await self.state.prune_events(self.keep_events)
            except StoreError as err:
                log.warning("event pruning failed: %s", err)
                continue
            if pruned:
                log.info("pruned %d old events", pruned)

    # -- working the queues --------------------------------------------------------------

    async def _worker(self, c: Controller, queue: WorkQueue) -> None:
        while True:
            key = await queue.get()
            again: float | None = None
            try:
                again = await c.reconcile(key)
            except TemporaryError as err:
                self._stats[f"{c.name}_errors"] += 1
                delay = queue.retry(key, err.delay)
                log.info("%s %s: %s (retry in %.2f s)", c.name, key, err, delay)
            except PermanentError as err:
                self._stats[f"{c.name}_errors"] += 1
                log.warning("%s %s: %s (not retried until it changes)", c.name, key, err)
                await self._report(c, key, str(err))
            except (StoreError, Conflict) as err:
                self._stats[f"{c.name}_errors"] += 1
                delay = queue.retry(key)
                log.warning("%s %s: %s (retry in %.2f s)", c.name, key, err, delay)
            except Exception:
                self._stats[f"{c.name}_errors"] += 1
                delay = queue.retry(key)
                log.exception("%s %s failed unexpectedly (retry in %.2f s)", c.name, key, delay)
            else:
                queue.forget(key)
                if again is not None:
                    queue.add_after(key, again)
            finally:
                self._stats[c.name] += 1
                queue.done(key)

    async def _report(self, c: Controller, key: str, message: str) -> None:
        try:
            await self.state.emit(c.name, key, "ReconcileFailed", message, warning=True)
        except StoreError as err:
            log.warning("could not record the failure of %s %s: %s", c.name, key, err)
