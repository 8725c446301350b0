"""Watches: ordered, gap-free, filtered by prefix, resumable, and Compacted past history."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from podium.store import (
    Compacted,
    Delete,
    Event,
    EventType,
    InvalidRequest,
    KeyValue,
    Put,
    Store,
    StoreError,
)
from tests.integration.store_contract._support import Backend, take, watching


async def test_events_carry_the_key_value_and_previous_value(store: Store) -> None:
    base = await store.revision()
    r1 = await store.put("k", b"v1")
    r2 = await store.put("k", b"v2")
    r3, _ = await store.delete("k")
    async with watching(store, "k", base + 1) as stream:
        events = await take(stream, 3)
    v1 = KeyValue("k", b"v1", r1, r1, 1, 0)
    v2 = KeyValue("k", b"v2", r1, r2, 2, 0)
    assert events == [
        Event(EventType.PUT, v1, None),
        Event(EventType.PUT, v2, v1),
        Event(EventType.DELETE, KeyValue("k", b"", r1, r3, 0, 0), v2),
    ]
    assert [e.revision for e in events] == [r1, r2, r3]


async def test_watch_filters_by_prefix(store: Store) -> None:
    base = await store.revision()
    for key in ("a/1", "b/1", "a/2", "ab", "a"):
        await store.put(key, b"v")
    await store.put("a/end", b"sentinel")
    async with watching(store, "a/", base + 1) as stream:
        events = await take(stream, 3)
    assert [e.kv.key for e in events] == ["a/1", "a/2", "a/end"]


async def test_a_txn_yields_its_events_together_in_op_order(store: Store) -> None:
    await store.put("z/c", b"old")
    base = await store.revision()
    await store.txn([], [Put("z/b", b"1"), Delete("z/c"), Put("z/a", b"2")])
    await store.put("z/d", b"next")
    async with watching(store, "z/", base + 1) as stream:
        events = await take(stream, 4)
    assert [(e.kv.key, e.revision) for e in events] == [
        ("z/b", base + 1),
        ("z/c", base + 1),
        ("z/a", base + 1),
        ("z/d", base + 2),
    ]


async def test_watch_replays_from_a_past_revision_then_follows_live(store: Store) -> None:
    base = await store.revision()
    for i in range(3):
        await store.put(f"w/{i}", b"v")
    async with watching(store, "w/", base + 2) as stream:
        replayed = await take(stream, 2)
        await store.put("w/live", b"v")
        live = await take(stream, 1)
    assert [e.kv.key for e in replayed + live] == ["w/1", "w/2", "w/live"]
    assert [e.revision for e in replayed + live] == [base + 2, base + 3, base + 4]


async def test_start_revision_zero_means_from_now(store: Store) -> None:
    await store.put("n/old", b"v")
    async with watching(store, "n/") as stream:
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.3)  # the stream starts on its first iteration
        rev = await store.put("n/new", b"v")
        event = await asyncio.wait_for(first, 10)
    assert (event.kv.key, event.revision) == ("n/new", rev)


async def test_resuming_after_a_dropped_stream_has_no_gaps_or_duplicates(store: Store) -> None:
    base = await store.revision()
    for i in range(10):
        await store.put(f"r/{i % 3}", b"%d" % i)
    seen: list[int] = []
    async with watching(store, "r/", base + 1) as stream:
        seen += [e.revision for e in await take(stream, 4)]
    for i in range(5):
        await store.put(f"r/{i}", b"later")
    async with watching(store, "r/", seen[-1] + 1) as stream:
        seen += [e.revision for e in await take(stream, 11)]
    assert seen == list(range(base + 1, base + 16))


async def test_watching_compacted_history_raises_compacted(store: Store) -> None:
    base = await store.revision()
    for i in range(5):
        await store.put("c/k", b"%d" % i)
    target = base + 4
    await store.compact(target)
    assert (await store.status()).compact_revision == target
    async with watching(store, "c/", target - 1) as stream:
        with pytest.raises(Compacted) as info:
            await take(stream, 1)
    assert info.value.compact_revision == target
    assert info.value.requested == target - 1
    async with watching(store, "c/", target) as stream:
        (event,) = await take(stream, 1)
    assert event.revision == target
    assert event.kv.value == b"3"


async def test_compaction_is_bounded_and_monotonic(store: Store) -> None:
    base = await store.revision()
    await store.put("k", b"1")
    await store.put("k", b"2")
    with pytest.raises(InvalidRequest):
        await store.compact(base + 3)
    await store.compact(base + 2)
    await store.compact(base + 1)  # below the compaction: nothing to do
    assert (await store.status()).compact_revision == base + 2
    assert await store.revision() == base + 2


async def test_lease_expiry_shows_up_as_delete_events(store: Store, backend: Backend) -> None:
    lease = await store.grant(1)
    rev = await store.put("e/k", b"v", lease=lease.id)
    async with watching(store, "e/", rev) as stream:
        (put,) = await take(stream, 1)
        await backend.elapse(1.0)
        (gone,) = await take(stream, 1)
    assert (put.type, gone.type) == (EventType.PUT, EventType.DELETE)
    assert gone.revision == rev + 1
    assert gone.prev_kv is not None
    assert gone.prev_kv.lease == lease.id


async def test_concurrent_writers_are_seen_in_revision_order(store: Store) -> None:
    base = await store.revision()
    revs = await asyncio.gather(*(store.put(f"o/{i % 7}", b"%d" % i) for i in range(100)))
    async with watching(store, "o/", base + 1) as stream:
        events = await take(stream, 100)
    assert [e.revision for e in events] == sorted(revs)
    by_rev = {e.revision: e.kv.value for e in events}
    assert all(by_rev[r] == b"%d" % i for i, r in enumerate(revs))


async def test_close_ends_watches_and_refuses_further_calls(store: Store) -> None:
    await store.put("k", b"v")
    async with watching(store, "q/") as stream:
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.2)
        await store.close()
        with contextlib.suppress(StopAsyncIteration):
            await asyncio.wait_for(waiting, 10)
    with pytest.raises(StoreError):
        await store.get("k")
    with pytest.raises(StoreError):
        await store.put("k", b"v")
    await store.close()  # idempotent


async def test_cancelling_a_watch_racing_a_commit_is_never_swallowed(store: Store) -> None:
    """Regression: SQLite's watch lost cancellations that raced a commit (gh-86296).

    A watcher whose cancellation is swallowed keeps running, and a TaskGroup awaiting
    it hangs: seen as an agent that never registered again after fencing.
    """

    async def consume() -> None:
        async for _ in store.watch("race/"):
            pass

    for i in range(60):
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)  # the watcher is now waiting for a commit
        await store.put(f"race/{i}", b"v")
        for _ in range(i % 6):  # cancel at each step of the watcher's wake-up
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=2)  # does not cancel it again, unlike a timeout
        swallowed = not task.done()
        if swallowed:
            task.cancel()
            await asyncio.wait({task})
        assert not swallowed and task.cancelled(), f"round {i}: the cancellation was swallowed"
