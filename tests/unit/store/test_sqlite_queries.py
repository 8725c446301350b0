"""The SQLite store's range reads: bounded index searches, right answers at the edges."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from podium.store._sqlite_db import _KV_RANGE, _SCHEMA, kv_range


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for statement in _SCHEMA.split(";"):
        conn.execute(statement)
    yield conn
    conn.close()


def test_a_prefix_read_searches_the_index_between_both_bounds(db: sqlite3.Connection) -> None:
    # An OR on the upper bound made SQLite scan from the prefix to the end of the table.
    plan = db.execute(f"EXPLAIN QUERY PLAN {_KV_RANGE}", {"lo": b"a", "hi": b"b", "limit": -1})
    detail = " ".join(str(row[-1]) for row in plan)
    assert "key>? AND key<?" in detail, detail


def test_ranges_return_the_keys_between_their_bounds_in_order(db: sqlite3.Connection) -> None:
    names = ["a", "m/1", "m/2", "m0", "z", "\U0010ffff"]
    for key in names:
        db.execute("INSERT INTO kv VALUES (?, x'', 2, 2, 1, 0)", (key.encode(),))
    assert [kv.key for kv in kv_range(db, b"m/", b"m0", -1)] == ["m/1", "m/2"]
    assert [kv.key for kv in kv_range(db, b"m/", b"m0", 1)] == ["m/1"]
    assert [kv.key for kv in kv_range(db, b"n", b"o", -1)] == []
    everything = kv_range(db, b"", None, -1)  # no upper bound: to the end
    assert [kv.key for kv in everything] == names
    assert [kv.key for kv in kv_range(db, b"z", None, -1)] == ["z", "\U0010ffff"]
