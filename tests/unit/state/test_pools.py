"""Pool arithmetic and the allocator: canonical values, bounded search, imports refused."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from podium.model import PoolType
from podium.state import Conflict, Holder, Pool, PoolAllocator, dumps, keys, loads, next_free
from podium.state._pools import CONTENDED_S, CONTENDED_SPREAD
from podium.store import Compare, Op, RangeResult
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


class CountingStore(MemoryStore):
    """A memory store that counts the ranges (whole-pool reads) it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[str] = []

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        self.ranges.append(prefix)
        return await super().range(prefix, limit=limit)


class Scripted(random.Random):
    """Draws the given values, in order, for every ``randint``."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = values

    def randint(self, a: int, b: int) -> int:
        return self.values.pop(0)


async def test_after_a_lost_race_a_big_mac_pool_is_probed_at_random_not_read() -> None:
    store = CountingStore()
    lowest = BIG.first
    await store.put(keys.pool_key("big", BIG.text(lowest + 7)), dumps({"holder": "Profile/x"}))
    await store.put(keys.mac_key(BIG.text(lowest + 9)), dumps({"guest": "g", "uid": "x"}))
    alloc = PoolAllocator(store, spread=16, rng=Scripted([lowest + 7, lowest + 9, lowest + 5]))
    compares: list[Compare] = []
    ops: list[Op] = []
    # held in the pool, held in the index (a guest): both skipped after a probe each
    assert await alloc.take(BIG, WEB, compares, ops) == BIG.text(lowest + 5)
    assert store.ranges == []
    assert {(c.key, c.target, c.value) for c in compares} == {
        (keys.pool_key("big", BIG.text(lowest + 5)), "version", 0),
        (keys.mac_key(BIG.text(lowest + 5)), "version", 0),
    }
    # a value already taken in this transaction is never drawn twice (one key, one put)
    alloc = PoolAllocator(store, spread=16, rng=Scripted([lowest + 1, lowest + 1, lowest + 2]))
    got = [await alloc.take(BIG, WEB, [], []) for _ in range(2)]
    assert got == [BIG.text(lowest + 1), BIG.text(lowest + 2)]
    await store.close()


async def test_the_first_attempt_still_takes_the_lowest_free_mac_of_a_big_pool(
    store: MemoryStore,
) -> None:
    alloc = PoolAllocator(store, rng=Scripted([BIG.first + 99]))
    assert await alloc.take(BIG, WEB, [], []) == BIG.text(BIG.first)


async def test_after_a_lost_race_an_ip_pool_uses_what_this_process_saw_and_probes_it() -> None:
    store = CountingStore()
    first = PoolAllocator(store)
    assert await first.take(IPS, WEB, [], []) == "10.0.0.2"  # read once; nothing committed
    assert store.ranges == [keys.pool_prefix("ips")]
    # another server takes .2 and .4 since: the retry finds them held by its probes
    for ip in ("10.0.0.2", "10.0.0.4"):
        await store.put(keys.pool_key("ips", ip), dumps({"holder": "Profile/other"}))
    retry = PoolAllocator(store, spread=16, rng=random.Random(3))
    compares: list[Compare] = []
    ops: list[Op] = []
    assert await retry.take(IPS, WEB, compares, ops) == "10.0.0.5"
    assert store.ranges == [keys.pool_prefix("ips")]  # no second read of the pool
    await commit(store, compares, ops)
    # all held: the probes give up, the pool is read again and reported exhausted
    with pytest.raises(Conflict, match=r"Pool 'ips' is exhausted \(3 values, 3 in use\)"):
        await PoolAllocator(store, spread=16).take(IPS, WEB, [], [])
    await store.close()


async def test_racing_retries_spread_over_the_free_values(store: MemoryStore) -> None:
    small = Pool.of("vlans", {"type": "vlan", "range": "100-199"})
    await PoolAllocator(store).used(small)  # this process has seen the (empty) pool
    picks: set[str] = set()
    for seed in range(8):  # eight appliers after a lost race, none committed yet
        alloc = PoolAllocator(store, spread=64, rng=random.Random(seed))
        picks.add(await alloc.take(small, WEB, [], []))
    # each take is a hint to this process's next one: no two pick the same value
    assert len(picks) == 8
    assert all(100 <= int(v) < 164 for v in picks)


async def test_first_takes_spread_out_only_while_races_are_being_lost(store: MemoryStore) -> None:
    vlans = Pool.of("vlans", {"type": "vlan", "range": "100-199"})
    now = [1000.0]

    def alloc(spread: int = 0, seed: int = 1) -> PoolAllocator:
        return PoolAllocator(store, spread=spread, rng=random.Random(seed), clock=lambda: now[0])

    assert await alloc().take(vlans, WEB, [], []) == "100"  # no contention: the lowest
    await alloc(spread=16).take(vlans, WEB, [], [])  # a retry: this process lost a race
    now[0] += 1.0
    contended = int(await alloc().take(vlans, WEB, [], []))
    assert 100 < contended < 100 + CONTENDED_SPREAD
    now[0] += CONTENDED_S
    assert await alloc().take(vlans, WEB, [], []) == "100"  # quiet again: the lowest
