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
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

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
from podium.store._txn import check_compare, check_txn, check_txn_ops, prefix_end_bytes
from podium.store.errors import (
    Compacted,
    InvalidRequest,
    InvalidStoreURL,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]

SCHEMA_VERSION = 1
DEFAULT_HISTORY = 100_000
_MAX_BATCH = 512  # jobs per worker round: bounds the latency a batch adds to its reads
_WATCH_CHUNK = 1000  # revisions a watch reads from the log per query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB NOT NULL UNIQUE, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER NOT NULL, sub INTEGER NOT NULL, type INTEGER NOT NULL, key BLOB NOT NULL,
    value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER NOT NULL, prev_value BLOB, prev_create_rev INTEGER, prev_mod_rev INTEGER,
    prev_version INTEGER, prev_lease INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS log_by_rev ON log (rev, sub);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL, deadline REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_deadline ON leases (deadline);
INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('revision', 1), ('compact', 0)
"""
# Keys are UTF-8 BLOBs: BLOB order is byte order, which is code point order. A prefix
# range is ``key >= :lo AND key < :hi`` with ``:hi`` NULL when there is no upper bound.
_KV_GET = "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?"
_KV_RANGE = (
    "SELECT key, value, create_rev, mod_rev, version, lease FROM kv"
    " WHERE key >= :lo AND (:hi IS NULL OR key < :hi) ORDER BY key LIMIT :limit"
)
_KV_PUT = (
    "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version, lease)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_LOG_INSERT = (
    "INSERT INTO log (rev, sub, type, key, value, create_rev, version, lease,"
    " prev_value, prev_create_rev, prev_mod_rev, prev_version, prev_lease)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_LOG_READ = (
    "SELECT rev, type, key, value, create_rev, version, lease,"
    " prev_value, prev_create_rev, prev_mod_rev, prev_version, prev_lease FROM log"
    " WHERE rev BETWEEN :first AND :last AND key >= :lo AND (:hi IS NULL OR key < :hi)"
    " ORDER BY rev, sub"
)
_LEASE_DUE = "SELECT id FROM leases WHERE deadline <= ? ORDER BY deadline"
_PUT, _DELETE = 0, 1


def _enc(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError as err:
        raise InvalidRequest(f"key {key!r} is not valid UTF-8") from err


def _bounds(prefix: str) -> dict[str, bytes | None]:
    """``:lo``/``:hi`` parameters selecting the keys that start with ``prefix``."""
    lo = _enc(prefix)
    return {"lo": lo, "hi": prefix_end_bytes(lo)}


def _kv(row: Sequence[Any]) -> KeyValue:
    return KeyValue(bytes(row[0]).decode(), bytes(row[1]), row[2], row[3], row[4], row[5])


def _event(row: Sequence[Any]) -> Event:
    rev, kind, key, value, create, version, lease = row[:7]
    name = bytes(key).decode()
    kv = KeyValue(name, bytes(value), create, rev, version, lease)
    prev = None
    if row[9] is not None:
        prev = KeyValue(name, bytes(row[7]), row[8], row[9], row[10], row[11])
    return Event(EventType.PUT if kind == _PUT else EventType.DELETE, kv, prev)


def _meta(db: sqlite3.Connection, name: str) -> int:
    return int(db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


class _Tx:
    """The write transaction of one worker batch: the revision and the write helpers."""

    def __init__(self, db: sqlite3.Connection, now: float) -> None:
        self.db = db
        self.now = now
        self.rev = _meta(db, "revision")

    def get(self, key: str) -> KeyValue | None:
        row = self.db.execute(_KV_GET, (_enc(key),)).fetchone()
        return _kv(row) if row else None

    def range(self, key: str, prefix: bool) -> list[KeyValue]:
        if not prefix:
            kv = self.get(key)
            return [kv] if kv else []
        return [_kv(r) for r in self.db.execute(_KV_RANGE, {**_bounds(key), "limit": -1})]

    def lease_alive(self, lease_id: int) -> bool:
        return bool(self.db.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone())

    def apply(self, ops: Sequence[Op]) -> tuple[OpResult, ...]:
        """Apply ``ops`` at one new revision (taken only if something is written)."""
        check_txn_ops(ops)
        for op in ops:
            if isinstance(op, Put) and op.lease and not self.lease_alive(op.lease):
                raise LeaseNotFound(op.lease)
        rev, sub = self.rev + 1, 0
        results: list[OpResult] = []
        for op in ops:
            if isinstance(op, Put):
                prev = self.get(op.key)
                create, version = (prev.create_revision, prev.version + 1) if prev else (rev, 1)
                kv = KeyValue(op.key, op.value, create, rev, version, op.lease)
                self.db.execute(_KV_PUT, (_enc(op.key), op.value, create, rev, version, op.lease))
                self._log(sub, Event(EventType.PUT, kv, prev))
                sub += 1
                results.append(OpResult())
            elif isinstance(op, Delete):
                victims = self.range(op.key, op.prefix)
                for prev in victims:
                    self.db.execute("DELETE FROM kv WHERE key = ?", (_enc(prev.key),))
                    tomb = replace(prev, value=b"", mod_revision=rev, version=0, lease=0)
                    self._log(sub, Event(EventType.DELETE, tomb, prev))
                    sub += 1
                results.append(OpResult(deleted=len(victims)))
            else:
                results.append(OpResult(kvs=tuple(self.range(op.key, op.prefix))))
        if sub:
            self.db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
            self.rev = rev
        return tuple(results)

    def _log(self, sub: int, event: Event) -> None:
        kv, p = event.kv, event.prev_kv
        prev = (
            (p.value, p.create_revision, p.mod_revision, p.version, p.lease) if p else (None,) * 5
        )
        kind = _PUT if event.type is EventType.PUT else _DELETE
        row = (kv.mod_revision, sub, kind, _enc(kv.key), kv.value, kv.create_revision)
        self.db.execute(_LOG_INSERT, (*row, kv.version, kv.lease, *prev))

    def revoke(self, lease_id: int) -> None:
        """Delete a lease and its keys (one revision, in key order, as etcd does)."""
        if not self.db.execute("DELETE FROM leases WHERE id = ?", (lease_id,)).rowcount:
            return
        rows = self.db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,))
        keys = [bytes(r[0]).decode() for r in rows]
        if keys:
            self.apply([Delete(k) for k in keys])

    def expire(self) -> None:
        """Revoke every lease whose deadline has passed, oldest first."""
        for (lease_id,) in self.db.execute(_LEASE_DUE, (self.now,)).fetchall():
            self.revoke(lease_id)

    def compact(self, revision: int) -> None:
        if revision > self.rev:
            raise InvalidRequest(f"cannot compact to {revision}: current revision is {self.rev}")
        if revision <= _meta(self.db, "compact"):
            return
        self.db.execute("UPDATE meta SET value = ? WHERE name = 'compact'", (revision,))
        self.db.execute("DELETE FROM log WHERE rev < ?", (revision,))


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
        self, path: Path, clock: Clock, busy_timeout: float, on_commit: Callable[[], None]
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
                rev = tx.rev
                db.execute("SAVEPOINT job")
                try:
                    result = job.fn(tx)
                except Exception as err:
                    db.execute("ROLLBACK TO job")
                    tx.rev = rev
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
                jobs[0].loop.call_soon_threadsafe(self._on_commit)


def _sweep_state(db: sqlite3.Connection, now: float) -> tuple[bool, int, int]:
    """(is a lease due?, revision, compact revision), for the sweeper."""
    due = db.execute(_LEASE_DUE + " LIMIT 1", (now,)).fetchone()
    return due is not None, _meta(db, "revision"), _meta(db, "compact")


def _read_events(
    db: sqlite3.Connection, prefix: str, next_rev: int
) -> tuple[list[Event], int, bool]:
    """One chunk of events from ``next_rev`` on: (events, next revision to read, more?)."""
    rev, compact = _meta(db, "revision"), _meta(db, "compact")
    if next_rev < compact:
        raise Compacted(next_rev, compact)
    last = min(rev, next_rev + _WATCH_CHUNK - 1)
    if last < next_rev:
        return [], next_rev, False
    rows = db.execute(_LOG_READ, {"first": next_rev, "last": last, **_bounds(prefix)})
    return [_event(r) for r in rows], last + 1, last < rev


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

    def _committed(self) -> None:
        """On the loop, after a batch that advanced the revision: wake the watchers."""
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
            tx.apply([op])
            return tx.rev

        return await self._write(write)

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        op = Delete(key, prefix)
        check_txn_ops([op])

        def write(tx: _Tx) -> tuple[int, int]:
            (result,) = tx.apply([op])
            return tx.rev, result.deleted

        return await self._write(write)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        check_txn(compares, success, failure)
        cmps, ok_ops, else_ops = tuple(compares), tuple(success), tuple(failure)

        def write(tx: _Tx) -> TxnResult:
            ok = all(check_compare(c, tx.get(c.key)) for c in cmps)
            results = tx.apply(ok_ops if ok else else_ops)
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
        while not self._closed:
            changed = self._changed
            read = partial(_read_events, prefix=prefix, next_rev=next_rev)
            events, next_rev, more = await self._read(read)
            for event in events:
                yield event
            if more or self._closed:
                continue
            # Woken by a commit in this process; the timeout catches other processes.
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the wake-up (CPython gh-86296), hanging whoever awaits us.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await changed.wait()

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
