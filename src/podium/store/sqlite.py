"""SQLite backend: the embedded default store, one file, no acknowledged write ever lost.

::

    asyncio callers ─submit─> queue ─> worker thread (owns the only connection)
                                         │ drain the queue: reads first (a snapshot each),
                                         │ then every write in ONE SQLite transaction,
                                         │ each write in a SAVEPOINT with its own revision
                                         └─ COMMIT (fsync) ─> resolve futures, wake watchers

Tables: ``meta`` (revision, compact revision, schema), ``kv`` (current keys), ``log``
(one row per event, with the previous value for ``prev_kv``; watches replay it) and
``leases`` (TTL and a deadline on the monotonic clock).

- **Group commit.** Writes that queue up while the previous batch fsyncs share one
  COMMIT (one fsync) yet keep one revision each; a failing write rolls back only its
  savepoint. A write is acknowledged only after its COMMIT returns (WAL,
  ``synchronous=FULL``), so kill -9 or power loss loses nothing acknowledged.
- **Watches** read the log: woken in-process after each commit, and polled every
  ``poll_interval`` so writes by another process on the same file are seen too.
- **Leases**: deadlines live in the file, so every process sharing it agrees; a sweeper
  (and every write batch) revokes the expired ones, one revision each. Opening gives
  every lease a fresh full TTL, as etcd does on a leader change, so a restart does not
  expire everything at once. Keepalives commit without fsync: losing one to a power cut
  is harmless because the next open renews every lease anyway.
- **History** is compacted automatically to the last ``history`` revisions
  (``?history=N``, default 100,000), so the log stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from podium.store._protocol import (
    Compare,
    Delete,
    Event,
    KeyValue,
    Lease,
    Op,
    Put,
    RangeResult,
    StoreStatus,
    TxnResult,
)
from podium.store._sqlite_db import (
    _KV_GET,
    _KV_RANGE,
    Clock,
    _bounds,
    _enc,
    _kv,
    _meta,
    _read_events,
    _sweep_state,
    _Tx,
)
from podium.store._sqlite_feed import CommitFeed
from podium.store._sqlite_worker import _Job, _Worker
from podium.store._txn import check_compare, check_txn, check_txn_ops
from podium.store.errors import (
    InvalidRequest,
    InvalidStoreURL,
    LeaseNotFound,
    StoreError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_HISTORY = 100_000


class SQLiteStore:
    """The store contract on one SQLite file. See :class:`podium.store.Store`.

    Bound to the event loop of its first operation, which also opens the file: a file
    that cannot be used raises :class:`StoreError` there, naming it and the fix.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        history: int = DEFAULT_HISTORY,
        clock: Clock = time.monotonic,
        sweep_interval: float = 0.5,
        poll_interval: float = 0.5,
        busy_timeout: float = 5.0,
    ) -> None:
        if history < 1:
            raise InvalidRequest(f"history must keep at least 1 revision, got {history}")
        self.path = Path(path)
        self._history = history
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._worker: _Worker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._feed = CommitFeed()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Parse a ``--store`` URL.

        ``sqlite:///abs/path.db`` and ``sqlite:////abs/path.db`` are absolute;
        ``sqlite:rel/path.db`` and ``sqlite://./rel/path.db`` are relative to the working
        directory; ``~`` expands. Query: ``?history=N`` revisions kept for watches.
        """
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise InvalidStoreURL(f"not a sqlite URL: {url!r}")
        raw = unquote(parts.netloc + parts.path)
        if raw.startswith("//"):
            raw = "/" + raw.lstrip("/")
        if not raw.strip("/"):
            raise InvalidStoreURL(
                f"sqlite URL {url!r} names no file: use e.g. sqlite:///var/lib/podium/podium.db"
            )
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"history"})
        if unknown or parts.fragment:
            raise InvalidStoreURL(
                f"sqlite URL {url!r}: unknown options {unknown or parts.fragment!r} "
                "(supported: ?history=N)"
            )
        history = query.get("history", [str(DEFAULT_HISTORY)])[-1]
        if not history.isdigit() or int(history) < 1:
            raise InvalidStoreURL(
                f"sqlite URL {url!r}: history must be a positive number of revisions"
            )
        return cls(path, history=int(history))

    # -- plumbing ------------------------------------------------------------------

    def _start(self) -> _Worker:
        if self._closed:
            raise StoreError("store is closed")
        if self._worker is None:
            self._loop = asyncio.get_running_loop()
            self._worker = _Worker(self.path, self._clock, self._busy_timeout, self._committed)
            self._sweeper = self._loop.create_task(self._sweep(), name=f"sweep {self.path}")
        return self._worker

    async def _job(self, fn: Callable[[Any], T], *, write: bool, durable: bool = True) -> T:
        worker = self._start()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError("a SQLiteStore is bound to the event loop that first used it")
        future: asyncio.Future[T] = loop.create_future()
        worker.submit(_Job(fn, write, durable, future, loop))
        return await future

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._job(fn, write=False)

    async def _write(self, fn: Callable[[_Tx], T], *, durable: bool = True) -> T:
        return await self._job(fn, write=True, durable=durable)

    def _committed(self, first: int, events: list[Event]) -> None:
        """On the loop, after a batch committed revisions ``first`` on: keep its events
        for the watchers and wake them."""
        self._feed.add(first, events)
        self._changed.set()
        self._changed = asyncio.Event()

    async def _sweep(self) -> None:
        """Expire leases and compact old history, until close."""
        while not self._closed:
            await asyncio.sleep(self._sweep_interval)
            try:
                due, rev, compact = await self._read(partial(_sweep_state, now=self._clock()))
                target = max(compact, rev - self._history)
                if due or target > compact:
                    # every write batch expires the due leases first; compaction rides along
                    await self._write(partial(_Tx.compact, revision=target))
            except StoreError as err:
                log.warning("SQLite store sweep failed, will retry: %s", err)

    # -- Store protocol ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        if not key:
            raise InvalidRequest("empty key")
        k = _enc(key)
        row = await self._read(lambda db: db.execute(_KV_GET, (k,)).fetchone())
        return _kv(row) if row else None

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        if limit < 0:
            raise InvalidRequest(f"limit must be >= 0, got {limit}")
        args = {**_bounds(prefix), "limit": limit or -1}

        def read(db: sqlite3.Connection) -> RangeResult:
            rows = db.execute(_KV_RANGE, args).fetchall()
            return RangeResult(tuple(_kv(r) for r in rows), _meta(db, "revision"))

        return await self._read(read)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        op = Put(key, value, lease)
        check_txn_ops([op])

        def write(tx: _Tx) -> int:
            tx.apply([op], checked=True)
            return tx.rev

        return await self._write(write)

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        op = Delete(key, prefix)
        check_txn_ops([op])

        def write(tx: _Tx) -> tuple[int, int]:
            (result,) = tx.apply([op], checked=True)
            return tx.rev, result.deleted

        return await self._write(write)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        check_txn(compares, success, failure)
        cmps, ok_ops, else_ops = tuple(compares), tuple(success), tuple(failure)

        def write(tx: _Tx) -> TxnResult:
            # the keys the compares read are, unchanged, the previous values of the puts
            # that follow (a key is put at most once per branch): read each once
            seen = tx.get_many([c.key for c in cmps])
            ok = all(check_compare(c, seen[c.key]) for c in cmps)
            results = tx.apply(ok_ops if ok else else_ops, before=seen, checked=True)
            return TxnResult(ok, tx.rev, results)

        return await self._write(write)

    async def grant(self, ttl: int) -> Lease:
        if ttl < 1:
            raise InvalidRequest(f"lease TTL must be at least 1 second, got {ttl}")

        def write(tx: _Tx) -> Lease:
            lease_id = 0
            while not lease_id or tx.lease_alive(lease_id):
                # random ids are never reused, even after a restore from a backup
                lease_id = secrets.randbits(62)
            tx.db.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease_id, ttl, tx.now + ttl))
            return Lease(lease_id, ttl)

        return await self._write(write)

    async def keepalive(self, lease_id: int) -> int:
        def write(tx: _Tx) -> int:
            row = tx.db.execute(
                "UPDATE leases SET deadline = ? + ttl WHERE id = ? RETURNING ttl",
                (tx.now, lease_id),
            ).fetchone()
            if row is None:
                raise LeaseNotFound(lease_id)
            return int(row[0])

        return await self._write(write, durable=False)

    async def revoke(self, lease_id: int) -> None:
        await self._write(partial(_Tx.revoke, lease_id=lease_id))

    async def lease_ttl(self, lease_id: int) -> int:
        row = await self._read(
            lambda db: db.execute(
                "SELECT deadline FROM leases WHERE id = ?", (lease_id,)
            ).fetchone()
        )
        left = row[0] - self._clock() if row else 0.0
        return round(left) if left > 0 else -1

    async def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        if start_revision < 0:
            raise InvalidRequest(f"start_revision must be >= 0, got {start_revision}")
        _enc(prefix)
        next_rev = start_revision or await self.revision() + 1
        from_log = True  # catch up from the log first
        while not self._closed:
            changed = self._changed
            if not from_log:
                batches = self._feed.since(next_rev)
                if batches is None:
                    from_log = True
                elif batches:
                    for batch in batches:
                        for event in batch:
                            if event.kv.mod_revision >= next_rev and event.kv.key.startswith(
                                prefix
                            ):
                                yield event
                        next_rev = batch[-1].revision + 1
                    await asyncio.sleep(0)  # a long feed must not hold the loop
                    continue
            if from_log:
                read = partial(_read_events, prefix=prefix, next_rev=next_rev)
                events, next_rev, more = await self._read(read)
                for event in events:
                    yield event
                if more or self._closed:
                    continue
                from_log = False
            # Woken by a commit in this process: its events are in the feed. A timeout
            # reads the log, for writes by other processes on the same file.
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the wake-up (CPython gh-86296), hanging whoever awaits us.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await changed.wait()
                    continue
            from_log = True

    async def compact(self, revision: int) -> None:
        await self._write(partial(_Tx.compact, revision=revision))

    async def revision(self) -> int:
        return await self._read(partial(_meta, name="revision"))

    async def status(self) -> StoreStatus:
        rev, compact = await self._read(lambda db: (_meta(db, "revision"), _meta(db, "compact")))
        return StoreStatus("sqlite", rev, compact, (str(self.path),))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._changed.set()  # watchers see _closed and end
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._worker is not None:
            self._worker.stop()  # finishes what is already queued first
            await asyncio.to_thread(self._worker.join)


__all__ = ["SQLiteStore"]
