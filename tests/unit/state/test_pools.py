"""Pool arithmetic and the allocator: canonical values, bounded search, imports refused."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from podium.model import PoolType
from podium.state import Conflict, Holder, Pool, PoolAllocator, dumps, keys, loads, next_free
from podium.store import Compare, Op
from podium.store.memory import MemoryStore

MACS = Pool.of("macs", {"type": "mac", "range": "02:00:0a:00:00:00-02:00:0a:00:00:03"})
BIG = Pool.of("big", {"type": "mac", "range": "02:00:00:00:00:00-02:00:00:ff:ff:ff"})
IPS = Pool.of(
    "ips",
    {
        "type": "ipv4",
        "subnet": "10.0.0.0/24",
        "range": "10.0.0.1-10.0.0.5",
        "gateway": "10.0.0.1",
        "reserved": ["10.0.0.3"],
    },
)
WEB = Holder("Profile", "web", "u1", "nic 0 mac")


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    yield s
    await s.close()


async def commit(store: MemoryStore, compares: list[Compare], ops: list[Op]) -> None:
    assert (await store.txn(compares, ops)).succeeded


def test_next_free_is_bounded_by_the_used_count_not_the_range() -> None:
    assert next_free(0, (1 << 24) - 1, set(), 0) == 0
    assert next_free(0, (1 << 24) - 1, {0, 1, 2, 5}, 0) == 3
    assert next_free(0, 3, {0, 1, 2, 3}, 0) is None
    assert next_free(10, 20, {12}, 12) == 13
    assert next_free(10, 20, set(), 25) is None


def test_pool_sizes_leave_out_the_gateway_and_reserved() -> None:
    assert (MACS.size, BIG.size, IPS.size, IPS.prefix) == (4, 1 << 24, 3, 24)
    assert MACS.text(MACS.first) == "02:00:0a:00:00:00"


async def test_take_gives_lowest_free_values_and_writes_pool_and_index_keys(
    store: MemoryStore,
) -> None:
    alloc = PoolAllocator(store)
    compares: list[Compare] = []
    ops: list[Op] = []
    got = [await alloc.take(IPS, WEB, compares, ops) for _ in range(3)]
    assert got == ["10.0.0.2", "10.0.0.4", "10.0.0.5"]  # never the gateway or reserved
    with pytest.raises(Conflict, match=r"Pool 'ips' is exhausted \(3 values, 3 in use\)"):
        await alloc.take(IPS, WEB, compares, ops)
    mac = await alloc.take(MACS, WEB, compares, ops)
    await commit(store, compares, ops)
    assert mac == "02:00:0a:00:00:00"
    held = loads((await store.get(keys.pool_key("macs", mac))).value)  # type: ignore[union-attr]
    assert held == {"holder": "Profile/web", "uid": "u1", "what": "nic 0 mac"}
    index = loads((await store.get(keys.mac_key(mac))).value)  # type: ignore[union-attr]
    assert index == {"profile": "web", "uid": "u1", "what": "nic 0 mac"}
    assert await store.get(keys.ip_key("10.0.0.2")) is None  # pool IPs have no global index


async def test_a_nearly_empty_huge_pool_takes_without_scanning(store: MemoryStore) -> None:
    alloc = PoolAllocator(store, spread=4096, rng=random.Random(7))
    compares: list[Compare] = []
    ops: list[Op] = []
    values = {await alloc.take(BIG, WEB, compares, ops) for _ in range(50)}
    assert len(values) == 50


async def test_take_skips_values_held_in_the_index_by_guests(store: MemoryStore) -> None:
    await store.put(keys.mac_key("02:00:0a:00:00:00"), dumps({"guest": "g", "uid": "x"}))
    alloc = PoolAllocator(store)
    assert await alloc.take(MACS, WEB, [], []) == "02:00:0a:00:00:01"


async def test_claim_refuses_a_taken_value_naming_its_holder(store: MemoryStore) -> None:
    alloc = PoolAllocator(store)
    compares: list[Compare] = []
    ops: list[Op] = []
    assert await alloc.claim(MACS, "02:00:0A:00:00:02", WEB, compares, ops) == "02:00:0a:00:00:02"
    await commit(store, compares, ops)
    other = Holder("Profile", "db", "u2", "nic 1 mac")
    with pytest.raises(Conflict, match=r"MAC 02:00:0a:00:00:02 is held by Profile 'web' \(nic 0\)"):
        await PoolAllocator(store).claim(PoolType.MAC, "02:00:0a:00:00:02", other, [], [])
    await store.put(keys.mac_key("52:54:00:00:00:01"), dumps({"guest": "x", "uid": "y"}))
    with pytest.raises(Conflict, match="MAC 52:54:00:00:00:01 is held by Guest 'x'"):
        await PoolAllocator(store).claim(PoolType.MAC, "52:54:00:00:00:01", other, [], [])
    # the allocator never takes a value that it has claimed in the same transaction
    alloc = PoolAllocator(store, fixed=[(PoolType.MAC, 0x02000A000000)])
    assert await alloc.take(MACS, other, [], []) == "02:00:0a:00:00:01"


async def test_claim_outside_the_pool_or_reserved_is_refused(store: MemoryStore) -> None:
    alloc = PoolAllocator(store)
    with pytest.raises(
        Conflict, match=r"outside Pool 'macs' \(02:00:0a:00:00:00-02:00:0a:00:00:03\)"
    ):
        await alloc.claim(MACS, "02:00:0a:00:00:09", WEB, [], [])
    with pytest.raises(Conflict, match="gateway or a reserved address of Pool 'ips'"):
        await alloc.claim(IPS, "10.0.0.3", WEB, [], [])


async def test_a_lost_race_fails_the_version_compares(store: MemoryStore) -> None:
    first, second = PoolAllocator(store), PoolAllocator(store)
    c1: list[Compare] = []
    o1: list[Op] = []
    c2: list[Compare] = []
    o2: list[Op] = []
    assert await first.take(MACS, WEB, c1, o1) == await second.take(MACS, WEB, c2, o2)
    assert (await store.txn(c1, o1)).succeeded
    assert not (await store.txn(c2, o2)).succeeded
