"""The request checks every backend shares: etcd's rules, restated and pinned."""

from __future__ import annotations

import pytest

from podium.store import Compare, Delete, Get, InvalidRequest, Op, Put
from podium.store._txn import MAX_TXN_OPS, check_txn, prefix_end, prefix_end_bytes


@pytest.mark.parametrize(
    "ops",
    [
        [Put("k", b""), Put("k", b"")],
        [Put("k", b""), Delete("k")],
        [Delete("k"), Put("k", b"")],
        [Delete("d/", prefix=True), Put("d/x", b"")],
        [Delete("", prefix=True), Put("anything", b"")],
        [Put("", b"")],
        [Get("")],
    ],
)
def test_rejected_branches(ops: list[Op]) -> None:
    with pytest.raises(InvalidRequest):
        check_txn([], ops, [])
    with pytest.raises(InvalidRequest):
        check_txn([], [], ops)  # the branch that would not run is checked too


@pytest.mark.parametrize(
    "ops",
    [
        [Put("a", b""), Put("b", b"")],
        [Delete("k"), Delete("k"), Delete("k", prefix=True)],
        [Put("k", b""), Get("k"), Get("k")],
        [Delete("d/", prefix=True), Put("e", b""), Put("d", b"")],
        [Delete("", prefix=True), Get("", prefix=True)],
    ],
)
def test_accepted_branches(ops: list[Op]) -> None:
    check_txn([], ops, ops)


def test_compares_are_checked() -> None:
    with pytest.raises(InvalidRequest):
        check_txn([Compare("", "version", "=", 0)], [], [])
    with pytest.raises(InvalidRequest):
        check_txn([Compare("k", "value", "=", 0)], [], [])
    with pytest.raises(InvalidRequest):
        check_txn([Compare("k", "mod", "=", b"0")], [], [])
    with pytest.raises(InvalidRequest):
        check_txn([Compare("k", "mod", "~", 0)], [], [])  # type: ignore[arg-type]


def test_op_limit_is_etcds_default() -> None:
    check_txn([Compare("k", "version", "=", 0)] * MAX_TXN_OPS, [Get("k")] * MAX_TXN_OPS, [])
    with pytest.raises(InvalidRequest, match="too many"):
        check_txn([], [Put(f"k{i}", b"") for i in range(MAX_TXN_OPS + 1)], [])


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"a", b"b"), (b"a\xff", b"b"), (b"\xff\xff", None), (b"", None), (b"a/", b"a0")],
)
def test_prefix_end_bytes(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end_bytes(prefix) == end


def test_str_and_byte_prefix_ends_agree_on_order() -> None:
    for prefix in ["a", "u/\u00e9", "x\U0001f600"]:
        end = prefix_end_bytes(prefix.encode())
        assert end is not None
        assert prefix_end(prefix).encode() >= end
