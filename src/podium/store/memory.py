"""In-memory store: the reference model of the store contract, for unit tests.

Not durable. Single event loop. Lease expiry is checked on every operation and by a
background sweep, against an injectable monotonic clock.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from podium.store._protocol import (
    Compare,
    Delete,
    Event,
    EventType,
    KeyValue,
    Lease,
    Op,
    OpResult,
    Put,
    RangeResult,
    StoreStatus,
    TxnResult,
)
from podium.store._txn import check_compare, check_txn, check_txn_ops, prefix_end
from podium.store.errors import Compacted, InvalidRequest, LeaseNotFound, StoreError

Clock = Callable[[], float]


class MemoryStore:
    """The store contract in a few dicts. See :class:`podium.store.Store`."""

    def __init__(self, *, clock: Clock = time.monotonic, sweep_interval: float = 0.1) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._kv: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for prefix ranges
        self._rev = 1  # etcd starts at revision 1 with an empty keyspace
        self._compact_rev = 0
        self._history: list[Event] = []
        self._leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, deadline)
        self._lease_ids = itertools.count(0x1000)
        self._changed = asyncio.Event()
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    # -- internals -----------------------------------------------------------------

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while not self._closed:
            self.expire_leases()
            await asyncio.sleep(self._sweep_interval)

    def expire_leases(self) -> None:
        """Revoke every lease whose deadline has passed (called by the sweeper)."""
        now = self._clock()
        for lease_id, (_, deadline) in list(self._leases.items()):
            if deadline <= now:
                self._revoke_now(lease_id)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        self._ensure_sweeper()
        self.expire_leases()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _range(self, key: str, prefix: bool) -> list[KeyValue]:
        if not prefix:
            kv = self._kv.get(key)
            return [kv] if kv else []
        lo = bisect.bisect_left(self._keys, key)
        hi = bisect.bisect_left(self._keys, prefix_end(key))
        return [self._kv[k] for k in self._keys[lo:hi]]

    def _apply_put(self, op: Put, rev: int, events: list[Event]) -> OpResult:
        if op.lease and op.lease not in self._leases:
            raise LeaseNotFound(op.lease)
        prev = self._kv.get(op.key)
        kv = KeyValue(
            key=op.key,
            value=op.value,
            create_revision=prev.create_revision if prev else rev,
            mod_revision=rev,
            version=prev.version + 1 if prev else 1,
            lease=op.lease,
        )
        if prev is None:
            bisect.insort(self._keys, op.key)
        self._kv[op.key] = kv
        events.append(Event(EventType.PUT, kv, prev))
        return OpResult()

    def _apply_delete(self, op: Delete, rev: int, events: list[Event]) -> OpResult:
        victims = self._range(op.key, op.prefix)
        for prev in victims:
            del self._kv[prev.key]
            self._keys.pop(bisect.bisect_left(self._keys, prev.key))
            tomb = replace(prev, value=b"", mod_revision=rev, version=0, lease=0)
            events.append(Event(EventType.DELETE, tomb, prev))
        return OpResult(deleted=len(victims))

    def _write(self, ops: Sequence[Op]) -> tuple[int, tuple[OpResult, ...]]:
        """Apply ops atomically at one new revision (only if something is written)."""
        check_txn_ops(ops)
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise LeaseNotFound(op.lease)
        rev = self._rev + 1
        events: list[Event] = []
        results: list[OpResult] = []
        for op in ops:
            if isinstance(op, Put):
                results.append(self._apply_put(op, rev, events))
            elif isinstance(op, Delete):
                results.append(self._apply_delete(op, rev, events))
            else:
                results.append(OpResult(kvs=tuple(self._range(op.key, op.prefix))))
        if events:
            self._rev = rev
            self._history.extend(events)
            self._notify()
        return self._rev, tuple(results)

    def _revoke_now(self, lease_id: int) -> None:
        if self._leases.pop(lease_id, None) is None:
            return
        # etcd deletes a lease's keys in key order (its lessor sorts them)
        keys = sorted(kv.key for kv in self._kv.values() if kv.lease == lease_id)
        if keys:
            self._write([Delete(k) for k in keys])

    # -- Store protocol ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        if not key:
            raise InvalidRequest("empty key")
        return self._kv.get(key)

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        self._check_open()
        kvs = self._range(prefix, True)
        return RangeResult(tuple(kvs[:limit] if limit else kvs), self._rev)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._check_open()
        rev, _ = self._write([Put(key, value, lease)])
        return rev

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        self._check_open()
        rev, results = self._write([Delete(key, prefix)])
        return rev, results[0].deleted

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._check_open()
        check_txn(compares, success, failure)
        ok = all(check_compare(c, self._kv.get(c.key)) for c in compares)
        rev, results = self._write(success if ok else failure)
        return TxnResult(ok, rev, results)

    async def grant(self, ttl: int) -> Lease:
        self._check_open()
        if ttl < 1:
            raise InvalidRequest(f"lease TTL must be at least 1 second, got {ttl}")
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = (ttl, self._clock() + ttl)
        return Lease(lease_id, ttl)

    async def keepalive(self, lease_id: int) -> int:
        self._check_open()
        if lease_id not in self._leases:
            raise LeaseNotFound(lease_id)
        ttl, _ = self._leases[lease_id]
        self._leases[lease_id] = (ttl, self._clock() + ttl)
        return ttl

    async def revoke(self, lease_id: int) -> None:
        self._check_open()
        self._revoke_now(lease_id)

    async def lease_ttl(self, lease_id: int) -> int:
        self._check_open()
        if lease_id not in self._leases:
            return -1
        return max(0, round(self._leases[lease_id][1] - self._clock()))

    async def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        self._check_open()
        if start_revision and start_revision < self._compact_rev:
            raise Compacted(start_revision, self._compact_rev)
        next_rev = start_revision or self._rev + 1
        while not self._closed:
            changed = self._changed
            revs = [e.revision for e in self._history]
            start = bisect.bisect_left(revs, next_rev)
            for event in self._history[start:]:
                if event.kv.key.startswith(prefix):
                    yield event
                next_rev = event.revision + 1
            await changed.wait()

    async def compact(self, revision: int) -> None:
        self._check_open()
        if revision > self._rev:
            raise InvalidRequest(f"cannot compact to {revision}: current revision is {self._rev}")
        self._compact_rev = max(self._compact_rev, revision)
        self._history = [e for e in self._history if e.revision >= self._compact_rev]

    async def revision(self) -> int:
        self._check_open()
        return self._rev

    async def status(self) -> StoreStatus:
        self._check_open()
        return StoreStatus("memory", self._rev, self._compact_rev)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notify()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)


__all__ = ["Clock", "MemoryStore"]
