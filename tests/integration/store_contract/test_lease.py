"""Leases: grant, keepalive, revoke, TTL, and keys deleted (in one revision) on expiry."""

from __future__ import annotations

import pytest

from podium.store import EventType, InvalidRequest, LeaseNotFound, Store
from tests.integration.store_contract._support import Backend, take, wait_until, watching

UNKNOWN_LEASE = 0x7E57


async def test_grant_reports_its_ttl(store: Store) -> None:
    lease = await store.grant(20)
    assert lease.ttl == 20
    assert lease.id != 0
    assert 18 <= await store.lease_ttl(lease.id) <= 20
    assert await store.keepalive(lease.id) == 20


async def test_grant_needs_a_positive_ttl(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        await store.grant(0)


async def test_leases_are_distinct(store: Store) -> None:
    ids = {(await store.grant(30)).id for _ in range(5)}
    assert len(ids) == 5


async def test_a_key_records_its_lease(store: Store) -> None:
    lease = await store.grant(30)
    await store.put("k", b"v", lease=lease.id)
    assert (await store.get("k")).lease == lease.id  # type: ignore[union-attr]
    await store.put("k", b"v2")  # a put without a lease detaches the key
    assert (await store.get("k")).lease == 0  # type: ignore[union-attr]
    await store.revoke(lease.id)
    assert await store.get("k") is not None


async def test_revoke_deletes_the_lease_keys_in_one_revision_in_key_order(store: Store) -> None:
    lease = await store.grant(30)
    for key in ("l/b", "l/c", "l/a"):
        await store.put(key, b"v", lease=lease.id)
    await store.put("l/free", b"v")
    base = await store.revision()
    await store.revoke(lease.id)
    assert await store.revision() == base + 1
    assert [kv.key for kv in (await store.range("l/")).kvs] == ["l/free"]
    async with watching(store, "l/", base + 1) as stream:
        events = await take(stream, 3)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        (EventType.DELETE, "l/a", base + 1),
        (EventType.DELETE, "l/b", base + 1),
        (EventType.DELETE, "l/c", base + 1),
    ]
    assert await store.lease_ttl(lease.id) == -1


async def test_revoke_is_idempotent_and_a_lease_without_keys_writes_nothing(store: Store) -> None:
    lease = await store.grant(30)
    base = await store.revision()
    await store.revoke(lease.id)
    await store.revoke(lease.id)
    await store.revoke(UNKNOWN_LEASE)
    assert await store.revision() == base


async def test_a_dead_lease_cannot_be_used(store: Store) -> None:
    lease = await store.grant(30)
    await store.revoke(lease.id)
    base = await store.revision()
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease.id)
    with pytest.raises(LeaseNotFound):
        await store.put("k", b"v", lease=lease.id)
    with pytest.raises(LeaseNotFound):
        await store.put("k", b"v", lease=UNKNOWN_LEASE)
    assert await store.lease_ttl(UNKNOWN_LEASE) == -1
    assert await store.revision() == base
    assert await store.get("k") is None


async def test_expiry_deletes_the_keys_in_one_revision(store: Store, backend: Backend) -> None:
    lease = await store.grant(1)
    await store.put("x/b", b"v", lease=lease.id)
    await store.put("x/a", b"v", lease=lease.id)
    await store.put("x/keep", b"v")
    base = await store.revision()
    await backend.elapse(1.0)
    await wait_until(lambda: _gone(store, "x/a"), what="lease expiry")
    assert await store.revision() == base + 1
    assert [kv.key for kv in (await store.range("x/")).kvs] == ["x/keep"]
    assert await store.lease_ttl(lease.id) == -1
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease.id)
    async with watching(store, "x/", base + 1) as stream:
        events = await take(stream, 2)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        (EventType.DELETE, "x/a", base + 1),
        (EventType.DELETE, "x/b", base + 1),
    ]


async def test_keepalive_extends_the_lease(store: Store, backend: Backend) -> None:
    lease = await store.grant(2)
    await store.put("k", b"v", lease=lease.id)
    await backend.elapse(1.2)
    assert await store.keepalive(lease.id) == 2
    await backend.elapse(1.2)  # 2.4 s since the grant, 1.2 s since the keepalive
    assert await store.get("k") is not None
    assert await store.lease_ttl(lease.id) >= 0  # alive (etcd rounds down, others round)


async def _gone(store: Store, key: str) -> bool:
    return await store.get(key) is None
