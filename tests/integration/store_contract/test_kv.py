"""Keys, values and revisions: get, range, put, delete."""

from __future__ import annotations

import asyncio
import random

import pytest

from podium.store import InvalidRequest, KeyValue, Store
from tests.integration.store_contract._support import Backend


async def test_missing_key_reads_as_none_and_empty_range(store: Store) -> None:
    base = await store.revision()
    assert await store.get("k") is None
    result = await store.range("k")
    assert result.kvs == ()
    assert result.revision == base


async def test_put_sets_create_mod_and_version(store: Store) -> None:
    base = await store.revision()
    r1 = await store.put("k", b"v1")
    assert r1 == base + 1
    assert await store.get("k") == KeyValue("k", b"v1", r1, r1, 1, 0)
    r2 = await store.put("k", b"v2")
    assert r2 == r1 + 1
    assert await store.get("k") == KeyValue("k", b"v2", r1, r2, 2, 0)
    assert await store.revision() == r2


async def test_delete_resets_version_and_recreate_starts_over(store: Store) -> None:
    r1 = await store.put("k", b"v1")
    await store.put("k", b"v2")
    rev, deleted = await store.delete("k")
    assert (rev, deleted) == (r1 + 2, 1)
    assert await store.get("k") is None
    r4 = await store.put("k", b"again")
    assert await store.get("k") == KeyValue("k", b"again", r4, r4, 1, 0)


async def test_deleting_nothing_keeps_the_revision(store: Store) -> None:
    await store.put("other", b"x")
    base = await store.revision()
    assert await store.delete("missing") == (base, 0)
    assert await store.delete("missing/", prefix=True) == (base, 0)
    assert await store.revision() == base


async def test_delete_prefix_removes_every_key_under_it_in_one_revision(store: Store) -> None:
    for key in ("a/1", "a/2", "a/2/x", "ab", "b"):
        await store.put(key, b"v")
    base = await store.revision()
    assert await store.delete("a/", prefix=True) == (base + 1, 3)
    assert [kv.key for kv in (await store.range("")).kvs] == ["ab", "b"]


async def test_range_is_sorted_by_key_limited_and_reports_the_revision(store: Store) -> None:
    keys = ["p/b", "p/a", "p/c", "p", "q/a", "p/a/x", "o/z"]
    random.Random(7).shuffle(keys)
    for key in keys:
        await store.put(key, key.encode())
    rev = await store.revision()
    result = await store.range("p/")
    assert [kv.key for kv in result.kvs] == ["p/a", "p/a/x", "p/b", "p/c"]
    assert [kv.value for kv in result.kvs] == [b"p/a", b"p/a/x", b"p/b", b"p/c"]
    assert result.revision == rev
    limited = await store.range("p/", limit=2)
    assert [kv.key for kv in limited.kvs] == ["p/a", "p/a/x"]
    assert limited.revision == rev


async def test_empty_prefix_ranges_over_everything(store: Store) -> None:
    for key in ("b", "a", "c/d"):
        await store.put(key, b"v")
    assert [kv.key for kv in (await store.range("")).kvs] == ["a", "b", "c/d"]


async def test_unicode_keys_sort_by_code_point(store: Store) -> None:
    keys = ["u/z", "u/\u00e9", "u/\U0001f600", "u/a", "u/\uffff"]
    for key in keys:
        await store.put(key, b"v")
    assert [kv.key for kv in (await store.range("u/")).kvs] == sorted(keys)
    assert [kv.key for kv in (await store.range("u/\u00e9")).kvs] == ["u/\u00e9"]


@pytest.mark.parametrize("value", [b"", b"\x00\xff\x00", bytes(range(256)) * 64])
async def test_values_are_bytes_kept_exactly(store: Store, value: bytes) -> None:
    await store.put("bin", value)
    kv = await store.get("bin")
    assert kv is not None
    assert kv.value == value


async def test_empty_key_is_rejected(store: Store) -> None:
    base = await store.revision()
    with pytest.raises(InvalidRequest):
        await store.put("", b"v")
    with pytest.raises(InvalidRequest):
        await store.get("")
    with pytest.raises(InvalidRequest):
        await store.delete("")
    assert await store.revision() == base


async def test_status_names_the_backend_and_revision(store: Store, backend: Backend) -> None:
    await store.put("k", b"v")
    status = await store.status()
    assert status.backend == backend.name
    assert status.revision == await store.revision()


async def test_concurrent_puts_get_distinct_consecutive_revisions(store: Store) -> None:
    base = await store.revision()
    revs = await asyncio.gather(*(store.put(f"c/{i:03}", b"%d" % i) for i in range(200)))
    assert sorted(revs) == list(range(base + 1, base + 201))
    kvs = (await store.range("c/")).kvs
    assert {kv.key: kv.mod_revision for kv in kvs} == {f"c/{i:03}": r for i, r in enumerate(revs)}
