"""Transactions: compares on every target, both branches, atomicity, etcd's op rules."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from podium.store import (
    Compare,
    Delete,
    EventType,
    Get,
    InvalidRequest,
    LeaseNotFound,
    Op,
    OpResult,
    Put,
    Store,
)
from tests.integration.store_contract._support import take, watching

# (target, op, value, holds?) against key "k" created at C, modified at M (version 2,
# value b"v2", no lease). "C"/"M" stand for those revisions, "C+1" etc. for offsets.
EXISTING = [
    ("version", "=", 2, True),
    ("version", "!=", 2, False),
    ("version", "<", 3, True),
    ("version", ">", 2, False),
    ("create", "=", "C", True),
    ("create", "<", "M", True),
    ("create", ">", "C", False),
    ("mod", "=", "M", True),
    ("mod", "!=", "C", True),
    ("mod", ">", "C", True),
    ("mod", "<", "M", False),
    ("value", "=", b"v2", True),
    ("value", "!=", b"v2", False),
    ("value", "<", b"v3", True),
    ("value", ">", b"v3", False),
    ("value", ">", b"v", True),
    ("lease", "=", 0, True),
    ("lease", ">", 0, False),
]
# Against a key that does not exist: numbers read as 0; a value compare always fails.
MISSING = [
    ("version", "=", 0, True),
    ("create", "=", 0, True),
    ("mod", ">", 0, False),
    ("lease", "=", 0, True),
    ("value", "=", b"", False),
    ("value", "!=", b"x", False),
    ("value", "<", b"z", False),
]


def _resolve(value: int | bytes | str, create: int, mod: int) -> int | bytes:
    if not isinstance(value, str):
        return value
    return {"C": create, "M": mod}[value]


@pytest.mark.parametrize(("target", "op", "value", "holds"), EXISTING)
async def test_compare_on_an_existing_key(
    store: Store, target: str, op: str, value: int | bytes | str, holds: bool
) -> None:
    create = await store.put("k", b"v1")
    mod = await store.put("k", b"v2")
    cmp = Compare("k", target, op, _resolve(value, create, mod))  # type: ignore[arg-type]
    result = await store.txn([cmp], [Get("k")], [])
    assert result.succeeded is holds
    assert result.revision == mod


@pytest.mark.parametrize(("target", "op", "value", "holds"), MISSING)
async def test_compare_on_a_missing_key(
    store: Store, target: str, op: str, value: int | bytes, holds: bool
) -> None:
    result = await store.txn([Compare("nope", target, op, value)], [], [])  # type: ignore[arg-type]
    assert result.succeeded is holds


async def test_compare_on_the_lease_of_a_key(store: Store) -> None:
    lease = await store.grant(30)
    await store.put("k", b"v", lease=lease.id)
    assert (await store.txn([Compare("k", "lease", "=", lease.id)], [])).succeeded
    assert not (await store.txn([Compare("k", "lease", "=", 0)], [])).succeeded


async def test_success_branch_runs_when_every_compare_holds(store: Store) -> None:
    rev = await store.put("k", b"v")
    result = await store.txn(
        [Compare("k", "mod", "=", rev), Compare("k", "value", "=", b"v")],
        [Put("k", b"ok")],
        [Put("k", b"failed")],
    )
    assert result.succeeded
    assert result.revision == rev + 1
    assert (await store.get("k")).value == b"ok"  # type: ignore[union-attr]


async def test_failure_branch_runs_when_any_compare_fails(store: Store) -> None:
    rev = await store.put("k", b"v")
    result = await store.txn(
        [Compare("k", "mod", "=", rev), Compare("k", "version", "=", 7)],
        [Put("k", b"ok")],
        [Put("k", b"failed"), Get("k")],
    )
    assert not result.succeeded
    assert result.revision == rev + 1
    assert result.results[1].kvs[0].value == b"failed"


async def test_no_compares_means_success(store: Store) -> None:
    result = await store.txn([], [Put("k", b"v")], [Put("k", b"other")])
    assert result.succeeded
    assert (await store.get("k")).value == b"v"  # type: ignore[union-attr]


async def test_writes_of_one_txn_share_one_revision_in_op_order(store: Store) -> None:
    await store.put("t/c", b"old")
    base = await store.revision()
    result = await store.txn([], [Put("t/b", b"1"), Put("t/a", b"2"), Delete("t/c")])
    assert result.revision == base + 1
    assert result.results == (OpResult(), OpResult(), OpResult(deleted=1))
    async with watching(store, "t/", base + 1) as stream:
        events = await take(stream, 3)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        (EventType.PUT, "t/b", base + 1),
        (EventType.PUT, "t/a", base + 1),
        (EventType.DELETE, "t/c", base + 1),
    ]


async def test_read_only_txn_keeps_the_revision(store: Store) -> None:
    await store.put("r/1", b"a")
    await store.put("r/2", b"b")
    base = await store.revision()
    result = await store.txn([], [Get("r/1"), Get("r/", prefix=True), Get("missing")])
    assert result.revision == base
    assert await store.revision() == base
    assert [kv.key for kv in result.results[0].kvs] == ["r/1"]
    assert [kv.key for kv in result.results[1].kvs] == ["r/1", "r/2"]
    assert result.results[2] == OpResult()


async def test_txn_that_deletes_nothing_keeps_the_revision(store: Store) -> None:
    base = await store.revision()
    result = await store.txn([], [Delete("gone"), Delete("gone/", prefix=True)])
    assert result.revision == base
    assert result.results == (OpResult(deleted=0), OpResult(deleted=0))


async def test_get_inside_a_txn_sees_its_earlier_writes(store: Store) -> None:
    await store.put("k", b"old")
    await store.put("d/1", b"x")
    result = await store.txn(
        [], [Put("k", b"new"), Delete("d/", prefix=True), Get("k"), Get("d/", prefix=True)]
    )
    assert result.results[0] == OpResult()
    assert result.results[1] == OpResult(deleted=1)
    assert [kv.value for kv in result.results[2].kvs] == [b"new"]
    assert result.results[3] == OpResult()


DUPLICATES: list[tuple[str, Sequence[Op], Sequence[Op]]] = [
    ("put twice", [Put("k", b"1"), Put("k", b"2")], []),
    ("put and delete", [Put("k", b"1"), Delete("k")], []),
    ("delete then put", [Delete("k"), Put("k", b"1")], []),
    ("put inside a deleted prefix", [Delete("d/", prefix=True), Put("d/x", b"1")], []),
    ("duplicate in the branch that does not run", [Put("a", b"1")], [Put("k", b""), Put("k", b"")]),
]


@pytest.mark.parametrize(
    ("success", "failure"), [d[1:] for d in DUPLICATES], ids=[d[0] for d in DUPLICATES]
)
async def test_writing_a_key_twice_is_rejected_and_writes_nothing(
    store: Store, success: Sequence[Op], failure: Sequence[Op]
) -> None:
    await store.put("d/x", b"keep")
    base = await store.revision()
    with pytest.raises(InvalidRequest):
        await store.txn([], success, failure)
    assert await store.revision() == base
    assert await store.get("a") is None
    assert (await store.get("d/x")).value == b"keep"  # type: ignore[union-attr]


async def test_overlapping_deletes_are_allowed(store: Store) -> None:
    await store.put("k", b"v")
    result = await store.txn([], [Delete("k"), Delete("k", prefix=True), Get("k"), Get("k")])
    assert result.results[:2] == (OpResult(deleted=1), OpResult(deleted=0))


async def test_put_on_a_dead_lease_fails_the_whole_txn(store: Store) -> None:
    lease = await store.grant(30)
    await store.revoke(lease.id)
    base = await store.revision()
    with pytest.raises(LeaseNotFound):
        await store.txn([], [Put("a", b"1"), Put("b", b"2", lease=lease.id)])
    assert await store.get("a") is None
    assert await store.revision() == base


async def test_too_many_ops_are_rejected(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        await store.txn([], [Put(f"k{i}", b"") for i in range(129)])
    result = await store.txn([], [Put(f"k{i}", b"") for i in range(128)])
    assert result.succeeded


async def test_compare_of_the_wrong_type_is_rejected(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        await store.txn([Compare("k", "value", "=", 1)], [])
    with pytest.raises(InvalidRequest):
        await store.txn([Compare("k", "version", "=", b"1")], [])


async def test_compare_and_swap_counter_under_contention(store: Store) -> None:
    """20 workers increment one counter with optimistic transactions: none is lost."""
    await store.put("counter", b"0")

    async def bump() -> None:
        while True:
            kv = await store.get("counter")
            assert kv is not None
            new = str(int(kv.value) + 1).encode()
            result = await store.txn(
                [Compare("counter", "mod", "=", kv.mod_revision)], [Put("counter", new)]
            )
            if result.succeeded:
                return

    await asyncio.gather(*(bump() for _ in range(20)))
    assert (await store.get("counter")).value == b"20"  # type: ignore[union-attr]
