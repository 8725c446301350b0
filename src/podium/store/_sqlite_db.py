"""SQLite backend, the database layer: schema, encodings, and one store transaction (``_Tx``).

Everything here runs on the worker thread that owns the connection (see ``sqlite``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from podium.store._protocol import (
    Delete,
    Event,
    EventType,
    KeyValue,
    Op,
    OpResult,
    Put,
)
from podium.store._txn import check_txn_ops, prefix_end_bytes
from podium.store.errors import (
    Compacted,
    InvalidRequest,
    LeaseNotFound,
)

Clock = Callable[[], float]
SCHEMA_VERSION = 1
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
# range is ``key >= :lo AND key < :hi``, or ``key >= :lo`` when it has no upper bound.
_KV_GET = "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?"
# Two statements, not one with ``(:hi IS NULL OR key < :hi)``: SQLite cannot bound an
# index search by an OR, so that form scans every key from :lo to the end of the table
# (a read of an empty prefix then cost a scan of a million guests).
_KV_RANGE = (
    "SELECT key, value, create_rev, mod_rev, version, lease FROM kv"
    " WHERE key >= :lo AND key < :hi ORDER BY key LIMIT :limit"
)
_KV_RANGE_TO_END = (
    "SELECT key, value, create_rev, mod_rev, version, lease FROM kv"
    " WHERE key >= :lo ORDER BY key LIMIT :limit"
)
_KV_PUT = "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, version, lease) VALUES "
_LOG_INSERT = (
    "INSERT INTO log (rev, sub, type, key, value, create_rev, version, lease,"
    " prev_value, prev_create_rev, prev_mod_rev, prev_version, prev_lease) VALUES "
)
_KV_GET_MANY = "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key IN "
# Rows per multi-row statement, and keys per IN list, are powers of two up to these: a
# handful of distinct statements, each prepared once (the connection caches them).
_MAX_ROWS = 64
_MAX_KEYS = 256
_LOG_READ = (
    "SELECT rev, sub, type, key, value, create_rev, version, lease,"
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


def kv_get(db: sqlite3.Connection, raw: bytes) -> KeyValue | None:
    """The key ``raw`` (UTF-8) as stored, or None."""
    row = db.execute(_KV_GET, (raw,)).fetchone()
    return _kv(row) if row else None


def kv_range(db: sqlite3.Connection, lo: bytes, hi: bytes | None, limit: int) -> list[KeyValue]:
    """The keys in ``[lo, hi)`` (``hi`` None: to the end), in order, at most ``limit``
    (-1: all)."""
    if hi is None:
        rows = db.execute(_KV_RANGE_TO_END, {"lo": lo, "limit": limit})
    else:
        rows = db.execute(_KV_RANGE, {"lo": lo, "hi": hi, "limit": limit})
    return [_kv(r) for r in rows]


def _kv(row: Sequence[Any]) -> KeyValue:
    return KeyValue(bytes(row[0]).decode(), bytes(row[1]), row[2], row[3], row[4], row[5])


def logged_event(row: Sequence[Any]) -> Event:
    """The event of one ``log`` row: as written (``_LOG_INSERT``'s parameters) or read
    back (``_LOG_READ``, the same columns)."""
    rev, _, kind, raw, value, create, version, lease, p_value, p_create, p_mod, p_ver, p_lease = row
    name = raw.decode()
    kv = KeyValue(name, value, create, rev, version, lease)
    prev = None if p_mod is None else KeyValue(name, p_value, p_create, p_mod, p_ver, p_lease)
    return Event(EventType.PUT if kind == _PUT else EventType.DELETE, kv, prev)


def _meta(db: sqlite3.Connection, name: str) -> int:
    return int(db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


class _Tx:
    """The write transaction of one worker batch: the revision and the write helpers."""

    def __init__(self, db: sqlite3.Connection, now: float) -> None:
        self.db = db
        self.now = now
        self.rev = _meta(db, "revision")
        # every log row written, in order: after COMMIT, the events for the watchers
        self.rows: list[tuple[Any, ...]] = []

    def get(self, key: str) -> KeyValue | None:
        return kv_get(self.db, _enc(key))

    def get_many(self, keys: Sequence[str]) -> dict[str, KeyValue | None]:
        """Each of ``keys`` as stored (None: absent), read with a few IN queries."""
        found: dict[str, KeyValue | None] = dict.fromkeys(keys)
        raw = [_enc(k) for k in found]
        for start, size in _chunks(len(raw), _MAX_KEYS):
            part = raw[start : start + size]
            part += part[-1:] * (_pow2(size) - size)  # pad: fewer distinct statements
            for row in self.db.execute(_statement(_KV_GET_MANY, 1, len(part), "IN"), part):
                kv = _kv(row)
                found[kv.key] = kv
        return found

    def range(self, key: str, prefix: bool) -> list[KeyValue]:
        if not prefix:
            kv = self.get(key)
            return [kv] if kv else []
        lo = _enc(key)
        return kv_range(self.db, lo, prefix_end_bytes(lo), -1)

    def lease_alive(self, lease_id: int) -> bool:
        return bool(self.db.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone())

    def apply(
        self,
        ops: Sequence[Op],
        before: Mapping[str, KeyValue | None] | None = None,
        *,
        checked: bool = False,
    ) -> tuple[OpResult, ...]:
        """Apply ``ops`` at one new revision (taken only if something is written).

        ``before``: keys already read in this transaction, as they were before ``ops``.
        ``checked``: the caller already ran :func:`check_txn_ops` on ``ops``.

        Puts are gathered and written together by :meth:`_flush` (a branch puts a key
        at most once, so no put reads another's row); a delete or a get first flushes
        the puts before it, so it sees them.
        """
        if not checked:
            check_txn_ops(ops)
        for op in ops:
            if isinstance(op, Put) and op.lease and not self.lease_alive(op.lease):
                raise LeaseNotFound(op.lease)
        # No op of a branch changes a key it puts (see check_txn_ops): read every put
        # key's previous row up front, with a few IN queries rather than one per put.
        prevs = dict(before or {})
        missing = [op.key for op in ops if isinstance(op, Put) and op.key not in prevs]
        if missing:
            prevs.update(self.get_many(missing))
        rev, sub = self.rev + 1, 0
        results: list[OpResult] = []
        kv_rows: list[tuple[Any, ...]] = []
        log_rows: list[tuple[Any, ...]] = []
        put_result = OpResult()
        for op in ops:
            if isinstance(op, Put):
                key = op.key
                prev = prevs[key]
                create, version = (prev.create_revision, prev.version + 1) if prev else (rev, 1)
                raw = _enc(key)
                kv_rows.append((raw, op.value, create, rev, version, op.lease))
                row = (rev, sub, _PUT, raw, op.value, create, version, op.lease)
                log_rows.append((*row, *_prev_columns(prev)))
                sub += 1
                results.append(put_result)
                continue
            self._flush(kv_rows, log_rows)
            if isinstance(op, Delete):
                victims = self.range(op.key, op.prefix)
                for prev in victims:
                    raw = _enc(prev.key)
                    self.db.execute("DELETE FROM kv WHERE key = ?", (raw,))
                    head = (rev, sub, _DELETE, raw, b"", prev.create_revision, 0, 0)
                    log_rows.append((*head, *_prev_columns(prev)))
                    sub += 1
                self._flush(kv_rows, log_rows)
                results.append(OpResult(deleted=len(victims)))
            else:
                results.append(OpResult(kvs=tuple(self.range(op.key, op.prefix))))
        self._flush(kv_rows, log_rows)
        if sub:
            self.db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
            self.rev = rev
        return tuple(results)

    def _flush(self, kv_rows: list[tuple[Any, ...]], log_rows: list[tuple[Any, ...]]) -> None:
        """Write the rows gathered so far (and empty the lists).

        Multi-row INSERTs: SQLite runs each in one step, and the worker thread gives up
        the GIL for every step and then waits to get it back from the event loop's
        thread, so a statement per row would mean one such wait per row.
        """
        self.rows += log_rows
        for head, rows in ((_KV_PUT, kv_rows), (_LOG_INSERT, log_rows)):
            width = len(rows[0]) if rows else 0
            for start, size in _chunks(len(rows), _MAX_ROWS):
                values = [v for row in rows[start : start + size] for v in row]
                self.db.execute(_statement(head, width, size, "VALUES"), values)
            rows.clear()

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


_NO_PREV: tuple[None, ...] = (None,) * 5
_STATEMENTS: dict[tuple[str, int, int], str] = {}


def _pow2(n: int) -> int:
    """The least power of two >= ``n`` (n >= 1)."""
    return 1 << (n - 1).bit_length()


def _chunks(total: int, most: int) -> list[tuple[int, int]]:
    """(start, size) pieces of ``total`` items: ``most`` at a time, then the rest as
    powers of two, largest first (e.g. 100 with most 64: 64, 32, 4)."""
    out: list[tuple[int, int]] = []
    start = 0
    while start < total:
        left = total - start
        size = most if left >= most else 1 << (left.bit_length() - 1)
        out.append((start, size))
        start += size
    return out


def _statement(head: str, width: int, count: int, form: str) -> str:
    """``head`` with ``count`` rows of ``width`` parameters (VALUES), or an IN list of
    ``count`` parameters (IN)."""
    key = (head, width, count)
    sql = _STATEMENTS.get(key)
    if sql is None:
        if form == "IN":
            sql = head + "(" + ", ".join("?" * count) + ")"
        else:
            row = "(" + ", ".join("?" * width) + ")"
            sql = head + ", ".join([row] * count)
        _STATEMENTS[key] = sql
    return sql


def _prev_columns(prev: KeyValue | None) -> tuple[Any, ...]:
    """The ``prev_*`` columns of a ``log`` row."""
    if prev is None:
        return _NO_PREV
    return (prev.value, prev.create_revision, prev.mod_revision, prev.version, prev.lease)


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
    return [logged_event(r) for r in rows], last + 1, last < rev
