"""SQLite backend: the embedded default store, one file, no acknowledged write ever lost.

::

    asyncio callers ─submit─> queue ─> worker (owns the only connection): a thread, or a
                                         │ process of its own (``worker="process"``)
                                         │ drain the queue: reads first (one snapshot),
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
- **Watches** take each committed batch's events from an in-process feed, and read the
  log for what the feed cannot vouch for: history, and writes by another process on the
  same file, which a poll every ``poll_interval`` picks up.
- **Bulk writes** (``podium.store.bulk_writes()``) wait in a lane of their own: every
  batch takes the other jobs first, then at most a few bulk transactions.
- **Worker process.** A server's store (``from_url``) runs the worker in a child
  process, so the store's Python does not wait for the GIL the controllers hold; jobs
  and outcomes cross a socket pickled. Embedded stores default to a thread.
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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from podium.store import _sqlite_ops as ops
from podium.store._priority import in_bulk
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
from podium.store._sqlite_db import Clock, _enc, _meta, _read_events, _sweep_state
from podium.store._sqlite_feed import CommitFeed
from podium.store._sqlite_process import ProcessWorker
from podium.store._sqlite_worker import Outcome, ThreadWorker, Work, Worker
from podium.store._txn import check_txn, check_txn_ops, prefix_end_bytes
from podium.store.errors import (
    InvalidRequest,
    InvalidStoreURL,
    StoreError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
WorkerKind = Literal["thread", "process"]
WORKER_KINDS: tuple[str, ...] = get_args(WorkerKind)
FEED_SLICE = 512  # events a watch hands over between two turns of the event loop
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
        worker: WorkerKind = "thread",
    ) -> None:
        if history < 1:
            raise InvalidRequest(f"history must keep at least 1 revision, got {history}")
        self.path = Path(path)
        self._history = history
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        if worker not in WORKER_KINDS:
            raise InvalidRequest(f"worker must be one of {WORKER_KINDS}, got {worker!r}")
        self.worker_kind: WorkerKind = worker
        self._worker: Worker | None = None
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
        directory; ``~`` expands. Query: ``?history=N`` revisions kept for watches;
        ``?worker=process`` (the default here: a server's store) or ``thread``.
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
        unknown = sorted(set(query) - {"history", "worker"})
        if unknown or parts.fragment:
            raise InvalidStoreURL(
                f"sqlite URL {url!r}: unknown options {unknown or parts.fragment!r} "
                "(supported: ?history=N, ?worker=process|thread)"
            )
        worker = query.get("worker", ["process"])[-1]
        if worker not in WORKER_KINDS:
            raise InvalidStoreURL(
                f"sqlite URL {url!r}: worker must be 'process' (the store's work on a core "
                f"of its own) or 'thread' (in the server's process), got {worker!r}"
            )
        history = query.get("history", [str(DEFAULT_HISTORY)])[-1]
        if not history.isdigit() or int(history) < 1:
            raise InvalidStoreURL(
                f"sqlite URL {url!r}: history must be a positive number of revisions"
            )
        return cls(path, history=int(history), worker=worker)  # type: ignore[arg-type]

    # -- plumbing ------------------------------------------------------------------

    def _start(self) -> Worker:
        if self._closed:
            raise StoreError("store is closed")
        if self._worker is None:
            self._loop = asyncio.get_running_loop()
            kind = ProcessWorker if self.worker_kind == "process" else ThreadWorker
            self._worker = kind(self.path, self._busy_timeout, self._loop, self._settle)
            self._sweeper = self._loop.create_task(self._sweep(), name=f"sweep {self.path}")
        return self._worker

    async def _job(self, fn: Callable[..., T], *, write: bool, durable: bool = True) -> T:
        """Run ``fn`` (a partial of a :mod:`_sqlite_ops` function: it may be pickled)."""
        worker = self._start()
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError("a SQLiteStore is bound to the event loop that first used it")
        future: asyncio.Future[T] = loop.create_future()
        worker.submit(Work(fn, write, durable, self._clock(), in_bulk()), future)
        return await future

    async def _read(self, fn: Callable[..., T]) -> T:
        return await self._job(fn, write=False)

    async def _write(self, fn: Callable[..., T], *, durable: bool = True) -> T:
        return await self._job(fn, write=True, durable=durable)

    def _settle(
        self,
        futures: list[asyncio.Future[Any]],
        outcomes: list[Outcome],
        first: int,
        events: list[Event],
    ) -> None:
        """On the loop: a batch is done. Its jobs' callers learn first, then watchers."""
        for future, (result, error) in zip(futures, outcomes, strict=True):
            if future.done():  # the caller gave up (cancelled); the write stands
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        if events:
            self._committed(first, events)

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
                    await self._write(partial(ops.compact, revision=target))
            except StoreError as err:
                log.warning("SQLite store sweep failed, will retry: %s", err)

    # -- Store protocol ------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        if not key:
            raise InvalidRequest("empty key")
        return await self._read(partial(ops.get, key=_enc(key)))

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        if limit < 0:
            raise InvalidRequest(f"limit must be >= 0, got {limit}")
        lo = _enc(prefix)
        job = partial(ops.range_, lo=lo, hi=prefix_end_bytes(lo), limit=limit or -1)
        return await self._read(job)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        op = Put(key, value, lease)
        check_txn_ops([op])
        return await self._write(partial(ops.put, op=op))

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        op = Delete(key, prefix)
        check_txn_ops([op])
        return await self._write(partial(ops.delete, op=op))

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        check_txn(compares, success, failure)
        job = partial(ops.txn, cmps=tuple(compares), ok_ops=tuple(success), else_ops=tuple(failure))
        return await self._write(job)

    async def grant(self, ttl: int) -> Lease:
        if ttl < 1:
            raise InvalidRequest(f"lease TTL must be at least 1 second, got {ttl}")
        return await self._write(partial(ops.grant, ttl=ttl))

    async def keepalive(self, lease_id: int) -> int:
        return await self._write(partial(ops.keepalive, lease_id=lease_id), durable=False)

    async def revoke(self, lease_id: int) -> None:
        await self._write(partial(ops.revoke, lease_id=lease_id))

    async def lease_ttl(self, lease_id: int) -> int:
        deadline = await self._read(partial(ops.lease_deadline, lease_id=lease_id))
        left = deadline - self._clock() if deadline is not None else 0.0
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
                    sent = 0
                    for batch in batches:
                        for event in batch:
                            if event.kv.mod_revision >= next_rev and event.kv.key.startswith(
                                prefix
                            ):
                                yield event
                                sent += 1
                                if sent % FEED_SLICE == 0:
                                    # a rollout commits thousands of events per batch, and a
                                    # consumer that does not await would hold the loop for all
                                    await asyncio.sleep(0)
                        next_rev = batch[-1].revision + 1
                    await asyncio.sleep(0)  # a long feed must not hold the loop
                    continue
            if from_log:
                read = partial(_read_events, prefix=prefix, next_rev=next_rev)
                events, next_rev, more = await self._read(read)
                for sent, event in enumerate(events, 1):
                    yield event
                    if sent % FEED_SLICE == 0:
                        await asyncio.sleep(0)
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
        await self._write(partial(ops.compact, revision=revision))

    async def revision(self) -> int:
        return await self._read(partial(_meta, name="revision"))

    async def status(self) -> StoreStatus:
        rev, compact = await self._read(ops.revisions)
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
