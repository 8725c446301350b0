"""First bindings in bulk (``bind_new``) and guest creation trusting a caller's cache
(``create_owned_guests(known=...)``): many guests per transaction, no reads, and a
cache that lags the store loses nothing and duplicates nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podium.model import Kind
from podium.state import ClusterState, GuardFailed, NewBinding, keys, loads
from podium.state import _binds as binds
from podium.state import _ipam as ipam
from podium.store import Compare, Store, open_store
from podium.store.memory import MemoryStore


class CountingStore(MemoryStore):
    """Counts single-key reads and transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.txns = 0

    async def get(self, key: str) -> Any:
        self.gets += 1
        return await super().get(key)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        self.txns += 1
        return await super().txn(*args, **kwargs)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store = (
        CountingStore() if request.param == "memory" else open_store(f"sqlite:///{tmp_path}/p.db")
    )
    yield s
    await s.close()


def replica(app: str = "web") -> dict[str, Any]:
    return {"image": "tiny", "request": {"cpu": 1}, "app": app, "nics": [{}]}


async def created(state: ClusterState, app: str, n: int) -> list[NewBinding]:
    await state.create_owned_guests(app, [(f"{app}-{i}", replica(app)) for i in range(n)])
    out = []
    for i in range(n):
        kv = await state.store.get(keys.object_key(Kind.GUEST, f"{app}-{i}"))
        assert kv is not None
        out.append(NewBinding(f"{app}-{i}", f"h{i % 3}", loads(kv.value), kv.mod_revision))
    return out


async def test_bind_new_binds_at_epoch_one_with_assignments(store: Store) -> None:
    state = ClusterState(store)
    items = await created(state, "web", 150)
    result = await state.bind_new(items)
    assert (len(result.bound), result.raced) == (150, ())
    assert result.revision == await store.revision()
    for item in items:
        binding, _ = await state.get_binding(item.guest)
        assert (binding.host, binding.epoch) == (item.host, 1)
    listed, _ = await state.assignments("h1")
    assert sorted(a.guest for a in listed) == sorted(i.guest for i in items if i.host == "h1")
    assert {a.epoch for a in listed} == {1}
    assert all(a.spec["nics"][0]["mac"] for a in listed)  # the realised NICs, not the spec's


async def test_bind_new_fills_transactions_to_the_limit() -> None:
    store = CountingStore()
    state = ClusterState(store)
    items = await created(state, "web", 130)
    store.gets = store.txns = 0
    guard = [Compare(keys.LEADER, "version", "=", 0)]
    await state.bind_new(items, guard=guard)
    per = binds.per_transaction(len(guard))
    assert per == (ipam.MAX_TXN_OPS - 1) // 2
    assert store.txns == -(-130 // per)  # ceil: full transactions
    assert store.gets == 0  # nothing read: the caller's records and revisions are used


async def test_a_raced_guest_fails_only_its_transaction(store: Store) -> None:
    state = ClusterState(store)
    items = await created(state, "web", 100)
    per = binds.per_transaction(0)
    # someone binds guest 70 first (it sits in the second transaction)
    assert await state.bind("web-70", "h9", expected_revision=0) is not None
    result = await state.bind_new(items)
    assert [i.guest for i in result.bound] == [i.guest for i in items[:per]]
    assert [i.guest for i in result.raced] == [i.guest for i in items[per:]]
    binding, _ = await state.get_binding("web-70")
    assert (binding.host, binding.epoch) == ("h9", 1)  # untouched
    binding, _ = await state.get_binding("web-90")
    assert binding.host is None  # its transaction failed as a whole


async def test_a_changed_guest_record_is_not_bound_on_the_old_revision(store: Store) -> None:
    state = ClusterState(store)
    items = await created(state, "web", 3)
    stale = NewBinding("web-1", "h1", items[1].record, items[1].guest_revision - 1)
    result = await state.bind_new([stale])
    assert result.bound == () and result.raced == (stale,)


async def test_a_failed_guard_raises_and_binds_nothing(store: Store) -> None:
    state = ClusterState(store)
    items = await created(state, "web", 5)
    with pytest.raises(GuardFailed):
        await state.bind_new(items, guard=[Compare(keys.LEADER, "version", "=", 7)])
    for item in items:
        assert (await state.get_binding(item.guest))[0].host is None


@dataclass
class Cache:
    """What a controller's cache knows: maybe less than the store (it lags)."""

    guests: set[str] = field(default_factory=set)
    macs: set[str] = field(default_factory=set)

    def has_guest(self, name: str) -> bool:
        return name in self.guests

    def has_mac(self, mac: str) -> bool:
        return mac in self.macs


async def test_creation_with_a_current_cache_reads_nothing() -> None:
    store = CountingStore()
    state = ClusterState(store)
    store.gets = 0
    made = await state.create_owned_guests(
        "web", [(f"web-{i}", replica()) for i in range(200)], known=Cache()
    )
    assert made == 200 and store.gets == 0


async def test_a_lagging_cache_costs_a_retry_not_a_duplicate(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ClusterState(store)
    await state.create_owned_guests("web", [("web-1", replica())])
    taken = (await state.get_record(Kind.GUEST, "web-1")) or {}
    mac = taken["nics"][0]["mac"]
    # the cache has not seen web-1 nor its MAC; the allocator draws that MAC first
    draws = iter([mac, "52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:aa:00:03"])
    monkeypatch.setattr(ipam, "random_mac", lambda: next(draws))
    made = await state.create_owned_guests(
        "web", [("web-1", replica()), ("web-2", replica())], known=Cache()
    )
    assert made == 1  # web-1 existed: skipped on the retry, which read the store
    assert (await state.get_record(Kind.GUEST, "web-1")) == taken  # untouched
    nics = ((await state.get_record(Kind.GUEST, "web-2")) or {})["nics"]
    assert nics[0]["mac"] != mac
    holders = {kv.key: loads(kv.value)["guest"] for kv in (await store.range(keys.IPAM_MAC)).kvs}
    assert sorted(holders.values()) == ["web-1", "web-2"]


async def test_a_cache_that_knows_a_mac_is_taken_skips_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ClusterState(store)
    draws = iter(["52:54:00:aa:00:01", "52:54:00:aa:00:02"])
    monkeypatch.setattr(ipam, "random_mac", lambda: next(draws))
    cache = Cache(macs={"52:54:00:aa:00:01"})
    assert await state.create_owned_guests("web", [("web-1", replica())], known=cache) == 1
    nics = ((await state.get_record(Kind.GUEST, "web-1")) or {})["nics"]
    assert nics[0]["mac"] == "52:54:00:aa:00:02"
