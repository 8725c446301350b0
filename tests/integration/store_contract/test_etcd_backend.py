"""What only the etcd backend promises: a clear, bounded StoreUnavailable, and failover
across endpoints without losing a watch's place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from podium.store import EventType, StoreUnavailable
from podium.store.etcd import EtcdStore
from tests.integration.store_contract._support import take, watching
from tests.support.etcd import EtcdCluster, free_ports

pytestmark = pytest.mark.etcd


async def test_no_endpoint_answering_raises_unavailable_within_the_timeout() -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(2)]
    store = EtcdStore.from_url(f"etcd://{','.join(dead)}?timeout=2")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await store.put("k", b"v")
    assert time.monotonic() - started < 4
    message = str(info.value)
    assert all(endpoint in message for endpoint in dead)
    assert "is etcd running" in message
    assert info.value.retryable
    await store.close()


async def test_a_dead_endpoint_first_in_the_list_is_skipped(etcd_cluster: EtcdCluster) -> None:
    (dead,) = free_ports(1)
    store = EtcdStore([f"127.0.0.1:{dead}", *etcd_cluster.endpoints])
    try:
        rev = await store.put("failover/k", b"v")
        assert (await store.get("failover/k")).mod_revision == rev  # type: ignore[union-attr]
    finally:
        await store.delete("failover/", prefix=True)
        await store.close()


async def test_killing_the_member_in_use_keeps_writes_and_watches_going(
    etcd_factory: Callable[[int], EtcdCluster],
) -> None:
    cluster = etcd_factory(3)
    store = EtcdStore(cluster.endpoints)
    try:
        base = await store.put("f/0", b"")
        async with watching(store, "f/", base) as stream:
            assert (await take(stream, 1))[0].revision == base
            cluster.kill(0)  # the first endpoint: the one the store and the watch use
            revs = []
            for i in range(1, 6):
                for _ in range(50):  # a write cut off in flight may or may not apply
                    try:
                        revs.append(await store.put(f"f/{i}", b"%d" % i))
                        break
                    except StoreUnavailable:
                        await asyncio.sleep(0.1)
            events = await take(stream, len(revs), timeout=20)
        assert [e.kv.key for e in events][-5:] == [f"f/{i}" for i in range(1, 6)]
        assert all(e.type is EventType.PUT for e in events)
        revisions = [e.revision for e in events]
        assert revisions == sorted(set(revisions)), "a resumed watch repeated or reordered"
        assert revisions[-5:] == revs
    finally:
        await store.close()


async def test_losing_quorum_is_unavailable_in_bounded_time_then_recovers(
    etcd_factory: Callable[[int], EtcdCluster],
) -> None:
    cluster = etcd_factory(3)
    store = EtcdStore(cluster.endpoints, timeout=2)
    try:
        base = await store.put("q/k", b"before")
        async with watching(store, "q/", base + 1) as stream:
            pending = asyncio.ensure_future(take(stream, 1, timeout=30))
            try:
                await asyncio.sleep(0.2)
                cluster.kill(1)
                cluster.kill(2)
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await store.get("q/k")
                with pytest.raises(StoreUnavailable):
                    await pending  # the open watch gives up too, instead of hanging
                assert time.monotonic() - started < 6
            finally:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
        cluster.restart(1)  # quorum is back: the same store object works again
        for _ in range(100):
            try:
                rev = await store.put("q/k", b"after")
                break
            except StoreUnavailable:
                await asyncio.sleep(0.1)
        async with watching(store, "q/", base + 1) as stream:
            events = await take(stream, 1, timeout=10)
        assert events[-1].kv.value == b"after"
        assert events[-1].revision == rev
    finally:
        await store.close()
