"""SQLite backend, the worker thread: owns the only connection, batches writes into group commits.

See the diagram in :mod:`podium.store.sqlite`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.store._protocol import Event
from podium.store._sqlite_db import _LEASE_DUE, _SCHEMA, SCHEMA_VERSION, Clock, _meta, _Tx
from podium.store.errors import (
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

_MAX_BATCH = 512  # jobs per worker round: bounds the latency a batch adds to its reads


CACHE_KIB = 256 * 1024  # page cache per connection
MMAP_BYTES = 4 << 30  # the file is read through a map up to this size


@dataclass(slots=True)
class _Job:
    fn: Callable[[Any], Any]  # reads get the connection, writes a _Tx
    write: bool
    durable: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _deliver(job: _Job, result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if job.future.done():  # the caller gave up (cancelled); the write stands
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
        job.loop.call_soon_threadsafe(settle)


class _Worker:
    """The thread that owns the SQLite connection and runs every job, batching writes."""

    def __init__(
        self,
        path: Path,
        clock: Clock,
        busy_timeout: float,
        on_commit: Callable[[int, list[Event]], None],
    ) -> None:
        self._path = path
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._db: sqlite3.Connection | None = None
        self._durable = True
        self._thread = threading.Thread(target=self._run, name=f"podium-sqlite:{path}")
        self._thread.daemon = True  # a store never closed must not hang interpreter exit
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        """Ask the thread to finish the jobs already queued, close the file and exit."""
        self._queue.put(None)

    def join(self) -> None:
        self._thread.join()

    # -- on the worker thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                batch = [self._queue.get()]
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = None in batch
                self._process([j for j in batch if j is not None])
        finally:
            if self._db is not None:
                self._db.close()

    def _error(self, err: sqlite3.Error) -> StoreError:
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

    def _init(self, db: sqlite3.Connection) -> None:
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
        db.execute("UPDATE leases SET deadline = ? + ttl", (self._clock(),))
        db.execute("COMMIT")

    def _open(self) -> sqlite3.Connection:
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
            raise self._error(err) from err
        try:
            self._init(db)
        except sqlite3.Error as err:
            db.close()
            raise self._error(err) from err
        except BaseException:
            db.close()
            raise
        return db

    def _process(self, jobs: list[_Job]) -> None:
        if self._db is None:
            try:
                self._db = self._open()
            except StoreError as err:
                for job in jobs:
                    _deliver(job, None, err)
                return
        db = self._db
        for job in jobs:
            if not job.write:
                self._read(db, job)
        writes = [j for j in jobs if j.write]
        if writes:
            self._write(db, writes)

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _read(self, db: sqlite3.Connection, job: _Job) -> None:
        try:
            db.execute("BEGIN")  # one snapshot for everything the job reads
            result = job.fn(db)
            db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback(db)
            _deliver(job, None, self._error(err))
        except Exception as err:
            self._rollback(db)
            _deliver(job, None, err)
        else:
            _deliver(job, result, None)

    def _set_durable(self, db: sqlite3.Connection, durable: bool) -> None:
        if durable != self._durable:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    def _write(self, db: sqlite3.Connection, jobs: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            now = self._clock()
            # Lease expiry deletes keys: a batch that may expire one is fsynced too.
            due = db.execute(_LEASE_DUE + " LIMIT 1", (now,)).fetchone()
            self._set_durable(db, due is not None or any(j.durable for j in jobs))
            db.execute("BEGIN IMMEDIATE")
            tx = _Tx(db, now)
            start = tx.rev
            tx.expire()
            for job in jobs:
                rev, written = tx.rev, len(tx.events)
                db.execute("SAVEPOINT job")
                try:
                    result = job.fn(tx)
                except Exception as err:
                    db.execute("ROLLBACK TO job")
                    tx.rev = rev
                    del tx.events[written:]
                    outcomes.append(
                        (job, None, self._error(err) if isinstance(err, sqlite3.Error) else err)
                    )
                else:
                    outcomes.append((job, result, None))
                db.execute("RELEASE job")
            db.execute("COMMIT")
        except Exception as err:
            # The batch is not durable, so none of its writes happened: all of them fail.
            self._rollback(db)
            if isinstance(err, sqlite3.Error):
                failure = self._error(err)
            else:  # a bug: say so loudly, but keep serving
                log.exception("SQLite store %s: a write batch failed", self._path)
                failure = StoreError(f"SQLite store {self._path}: internal error {err!r}")
            for job in jobs:
                _deliver(job, None, failure)
            return
        for job, result, error in outcomes:
            _deliver(job, result, error)
        if tx.rev != start:
            with contextlib.suppress(RuntimeError):
                jobs[0].loop.call_soon_threadsafe(self._on_commit, start + 1, tx.events)
