"""SQLite backend, the worker: owns the only connection, batches writes into group commits.

See the diagram in :mod:`podium.store.sqlite`. :class:`Engine` runs one batch of jobs
on the connection; :class:`ThreadWorker` drives it from a thread of this process, and
:mod:`podium.store._sqlite_process` from a process of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from podium.store._protocol import Event
from podium.store._sqlite_db import _LEASE_DUE, _SCHEMA, SCHEMA_VERSION, _meta, _Tx, logged_event
from podium.store.errors import (
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 512  # jobs per worker round: bounds the latency a batch adds to its reads
# Bulk jobs (podium.store.bulk_writes) per round, after every other job: each is a
# transaction of up to 128 operations, so 16 of them are ~0.1 s of work, which is then
# the most an API request or a keepalive waits behind them.
BULK_BATCH = 16


CACHE_KIB = 256 * 1024  # page cache per connection
MMAP_BYTES = 4 << 30  # the file is read through a map up to this size

Outcome = tuple[Any, BaseException | None]  # (result, error) of one job
# On the event loop: the futures of a batch's jobs, their outcomes, and the first
# revision and the events the batch committed (none: nothing committed).
Settle = Callable[[list["asyncio.Future[Any]"], list[Outcome], int, list[Event]], None]


@dataclass(slots=True)
class Work:
    """One job: ``fn`` gets the connection (a read) or the batch's ``_Tx`` (a write)."""

    fn: Callable[[Any], Any]
    write: bool
    durable: bool
    now: float  # the store's clock when the job was submitted
    bulk: bool = False  # submitted inside bulk_writes(): others may go first


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]  # one per job, in the order given
    first: int  # the first revision the batch committed (0: none)
    rows: list[tuple[Any, ...]]  # the log rows it committed, in order


class Worker(Protocol):
    """Runs the store's jobs; each job's future is settled on the store's event loop."""

    def submit(self, work: Work, future: asyncio.Future[Any]) -> None: ...

    def stop(self) -> None:
        """Finish the jobs already submitted, close the file, end."""

    def join(self) -> None:
        """Wait until stopped (blocking: call it off the event loop)."""


class Engine:
    """The one connection and what a batch does on it (no thread of its own).

    Reads run first, all on one snapshot; then every write in ONE SQLite transaction,
    each in a SAVEPOINT with its own revision, and one COMMIT (fsync) for all.
    """

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._durable = True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def run(self, works: list[Work]) -> BatchResult:
        outcomes: list[Outcome] = [(None, None)] * len(works)
        result = BatchResult(outcomes, 0, [])
        if self._db is None:
            try:
                self._db = self._open(max(w.now for w in works))
            except StoreError as err:
                result.outcomes[:] = [(None, err)] * len(works)
                return result
        db = self._db
        reads = [i for i, w in enumerate(works) if not w.write]
        if reads:
            self._read(db, works, reads, outcomes)
        writes = [i for i, w in enumerate(works) if w.write]
        if writes:
            self._write(db, works, writes, result)
        return result

    def error(self, err: sqlite3.Error) -> StoreError:
        text = str(err)
        if "locked" in text or "busy" in text:
            return StoreUnavailable(
                f"SQLite store {self._path} is locked by another process ({text}); retry"
            )
        if "not a database" in text or "malformed" in text:
            return StoreError(
                f"SQLite store {self._path} is corrupt or not a database ({text}): restore "
                "it from a backup, or move it aside to start an empty store"
            )
        if "readonly" in text or "unable to open" in text or "disk" in text:
            return StoreError(
                f"cannot write the SQLite store {self._path} ({text}): check that the disk "
                "has space and the file and its folder are writable, or pass another --store"
            )
        return StoreError(f"SQLite store {self._path}: {text}")

    def _init(self, db: sqlite3.Connection, now: float) -> None:
        """Set the file up (WAL, schema) and renew every lease's TTL."""
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(
                f"SQLite store {self._path}: cannot use WAL mode here (got {mode!r}); "
                "put the file on a local filesystem"
            )
        db.execute("PRAGMA synchronous=FULL")
        # SQLite's default page cache is 2 MB; at a million guests the file is gigabytes
        # and every B-tree descent then copies pages in from the OS. 256 MB of cache and
        # reads through a memory map keep the hot pages in the process.
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        db.execute("BEGIN IMMEDIATE")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if tables and "meta" not in tables:
            raise StoreError(
                f"{self._path} is a SQLite database but not a podium store: "
                "pass another --store path"
            )
        for statement in _SCHEMA.split(";"):  # (executescript would COMMIT first)
            db.execute(statement)
        schema = _meta(db, "schema")
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self._path} has schema {schema}, newer than this podium "
                f"({SCHEMA_VERSION}): upgrade podium"
            )
        # Fresh TTLs for every lease: deadlines from before a restart (or a reboot,
        # where the monotonic clock restarted) mean nothing now.
        db.execute("UPDATE leases SET deadline = ? + ttl", (now,))
        db.execute("COMMIT")

    def _open(self, now: float) -> sqlite3.Connection:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(
                f"cannot create the folder of the SQLite store {self._path} ({err.strerror}): "
                "create it or pass another --store"
            ) from err
        try:
            db = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise self.error(err) from err
        try:
            self._init(db, now)
        except sqlite3.Error as err:
            db.close()
            raise self.error(err) from err
        except BaseException:
            db.close()
            raise
        return db

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _read(
        self, db: sqlite3.Connection, works: list[Work], reads: list[int], out: list[Outcome]
    ) -> None:
        """Every read of the batch on one snapshot (a failing read ends it; the rest
        get a new one)."""
        for i in reads:
            try:
                if not db.in_transaction:
                    db.execute("BEGIN")
                out[i] = (works[i].fn(db), None)
            except sqlite3.Error as err:
                self._rollback(db)
                out[i] = (None, self.error(err))
            except Exception as err:
                self._rollback(db)
                out[i] = (None, err)
        if db.in_transaction:
            try:
                db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback(db)

    def _set_durable(self, db: sqlite3.Connection, durable: bool) -> None:
        if durable != self._durable:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    def _write(
        self, db: sqlite3.Connection, works: list[Work], writes: list[int], result: BatchResult
    ) -> None:
        out = result.outcomes
        try:
            now = max(works[i].now for i in writes)
            # Lease expiry deletes keys: a batch that may expire one is fsynced too.
            due = db.execute(_LEASE_DUE + " LIMIT 1", (now,)).fetchone()
            self._set_durable(db, due is not None or any(works[i].durable for i in writes))
            db.execute("BEGIN IMMEDIATE")
            tx = _Tx(db, now)
            start = tx.rev
            if due is not None:
                tx.expire()
            for i in writes:
                rev, written = tx.rev, len(tx.rows)
                db.execute("SAVEPOINT job")
                try:
                    out[i] = (works[i].fn(tx), None)
                except Exception as err:
                    db.execute("ROLLBACK TO job")
                    tx.rev = rev
                    del tx.rows[written:]
                    out[i] = (None, self.error(err) if isinstance(err, sqlite3.Error) else err)
                db.execute("RELEASE job")
            db.execute("COMMIT")
        except Exception as err:
            # The batch is not durable, so none of its writes happened: all of them fail.
            self._rollback(db)
            if isinstance(err, sqlite3.Error):
                failure = self.error(err)
            else:  # a bug: say so loudly, but keep serving
                log.exception("SQLite store %s: a write batch failed", self._path)
                failure = StoreError(f"SQLite store {self._path}: internal error {err!r}")
            for i in writes:
                out[i] = (None, failure)
            return
        if tx.rev != start:
            result.first = start + 1
            result.rows = tx.rows


class Lanes(Generic[T]):
    """The jobs waiting for the engine, in two lanes, and the next batch from them.

    ``source`` delivers lists of jobs (None: stop). A batch takes every job waiting in
    the ordinary lane (up to ``MAX_BATCH``), then up to ``BULK_BATCH`` bulk jobs, oldest
    first; the bulk jobs left wait for later batches while new ordinary jobs overtake
    them. Once the stop has come and both lanes are empty, :meth:`next_batch` returns
    None.
    """

    def __init__(
        self, source: queue.SimpleQueue[list[T] | None], work_of: Callable[[T], Work]
    ) -> None:
        self._source = source
        self._work_of = work_of
        self._now: collections.deque[T] = collections.deque()
        self._bulk: collections.deque[T] = collections.deque()
        self._stopped = False

    def next_batch(self) -> list[T] | None:
        if not (self._now or self._bulk or self._stopped):
            self._add(self._source.get())  # wait for work
        while not self._stopped:  # and take whatever else came meanwhile
            try:
                self._add(self._source.get_nowait())
            except queue.Empty:
                break
        batch = [self._now.popleft() for _ in range(min(len(self._now), MAX_BATCH))]
        room = min(BULK_BATCH, MAX_BATCH - len(batch))
        batch += [self._bulk.popleft() for _ in range(min(len(self._bulk), room))]
        return batch if batch or not self._stopped else None

    def _add(self, jobs: list[T] | None) -> None:
        if jobs is None:
            self._stopped = True
            return
        for job in jobs:
            (self._bulk if self._work_of(job).bulk else self._now).append(job)


def take_batch(source: queue.SimpleQueue[T | None]) -> tuple[list[T], bool]:
    """The next batch: wait for one item, then take what else is queued, up to
    ``MAX_BATCH``. Returns (the items, whether a stop (None) came with them)."""
    batch = [source.get()]
    while len(batch) < MAX_BATCH:
        try:
            batch.append(source.get_nowait())
        except queue.Empty:
            break
    return [item for item in batch if item is not None], None in batch


def settle_later(
    loop: asyncio.AbstractEventLoop,
    settle: Settle,
    futures: list[asyncio.Future[Any]],
    outcomes: list[Outcome],
    *,
    first: int = 0,
    events: list[Event] | None = None,
) -> None:
    """Hand a batch's outcomes to the event loop (from a worker thread)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        loop.call_soon_threadsafe(settle, futures, outcomes, first, events or [])


class ThreadWorker:
    """The engine on a thread of this process: the jobs' Python shares the GIL."""

    def __init__(
        self, path: Path, busy_timeout: float, loop: asyncio.AbstractEventLoop, settle: Settle
    ) -> None:
        self._engine = Engine(path, busy_timeout)
        self._loop = loop
        self._settle = settle
        self._queue: queue.SimpleQueue[list[tuple[Work, asyncio.Future[Any]]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=f"podium-sqlite:{path}")
        self._thread.daemon = True  # a store never closed must not hang interpreter exit
        self._thread.start()

    def submit(self, work: Work, future: asyncio.Future[Any]) -> None:
        self._queue.put([(work, future)])

    def stop(self) -> None:
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        lanes = Lanes(self._queue, lambda item: item[0])
        try:
            while (items := lanes.next_batch()) is not None:
                result = self._engine.run([work for work, _ in items])
                events = [logged_event(row) for row in result.rows]
                futures = [future for _, future in items]
                settle_later(
                    self._loop,
                    self._settle,
                    futures,
                    result.outcomes,
                    first=result.first,
                    events=events,
                )
        finally:
            self._engine.close()
