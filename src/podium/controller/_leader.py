"""Leader election over the store: one leader key on one lease.

::

    campaign: grant lease ──txn(leader absent? put leader on lease)──┬── won ──> Leadership
                  ^                                                  └── lost: revoke lease,
                  └──────────── leader key deleted (resign or expiry) <── watch leader key
    lead:    keepalive every ttl/3 ── LeaseNotFound, key changed, or no renewal for
             3/4 ttl ──> leadership.lost.set()            exit ──> revoke lease (resign)

Every leader-only write adds ``leadership.compare`` (the leader key's mod revision is
still ours) to its transaction, so a deposed leader can never write, however late it
learns that it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from podium.state import dumps, keys, loads
from podium.store import Compare, EventType, Get, LeaseNotFound, Put, Store, StoreError

log = logging.getLogger("podium.controller.leader")

Clock = Callable[[], float]


@dataclass(eq=False)
class Leadership:
    """Proof of leadership: add ``compare`` to every leader-only write.

    ``lost`` is set once the leader can no longer be sure it leads (the controllers
    then stop); it is never cleared: campaign again for a new ``Leadership``.
    """

    identity: str
    lease: int
    revision: int  # mod revision of the leader key we wrote
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def compare(self) -> Compare:
        return Compare(keys.LEADER, "mod", "=", self.revision)


class LeaderElection:
    """Campaigns for ``keys.LEADER`` on a lease of ``ttl`` seconds. Works on every backend."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: int = 10,
        identity: str,
        clock: Clock = time.monotonic,
    ) -> None:
        if ttl < 2:
            raise ValueError(f"leader TTL must be at least 2 seconds, got {ttl}")
        self.store = store
        self.ttl = ttl
        self.identity = identity
        self._clock = clock

    async def leader(self) -> str | None:
        """Identity of the current leader, if any."""
        kv = await self.store.get(keys.LEADER)
        return str(loads(kv.value)["identity"]) if kv else None

    @contextlib.asynccontextmanager
    async def lead(self) -> AsyncIterator[Leadership]:
        """Wait until elected; hold leadership for the body; resign on exit.

        The body should stop leader-only work when ``leadership.lost`` is set
        (``ControllerManager.run`` returns then). Raises ``StoreError`` only while
        campaigning fails for reasons other than the store being unavailable.
        """
        leadership = await self._campaign()
        keeper = asyncio.create_task(
            self._keep(leadership), name=f"leader-keepalive-{self.identity}"
        )
        try:
            yield leadership
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            leadership.lost.set()
            try:
                await self.store.revoke(leadership.lease)
            except StoreError as err:
                log.warning("could not resign leadership (lease expires by itself): %s", err)
            log.info("%s resigned leadership", self.identity)

    async def _campaign(self) -> Leadership:
        delay = 0.1
        while True:
            try:
                won = await self._try_once()
            except StoreError as err:
                if not err.retryable:
                    raise
                log.warning("campaign for leadership failed, retrying in %.1f s: %s", delay, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.ttl / 2)
                continue
            if isinstance(won, Leadership):
                log.info("%s is the leader (lease %x)", self.identity, won.lease)
                return won
            delay = 0.1
            await self._wait_vacant(won)

    async def _try_once(self) -> Leadership | int:
        """Leadership if we won, else the revision at which someone else held the key."""
        lease = await self.store.grant(self.ttl)
        value = dumps({"identity": self.identity, "lease": lease.id})
        result = await self.store.txn(
            [Compare(keys.LEADER, "version", "=", 0)],
            [Put(keys.LEADER, value, lease=lease.id)],
            [Get(keys.LEADER)],
        )
        if result.succeeded:
            return Leadership(self.identity, lease.id, result.revision)
        await self.store.revoke(lease.id)
        holder = result.results[0].kvs if result.results else ()
        if holder:
            log.debug("%s waits: %s leads", self.identity, loads(holder[0].value)["identity"])
        return result.revision

    async def _wait_vacant(self, revision: int) -> None:
        """Return once the leader key was deleted after ``revision``, or after a while."""
        watch = self.store.watch(keys.LEADER, revision + 1)
        try:
            async with asyncio.timeout(self.ttl):
                async for event in watch:
                    if event.kv.key == keys.LEADER and event.type is EventType.DELETE:
                        return
        except TimeoutError:
            return  # check again: a missed delete must not stall the campaign
        except StoreError as err:
            log.debug("leader watch failed (%s); campaigning again", err)
            await asyncio.sleep(0.1)
        finally:
            aclose = getattr(watch, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _keep(self, leadership: Leadership) -> None:
        """Renew the lease every ttl/3; set ``lost`` when leadership can't be vouched for."""
        last_renewal = self._clock()
        interval = self.ttl / 3
        try:
            while True:
                await asyncio.sleep(interval)
                interval = self.ttl / 3
                sent = self._clock()
                try:
                    await self.store.keepalive(leadership.lease)
                    kv = await self.store.get(keys.LEADER)
                except LeaseNotFound:
                    log.warning("%s lost leadership: its lease expired", self.identity)
                    return
                except StoreError as err:
                    if self._clock() - last_renewal >= self.ttl * 0.75:
                        log.warning("%s lost leadership: cannot renew (%s)", self.identity, err)
                        return
                    log.warning("leader keepalive failed, retrying: %s", err)
                    interval = self.ttl / 8
                    continue
                if kv is None or kv.mod_revision != leadership.revision:
                    log.warning("%s lost leadership: the leader key changed", self.identity)
                    return
                last_renewal = sent
        finally:
            leadership.lost.set()
