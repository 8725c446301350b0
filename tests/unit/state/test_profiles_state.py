"""Pools, Networks and Profiles applied: identities realised, worn by guests, released."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from podium.model import Kind, Manifest, parse_manifest_text, validate_document
from podium.state import ClusterState, Conflict, NotFound, assignment_spec, keys, loads
from podium.store import InvalidRequest
from podium.store.memory import MemoryStore

with open("examples/profiles.yaml") as _f:
    EXAMPLE = parse_manifest_text(_f.read())


def m(kind: str, name: str, **spec: Any) -> Manifest:
    return validate_document({"kind": kind, "name": name, "spec": spec})


def profile(name: str, **spec: Any) -> Manifest:
    spec.setdefault("nics", [{"network": "front", "mac_pool": "macs"}])
    return m("Profile", name, **spec)


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    store = MemoryStore()
    yield ClusterState(store, clock=lambda: 1000.0)
    await store.close()


async def held(state: ClusterState) -> dict[str, Any]:
    res = await state.store.range("/podium/")
    return {
        kv.key: loads(kv.value)
        for kv in res.kvs
        if kv.key.startswith((keys.POOLS, keys.IPAM_MAC, keys.IPAM_WWN, keys.PROFILE_USE))
    }


async def test_pools_networks_profile_and_guest_in_one_file(state: ClusterState) -> None:
    result = await state.apply(EXAMPLE)
    assert [a for _, _, a in result.actions] == ["created"] * len(EXAMPLE)
    view = await state.get_object(Kind.PROFILE, "db")
    assert set(view) == {"kind", "name", "spec", "status", "metadata"}
    identity = view["status"]["identity"]
    assert identity["nics"][0] == {
        "network": "front",
        "vlan": 100,
        "mac": "02:00:0a:00:00:00",
        "ip": "10.10.0.10/24",
        "gw": "10.10.0.1",
    }
    assert identity["nics"][1]["ip"] == "10.20.0.10/24" and identity["nics"][1]["gw"] is None
    hba = identity["hbas"][0]
    assert (hba["wwpn"], hba["wwnn"]) == ("50:01:43:80:00:00:00:00", "50:01:43:80:00:00:00:01")
    assert hba["luns"][0] == {
        "lun": 0,
        "volume": "db/data",
        "wwn": "50:01:43:80:00:00:00:02",
        "serial": "pd-db-data",
        "size_gib": 1,
    }
    assert identity["boot"] == ["disk", "network"]
    assert (view["status"]["guest"], view["status"]["host"]) == ("db", None)
    assert view["status"]["state"] == "pending"
    guest = await state.get_record(Kind.GUEST, "db")
    assert guest is not None and guest["nics"] == identity["nics"]
    spec = assignment_spec(guest)
    assert (spec["nics"], spec["hbas"], spec["boot"]) == (
        identity["nics"],
        identity["hbas"],
        identity["boot"],
    )
    keys_now = await held(state)
    assert keys_now[keys.profile_use_key("db")]["guest"] == "db"
    assert len([k for k in keys_now if k.startswith(keys.IPAM_WWN)]) == 4
    again = await state.apply(EXAMPLE)
    assert {a for _, _, a in again.actions} == {"unchanged"}
    assert await held(state) == keys_now


async def test_pool_and_network_views(state: ClusterState) -> None:
    await state.apply(EXAMPLE)
    pools = {p["name"]: p["status"] for p in (await state.list_objects(Kind.POOL))[0]}
    assert pools["front-ips"] == {"type": "ipv4", "size": 191, "used": 1, "free": 190}
    assert pools["back-ips"]["size"] == 190 and pools["wwns"]["used"] == 4
    net = await state.get_object(Kind.NETWORK, "front")
    assert net["status"] == {
        "identity": {
            "vlan": 100,
            "subnet": "10.10.0.0/24",
            "gateway": "10.10.0.1",
            "ip_pool": "front-ips",
        },
        "profiles": 1,
        "peers": [],
    }


async def test_vlan_pool_network_and_release_on_delete(state: ClusterState) -> None:
    await state.apply(
        [
            m("Pool", "vlans", type="vlan", range="100-101"),
            m("Network", "a", vlan_pool="vlans"),
            m("Network", "b", vlan_pool="vlans"),
        ]
    )
    assert (await state.get_object(Kind.NETWORK, "b"))["status"]["identity"]["vlan"] == 101
    with pytest.raises(Conflict, match="Pool 'vlans' is exhausted"):
        await state.apply([m("Network", "c", vlan_pool="vlans")])
    with pytest.raises(Conflict, match=r"Pool 'vlans' is used by Network 'a' \(vlan\)"):
        await state.delete_object(Kind.POOL, "vlans")
    assert "deleting" not in (await state.get_record(Kind.POOL, "vlans") or {})
    await state.delete_object(Kind.NETWORK, "a")
    await state.apply([m("Network", "c", vlan_pool="vlans")])
    assert (await state.get_object(Kind.NETWORK, "c"))["status"]["identity"]["vlan"] == 100


async def test_references_must_exist_and_be_of_the_right_type(state: ClusterState) -> None:
    await state.apply(EXAMPLE[:6])
    with pytest.raises(Conflict, match="names Network 'nowhere', which does not exist"):
        await state.apply([profile("p", nics=[{"network": "nowhere", "mac_pool": "macs"}])])
    with pytest.raises(Conflict, match="names Pool 'wwns' of type wwn; it needs a mac pool"):
        await state.apply([profile("p", nics=[{"network": "front", "mac_pool": "wwns"}])])
    with pytest.raises(Conflict, match="needs a vlan pool"):
        await state.apply([m("Network", "n", vlan_pool="macs")])
    with pytest.raises(Conflict, match="names Profile 'ghost', which does not exist"):
        await state.apply([m("Guest", "g", profile="ghost")])
    assert await state.get_record(Kind.PROFILE, "p") is None


async def test_imports_conflict_with_the_holder(state: ClusterState) -> None:
    await state.apply(
        [
            *EXAMPLE[:6],
            profile(
                "web",
                nics=[
                    {
                        "network": "front",
                        "mac_pool": "macs",
                        "mac": "02:00:0a:00:00:05",
                        "ip": "10.10.0.20",
                    }
                ],
            ),
        ]
    )
    web = (await state.get_object(Kind.PROFILE, "web"))["status"]["identity"]["nics"][0]
    assert (web["mac"], web["ip"]) == ("02:00:0a:00:00:05", "10.10.0.20/24")
    with pytest.raises(Conflict, match=r"MAC 02:00:0a:00:00:05 is held by Profile 'web' \(nic 0\)"):
        await state.apply([profile("db2", nics=[{"network": "back", "mac": "02:00:0a:00:00:05"}])])
    with pytest.raises(Conflict, match=r"IP 10\.10\.0\.20 is held by Profile 'web' \(nic 0 ip\)"):
        await state.apply(
            [profile("db2", nics=[{"network": "front", "mac_pool": "macs", "ip": "10.10.0.20"}])]
        )
    with pytest.raises(Conflict, match="outside Pool 'front-ips'"):
        await state.apply(
            [profile("db2", nics=[{"network": "front", "mac_pool": "macs", "ip": "10.10.0.250"}])]
        )
    await state.apply([m("Guest", "x", nics=[{"mac": "02:00:0a:00:00:07"}])])
    with pytest.raises(Conflict, match="MAC 02:00:0a:00:00:07 is held by Guest 'x'"):
        await state.apply([profile("db2", nics=[{"network": "back", "mac": "02:00:0a:00:00:07"}])])
    with pytest.raises(Conflict, match=r"MAC 02:00:0a:00:00:05 is held by Profile 'web' \(nic 0\)"):
        await state.apply([m("Guest", "y", nics=[{"mac": "02:00:0a:00:00:05"}])])
    # a pool allocation skips the guest's MAC
    await state.apply([profile("p1"), profile("p2")])
    macs = {
        n["mac"]
        for p in ("p1", "p2")
        for n in (await state.get_record(Kind.PROFILE, p) or {})["identity"]["nics"]
    }
    assert macs == {"02:00:0a:00:00:00", "02:00:0a:00:00:01"}


async def test_a_profile_serves_one_guest(state: ClusterState) -> None:
    await state.apply(EXAMPLE)
    with pytest.raises(Conflict, match="Profile 'db' is used by Guest 'db'"):
        await state.apply([m("Guest", "db-2", profile="db")])
    with pytest.raises(Conflict, match="Profile 'p' is used by Guest 'a'"):
        await state.apply(
            [profile("p"), m("Guest", "a", profile="p"), m("Guest", "b", profile="p")]
        )
    with pytest.raises(Conflict, match="its profile cannot change"):
        await state.apply([m("Guest", "db", image="tiny", request={"cpu": 1, "memory_mib": 128})])


async def test_realised_identities_never_change(state: ClusterState) -> None:
    await state.apply(EXAMPLE)
    changed = profile("db", nics=[{"network": "front", "mac_pool": "macs"}])
    with pytest.raises(Conflict, match="its nics cannot change in place; delete the profile"):
        await state.apply([changed])
    with pytest.raises(Conflict, match="is worn by Guest 'db'"):
        await state.apply([m("Profile", "db", **{**EXAMPLE[6].spec, "boot": ["disk"]})])
    with pytest.raises(Conflict, match="Network 'front' is realised"):
        await state.apply([m("Network", "front", vlan=101, ip_pool="front-ips")])
    with pytest.raises(Conflict, match="Pool 'front-ips': subnet cannot change"):
        await state.apply(
            [
                m(
                    "Pool",
                    "front-ips",
                    type="ipv4",
                    subnet="10.10.1.0/24",
                    range="10.10.1.10-10.10.1.20",
                )
            ]
        )
    with pytest.raises(Conflict, match=r"10\.10\.0\.10 is allocated and would fall outside"):
        await state.apply(
            [
                m(
                    "Pool",
                    "front-ips",
                    type="ipv4",
                    subnet="10.10.0.0/24",
                    range="10.10.0.11-10.10.0.20",
                    gateway="10.10.0.1",
                )
            ]
        )
    wider = m(
        "Pool",
        "front-ips",
        type="ipv4",
        subnet="10.10.0.0/24",
        range="10.10.0.10-10.10.0.250",
        gateway="10.10.0.1",
    )
    assert (await state.apply([wider])).actions == (("Pool", "front-ips", "configured"),)


async def test_deletes_refuse_users_and_release_everything(state: ClusterState) -> None:
    await state.apply(EXAMPLE)
    with pytest.raises(Conflict, match="Profile 'db' is used by Guest 'db': delete the guest"):
        await state.delete_object(Kind.PROFILE, "db")
    with pytest.raises(Conflict, match="Network 'front' is used by Profile 'db'"):
        await state.delete_object(Kind.NETWORK, "front")
    with pytest.raises(Conflict, match="Pool 'macs' is used by Profile 'db'"):
        await state.delete_object(Kind.POOL, "macs")
    await state.delete_object(Kind.GUEST, "db")
    after_guest = await held(state)
    assert keys.profile_use_key("db") not in after_guest
    assert keys.mac_key("02:00:0a:00:00:00") in after_guest  # the profile keeps its MACs
    await state.delete_object(Kind.PROFILE, "db")
    assert await held(state) == {}
    for kind, name in [(Kind.NETWORK, "front"), (Kind.POOL, "front-ips"), (Kind.POOL, "macs")]:
        await state.delete_object(kind, name)
    with pytest.raises(NotFound):
        await state.delete_object(Kind.POOL, "macs")
    # a re-created profile gets the same first addresses back
    await state.apply(EXAMPLE)
    nic = (await state.get_record(Kind.PROFILE, "db") or {})["identity"]["nics"][0]
    assert nic["mac"] == "02:00:0a:00:00:00"


async def test_a_pool_referenced_by_a_network_cannot_go(state: ClusterState) -> None:
    await state.apply(EXAMPLE[:6])
    with pytest.raises(Conflict, match="Pool 'front-ips' is used by Network 'front'"):
        await state.delete_object(Kind.POOL, "front-ips")


async def test_an_apply_too_big_for_one_transaction_says_split_it(state: ClusterState) -> None:
    await state.apply(EXAMPLE[:6])
    many = [
        profile(f"p{i}", nics=[{"network": "front", "mac_pool": "macs"}] * 4) for i in range(10)
    ]
    with pytest.raises(InvalidRequest, match="split the file into smaller applies"):
        await state.apply(many)
    assert (await state.list_records(Kind.PROFILE))[0] == []
