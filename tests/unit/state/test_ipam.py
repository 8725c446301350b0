"""Guest NICs: MACs and IPs realised with the guest, unique under races, released on delete."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.model import Kind, Manifest, validate_document
from podium.state import ClusterState, Conflict, GuestNetwork, dumps, keys, loads
from podium.state import _ipam as ipam
from podium.store import Store, open_store
from podium.store.memory import MemoryStore

NET = GuestNetwork.of("10.9.0.0/24", "10.9.0.10-10.9.0.20", "10.9.0.1")


def guest(name: str, **spec: Any) -> Manifest:
    return validate_document({"kind": "Guest", "name": name, "spec": spec})


def replica(app: str = "web", nics: int = 1) -> dict[str, Any]:
    return {"image": "tiny", "request": {"cpu": 1}, "app": app, "nics": [{}] * nics}


class InterleavingStore(MemoryStore):
    """A memory store that lets other tasks run before each call, as a real one does."""

    async def get(self, key: str) -> Any:
        await asyncio.sleep(0)
        return await super().get(key)

    async def range(self, prefix: str, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await super().range(prefix, **kwargs)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await super().txn(*args, **kwargs)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store = (
        InterleavingStore()
        if request.param == "memory"
        else open_store(f"sqlite:///{tmp_path}/podium.db")
    )
    yield s
    await s.close()


@pytest.fixture
def state(store: Store) -> ClusterState:
    return ClusterState(store, clock=lambda: 1000.0, guest_network=NET)


async def nics_of(state: ClusterState, name: str) -> list[dict[str, Any]]:
    return list((await state.get_object(Kind.GUEST, name))["status"]["nics"])


async def index(state: ClusterState) -> dict[str, dict[str, Any]]:
    res = await state.store.range("/podium/ipam/")
    return {kv.key: loads(kv.value) for kv in res.kvs}


# -- the network --------------------------------------------------------------------------


def test_guest_network_defaults_and_checks() -> None:
    net = GuestNetwork.of("10.0.0.0/24")
    assert (str(net.first), str(net.last), net.gateway, net.size) == (
        "10.0.0.1",
        "10.0.0.254",
        None,
        254,
    )
    v6 = GuestNetwork.of("fd00::/120", gateway="fd00::1")
    assert (str(v6.first), str(v6.last)) == ("fd00::1", "fd00::ff")
    with pytest.raises(ValueError, match=r"pool start 10\.1\.0\.5 is not inside subnet"):
        GuestNetwork.of("10.0.0.0/24", "10.1.0.5-10.0.0.9")
    with pytest.raises(ValueError, match="start is after its end"):
        GuestNetwork.of("10.0.0.0/24", "10.0.0.9-10.0.0.5")
    with pytest.raises(ValueError, match=r"gateway 10\.2\.0\.1 is not inside"):
        GuestNetwork.of("10.0.0.0/24", gateway="10.2.0.1")
    with pytest.raises(ValueError, match="not a network in CIDR form"):
        GuestNetwork.of("10.0.0.1/24")


# -- realising NICs -------------------------------------------------------------------------


async def test_apply_realises_nics_in_the_guest_txn(state: ClusterState) -> None:
    await state.apply([guest("a", nics=[{}, {}]), guest("b")])
    a, b = await nics_of(state, "a"), await nics_of(state, "b")
    assert [n["ip"] for n in a + b] == ["10.9.0.10/24", "10.9.0.11/24", "10.9.0.12/24"]
    assert {n["gw"] for n in a + b} == {"10.9.0.1"}
    macs = [n["mac"] for n in a + b]
    assert len(set(macs)) == 3 and all(m.startswith("52:54:00:") for m in macs)
    held = await index(state)
    assert held[keys.mac_key(a[0]["mac"])]["guest"] == "a"
    assert held[keys.ip_key("10.9.0.12")] == {
        "guest": "b",
        "uid": (await state.get_object(Kind.GUEST, "b"))["metadata"]["uid"],
    }
    assert len(held) == 6


async def test_without_a_guest_network_only_macs(store: Store) -> None:
    state = ClusterState(store)
    await state.apply([guest("a")])
    [nic] = await nics_of(state, "a")
    assert nic["ip"] is None and nic["gw"] is None
    assert list(await index(state)) == [keys.mac_key(nic["mac"])]


async def test_fixed_mac_and_ip_are_kept_and_skipped_by_the_pool(state: ClusterState) -> None:
    await state.apply(
        [
            guest("a", nics=[{}, {"mac": "52:54:00:00:00:01", "ip": "10.9.0.10"}]),
            guest("b", nics=[{"ip": "192.168.5.5/16"}]),
        ]
    )
    a = await nics_of(state, "a")
    assert a[1] == {"mac": "52:54:00:00:00:01", "ip": "10.9.0.10/24", "gw": "10.9.0.1"}
    assert a[0]["ip"] == "10.9.0.11/24"  # the fixed one was not handed out twice
    [b] = await nics_of(state, "b")
    assert (b["ip"], b["gw"]) == ("192.168.5.5/16", None)  # off-link: its own prefix


async def test_a_taken_fixed_mac_or_ip_is_a_conflict_naming_the_holder(
    state: ClusterState,
) -> None:
    await state.apply([guest("a", nics=[{"mac": "52:54:00:00:00:01", "ip": "10.9.0.15"}])])
    before = await index(state)
    with pytest.raises(Conflict, match="MAC 52:54:00:00:00:01 is held by guest 'a'"):
        await state.apply([guest("b", nics=[{"mac": "52:54:00:00:00:01"}])])
    with pytest.raises(Conflict, match=r"IP 10\.9\.0\.15 is held by guest 'a'"):
        await state.apply([guest("c"), guest("b", nics=[{"ip": "10.9.0.15/24"}])])
    with pytest.raises(Conflict, match="gateway"):
        await state.apply([guest("b", nics=[{"ip": "10.9.0.1"}])])
    assert await index(state) == before  # all or nothing
    assert await state.get_record(Kind.GUEST, "c") is None


async def test_random_mac_collisions_are_retried(
    state: ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    macs = iter(["52:54:00:00:00:01", "52:54:00:00:00:01", "52:54:00:00:00:02"])
    monkeypatch.setattr(ipam, "random_mac", lambda: next(macs))
    await state.apply([guest("a")])
    await state.apply([guest("b")])
    assert [n["mac"] for n in await nics_of(state, "b")] == ["52:54:00:00:00:02"]


async def test_pool_exhausted_is_a_conflict(state: ClusterState) -> None:
    await state.apply([guest(f"g{i}") for i in range(11)])  # .10 .. .20
    with pytest.raises(Conflict, match="no free IP left in the guest pool"):
        await state.apply([guest("one-more")])


async def test_delete_releases_addresses_for_reuse(state: ClusterState) -> None:
    await state.apply([guest("a"), guest("b")])
    mac = (await nics_of(state, "a"))[0]["mac"]
    await state.delete_object(Kind.GUEST, "a")
    held = await index(state)
    assert keys.mac_key(mac) not in held and keys.ip_key("10.9.0.10") not in held
    await state.apply([guest("c", nics=[{"mac": mac}])])  # the MAC is free again
    assert (await nics_of(state, "c"))[0]["ip"] == "10.9.0.10/24"  # lowest free again


async def test_nics_cannot_change_on_an_existing_guest(state: ClusterState) -> None:
    await state.apply([guest("a")])
    nics = await nics_of(state, "a")
    with pytest.raises(Conflict, match="NICs cannot change on an existing guest"):
        await state.apply([guest("a", nics=[{}, {}])])
    result = await state.apply([guest("a", priority=3)])  # other fields may change
    assert result.actions == (("Guest", "a", "configured"),)
    assert await nics_of(state, "a") == nics


async def test_a_guest_stored_before_nics_gets_them_on_its_next_change(
    state: ClusterState,
) -> None:
    old = {"image": "tiny", "request": {"cpu": 1.0}, "running": True}
    await state.apply([Manifest(Kind.GUEST, "old", old)])
    record = await state.get_record(Kind.GUEST, "old")
    assert record is not None
    record.pop("nics")  # as written by an older server
    await state.store.put(keys.object_key(Kind.GUEST, "old"), dumps(record))
    await state.apply([Manifest(Kind.GUEST, "old", {**old, "priority": 1})])
    assert len(await nics_of(state, "old")) == 1


async def test_assignment_spec_carries_the_realised_nics(state: ClusterState) -> None:
    await state.apply([guest("a", disk_gib=3, workload="disk-writer")])
    await state.bind("a", "h1", expected_revision=0)
    [assignment], _ = await state.assignments("h1")
    assert assignment.spec["nics"] == await nics_of(state, "a")
    assert (assignment.spec["disk_gib"], assignment.spec["workload"]) == (3.0, "disk-writer")


# -- app replicas ---------------------------------------------------------------------------


async def test_replicas_are_created_in_txns_under_the_store_limit(store: Store) -> None:
    state = ClusterState(store, guest_network=GuestNetwork.of("10.8.0.0/16"))
    specs = [(f"web-{i}", replica(nics=2)) for i in range(1, 101)]  # 100 x (1 + 2 x 2) ops
    assert await state.create_owned_guests("web", specs) == 100
    assert await state.create_owned_guests("web", specs[:3]) == 0  # exist: skipped
    records, _ = await state.list_records(Kind.GUEST)
    ips = [n["ip"] for r in records for n in r["nics"]]
    assert len(ips) == len(set(ips)) == 200
    assert all(r["owner"] == "web" for r in records)


# -- concurrency ----------------------------------------------------------------------------


async def test_two_servers_allocating_at_once_never_share_an_address(store: Store) -> None:
    net = GuestNetwork.of("10.7.0.0/24")
    one, two = ClusterState(store, guest_network=net), ClusterState(store, guest_network=net)
    names = itertools.count()
    lost = 0
    txn = store.txn

    async def counting_txn(*args: Any, **kwargs: Any) -> Any:
        nonlocal lost
        result = await txn(*args, **kwargs)
        lost += not result.succeeded
        return result

    store.txn = counting_txn  # type: ignore[method-assign]

    async def create(state: ClusterState) -> None:
        await state.apply([guest(f"g{next(names)}", nics=[{}, {}])])

    async def replicas(state: ClusterState, app: str) -> None:
        await state.create_owned_guests(app, [(f"{app}-{i}", replica(app)) for i in range(5)])

    await asyncio.gather(
        *(create(s) for s in (one, two) * 6), replicas(one, "x"), replicas(two, "y")
    )
    assert lost > 0  # the servers did race for the same addresses
    records, _ = await one.list_records(Kind.GUEST)
    nics = [n for r in records for n in r["nics"]]
    assert len(records) == 22 and len(nics) == 34
    assert len({n["mac"] for n in nics}) == len({n["ip"] for n in nics}) == 34
    held = await index(one)
    assert len(held) == 68
    for r in records:  # every index key points back at its guest
        for n in r["nics"]:
            assert held[keys.ip_key(n["ip"].split("/")[0])]["uid"] == r["uid"]
    lowest = sorted(ipaddress.ip_interface(n["ip"]).ip for n in nics)
    assert [str(a) for a in lowest[:2]] == ["10.7.0.1", "10.7.0.2"]


# -- property: any sequence of creates and deletes keeps the index exact --------------------

Op = tuple[str, int, int]  # ("create"|"delete", guest number, NIC count)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["create", "delete"]), st.integers(0, 7), st.integers(0, 3)),
        max_size=25,
    )
)
def test_index_matches_the_guests_after_any_history(ops: list[Op]) -> None:
    asyncio.run(_check_history(ops, MemoryStore))


async def _check_history(ops: list[Op], make: Callable[[], Store]) -> None:
    store = make()
    net = GuestNetwork.of("10.6.0.0/28", gateway="10.6.0.1")  # 13 addresses: runs out
    state = ClusterState(store, guest_network=net)
    try:
        for op, n, count in ops:
            name = f"g{n}"
            exists = await state.get_record(Kind.GUEST, name) is not None
            if op == "create" and not exists:
                try:
                    await state.apply([guest(name, nics=[{}] * count)])
                except Conflict as err:
                    assert "no free IP" in str(err)
            elif op == "delete" and exists:
                await state.delete_object(Kind.GUEST, name)
        records, _ = await state.list_records(Kind.GUEST)
        expected: dict[str, str] = {}
        for r in records:
            for nic in r["nics"]:
                expected[keys.mac_key(nic["mac"])] = r["uid"]
                expected[keys.ip_key(nic["ip"].split("/")[0])] = r["uid"]
                assert ipaddress.ip_interface(nic["ip"]).ip != net.gateway
        held = await index(state)
        assert {k: v["uid"] for k, v in held.items()} == expected
    finally:
        await store.close()
