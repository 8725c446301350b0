"""AgentLink.networks: the routed networks, through the real API; a RuleSource."""

from __future__ import annotations

import pytest

from podium.agent import AgentError
from podium.agent._routes import RuleSource
from podium.client import AgentLink
from podium.model import validate_document
from podium.state import ClusterState
from tests.unit.client.conftest import CAPACITY


async def test_networks_lists_what_the_host_routes(link: AgentLink, state: ClusterState) -> None:
    assert isinstance(link, RuleSource)
    await link.register("h1", CAPACITY, {}, "sim", "0.1.0")
    docs = [
        {"kind": "Pool", "name": "a-ips", "spec": {"type": "ipv4", "subnet": "10.1.0.0/24",
                                                   "range": "10.1.0.10-10.1.0.20",
                                                   "gateway": "10.1.0.1"}},
        {"kind": "Pool", "name": "b-ips", "spec": {"type": "ipv4", "subnet": "10.2.0.0/24",
                                                   "range": "10.2.0.10-10.2.0.20",
                                                   "gateway": "10.2.0.1"}},
        {"kind": "Network", "name": "a", "spec": {"vlan": 10, "ip_pool": "a-ips"}},
        {"kind": "Network", "name": "b", "spec": {"vlan": 20, "ip_pool": "b-ips",
                                                  "allow": ["a"]}},
    ]  # fmt: skip
    applied = await state.apply([validate_document(d) for d in docs])
    networks, revision = await link.networks("h1")
    assert revision >= applied.revision
    assert [(n["name"], n["vlan"], n["gateway"], n["peers"]) for n in networks] == [
        ("a", 10, "10.1.0.1", ["b"]),
        ("b", 20, "10.2.0.1", ["a"]),
    ]
    with pytest.raises(AgentError, match="acts only for host 'h1'"):
        await link.networks("h2")
