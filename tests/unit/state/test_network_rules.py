"""Network rules: ``allow`` validated, applied (and changed) on realised networks, peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from podium.model import Kind, Manifest, ManifestError, validate_document
from podium.state import ClusterState, Conflict
from podium.state._identities import routed_networks, rule_peers
from podium.store.memory import MemoryStore


def m(kind: str, name: str, **spec: Any) -> Manifest:
    return validate_document({"kind": kind, "name": name, "spec": spec})


def pool(name: str, net: int, *, gateway: bool = True) -> Manifest:
    spec: dict[str, Any] = {
        "type": "ipv4",
        "subnet": f"10.{net}.0.0/24",
        "range": f"10.{net}.0.10-10.{net}.0.200",
    }
    if gateway:
        spec["gateway"] = f"10.{net}.0.1"
    return m("Pool", name, **spec)


BASE = [
    pool("front-ips", 10),
    pool("back-ips", 20),
    pool("dark-ips", 30, gateway=False),
    m("Network", "front", vlan=100, ip_pool="front-ips"),
    m("Network", "back", vlan=200, ip_pool="back-ips"),
]


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    store = MemoryStore()
    yield ClusterState(store, clock=lambda: 1000.0)
    await store.close()


async def peers(state: ClusterState) -> dict[str, list[str]]:
    views, _ = await state.list_objects(Kind.NETWORK)
    return {v["name"]: v["status"]["peers"] for v in views}


def test_allow_names_are_validated() -> None:
    with pytest.raises(ManifestError, match="not a valid name"):
        m("Network", "n", vlan=5, allow=["Bad_Name"])
    with pytest.raises(ManifestError, match="twice"):
        m("Network", "n", vlan=5, allow=["a", "a"])
    assert m("Network", "n", vlan=5, allow=["a", "b"]).spec["allow"] == ["a", "b"]
    assert "allow" not in m("Network", "n", vlan=5).spec


def test_peers_are_symmetric_and_skip_what_cannot_route() -> None:
    def net(name: str, allow: list[str], gateway: str | None = "10.0.0.1", **kw: Any) -> Any:
        spec = {"allow": allow} if allow else {}
        return {"name": name, "spec": spec, "identity": {"gateway": gateway}, **kw}

    nets = [
        net("a", ["b", "gone"]),
        net("b", []),
        net("c", ["a"]),
        net("d", ["a"], deleting=True),
        net("e", ["a"], gateway=None),
    ]
    assert rule_peers(nets) == {"a": ["b", "c"], "b": ["a"], "c": ["a"]}


async def test_allow_makes_both_sides_peers_and_can_be_changed_and_removed(
    state: ClusterState,
) -> None:
    await state.apply(BASE)
    assert await peers(state) == {"back": [], "front": []}
    assert (await routed_networks(state))[0] == []

    result = await state.apply([m("Network", "front", vlan=100, ip_pool="front-ips",
                                  allow=["back"])])  # fmt: skip
    assert result.actions == (("Network", "front", "configured"),)
    assert await peers(state) == {"back": ["front"], "front": ["back"]}
    routed, revision = await routed_networks(state)
    assert revision == result.revision
    assert routed == [
        {"name": "back", "vlan": 200, "subnet": "10.20.0.0/24", "gateway": "10.20.0.1",
         "peers": ["front"]},
        {"name": "front", "vlan": 100, "subnet": "10.10.0.0/24", "gateway": "10.10.0.1",
         "peers": ["back"]},
    ]  # fmt: skip
    # the identity is untouched by a change of policy
    front = await state.get_object(Kind.NETWORK, "front")
    assert front["status"]["identity"]["vlan"] == 100

    await state.apply([m("Network", "front", vlan=100, ip_pool="front-ips")])
    assert await peers(state) == {"back": [], "front": []}
    assert (await routed_networks(state))[0] == []


async def test_rules_between_networks_created_in_one_apply(state: ClusterState) -> None:
    await state.apply(
        [
            pool("a-ips", 40),
            pool("b-ips", 50),
            m("Network", "a", vlan=40, ip_pool="a-ips", allow=["b"]),  # b comes later
            m("Network", "b", vlan=50, ip_pool="b-ips"),
        ]
    )
    assert (await peers(state))["b"] == ["a"]


async def test_rules_need_gateways_on_both_sides_and_existing_networks(
    state: ClusterState,
) -> None:
    await state.apply([*BASE, m("Network", "dark", vlan=300, ip_pool="dark-ips"),
                       m("Network", "bare", vlan=400)])  # fmt: skip
    with pytest.raises(Conflict, match="Network 'front' allows Network 'dark', which has no "
                       "gateway: give 'dark' an ip_pool whose Pool has a gateway"):  # fmt: skip
        await state.apply([m("Network", "front", vlan=100, ip_pool="front-ips", allow=["dark"])])
    with pytest.raises(Conflict, match="Network 'bare' allows front but has no gateway"):
        await state.apply([m("Network", "bare", vlan=400, allow=["front"])])
    with pytest.raises(Conflict, match="names Network 'nowhere', which does not exist"):
        await state.apply([m("Network", "front", vlan=100, ip_pool="front-ips",
                             allow=["nowhere"])])  # fmt: skip
    with pytest.raises(Conflict, match="allow names the network itself"):
        await state.apply([m("Network", "front", vlan=100, ip_pool="front-ips",
                             allow=["front"])])  # fmt: skip
    y = m("Network", "y", vlan=70, ip_pool="front-ips", allow=["x"])
    with pytest.raises(Conflict, match="which has no gateway"):  # a new network, same apply
        await state.apply([pool("x-ips", 60, gateway=False),
                           m("Network", "x", vlan=60, ip_pool="x-ips"), y])  # fmt: skip
    assert await peers(state) == {"back": [], "bare": [], "dark": [], "front": []}


async def test_only_allow_may_change_on_a_realised_network(state: ClusterState) -> None:
    await state.apply(BASE)
    with pytest.raises(Conflict, match=r"cannot change \(allow can\)"):
        await state.apply([m("Network", "front", vlan=101, ip_pool="front-ips",
                             allow=["back"])])  # fmt: skip
    assert await peers(state) == {"back": [], "front": []}


async def test_a_deleted_peer_drops_out(state: ClusterState) -> None:
    await state.apply([*BASE[:-1], m("Network", "back", vlan=200, ip_pool="back-ips",
                                     allow=["front"])])  # fmt: skip
    assert (await peers(state))["front"] == ["back"]
    await state.delete_object(Kind.NETWORK, "back")
    assert await peers(state) == {"front": []}
    assert (await routed_networks(state))[0] == []
