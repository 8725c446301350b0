"""SQLite backend: the store's operations as jobs for the worker.

Module-level functions bound with :func:`functools.partial`, never closures, so a job
pickles and can run in the worker process as well as in the worker thread. Reads take
the connection, writes the batch's :class:`~podium.store._sqlite_db._Tx`.
"""

from __future__ import annotations

import secrets
import sqlite3

from podium.store._protocol import (
    Compare,
    Delete,
    KeyValue,
    Lease,
    Op,
    Put,
    RangeResult,
    TxnResult,
)
from podium.store._sqlite_db import _meta, _Tx, kv_get, kv_range
from podium.store._txn import check_compare
from podium.store.errors import LeaseNotFound


def get(db: sqlite3.Connection, key: bytes) -> KeyValue | None:
    return kv_get(db, key)


def range_(db: sqlite3.Connection, lo: bytes, hi: bytes | None, limit: int) -> RangeResult:
    return RangeResult(tuple(kv_range(db, lo, hi, limit)), _meta(db, "revision"))


def lease_deadline(db: sqlite3.Connection, lease_id: int) -> float | None:
    row = db.execute("SELECT deadline FROM leases WHERE id = ?", (lease_id,)).fetchone()
    return float(row[0]) if row else None


def revisions(db: sqlite3.Connection) -> tuple[int, int]:
    """(revision, compact revision)."""
    return _meta(db, "revision"), _meta(db, "compact")


def put(tx: _Tx, op: Put) -> int:
    tx.apply([op], checked=True)
    return tx.rev


def delete(tx: _Tx, op: Delete) -> tuple[int, int]:
    (result,) = tx.apply([op], checked=True)
    return tx.rev, result.deleted


def txn(
    tx: _Tx, cmps: tuple[Compare, ...], ok_ops: tuple[Op, ...], else_ops: tuple[Op, ...]
) -> TxnResult:
    # the keys the compares read are, unchanged, the previous values of the puts that
    # follow (a key is put at most once per branch): read each once
    seen = tx.get_many([c.key for c in cmps])
    ok = all(check_compare(c, seen[c.key]) for c in cmps)
    results = tx.apply(ok_ops if ok else else_ops, before=seen, checked=True)
    return TxnResult(ok, tx.rev, results)


def grant(tx: _Tx, ttl: int) -> Lease:
    lease_id = 0
    while not lease_id or tx.lease_alive(lease_id):
        # random ids are never reused, even after a restore from a backup
        lease_id = secrets.randbits(62)
    tx.db.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease_id, ttl, tx.now + ttl))
    return Lease(lease_id, ttl)


def keepalive(tx: _Tx, lease_id: int) -> int:
    row = tx.db.execute(
        "UPDATE leases SET deadline = ? + ttl WHERE id = ? RETURNING ttl", (tx.now, lease_id)
    ).fetchone()
    if row is None:
        raise LeaseNotFound(lease_id)
    return int(row[0])


def revoke(tx: _Tx, lease_id: int) -> None:
    tx.revoke(lease_id)


def compact(tx: _Tx, revision: int) -> None:
    tx.compact(revision)
