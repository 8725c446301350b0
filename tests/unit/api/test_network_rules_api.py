"""GET /api/v1/agent/{host}/networks: what a host routes; its own agent token only."""

from __future__ import annotations

from typing import Any

import httpx

from podium.state import ClusterState

from .conftest import MakeClient
from .helpers import assert_one_line_error
from .test_agent import join


def doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec}


def documents(allow: list[str] | None) -> list[dict[str, Any]]:
    front: dict[str, Any] = {"vlan": 100, "ip_pool": "front-ips"}
    if allow is not None:
        front["allow"] = allow
    return [
        doc("Pool", "front-ips", type="ipv4", subnet="10.10.0.0/24",
            range="10.10.0.10-10.10.0.200", gateway="10.10.0.1"),
        doc("Pool", "back-ips", type="ipv4", subnet="10.20.0.0/24",
            range="10.20.0.10-10.20.0.200", gateway="10.20.0.1"),
        doc("Network", "front", **front),
        doc("Network", "back", vlan=200, ip_pool="back-ips"),
        doc("Network", "other", vlan=300),
    ]  # fmt: skip


async def apply(admin: httpx.AsyncClient, allow: list[str] | None) -> int:
    answer = await admin.post("/api/v1/apply", json={"documents": documents(allow)})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["revision"])


async def test_a_host_gets_the_networks_with_peers(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, _ = await join(make_client, state, "h1")
    await apply(admin, None)
    empty = await agent.get("/api/v1/agent/h1/networks")
    assert empty.status_code == 200 and empty.json()["networks"] == []

    revision = await apply(admin, ["back"])
    body = (await agent.get("/api/v1/agent/h1/networks")).json()
    assert body["revision"] >= revision
    assert body["networks"] == [
        {"name": "back", "vlan": 200, "subnet": "10.20.0.0/24", "gateway": "10.20.0.1",
         "peers": ["front"]},
        {"name": "front", "vlan": 100, "subnet": "10.10.0.0/24", "gateway": "10.10.0.1",
         "peers": ["back"]},
    ]  # fmt: skip
    shown = (await admin.get("/api/v1/networks/back")).json()
    assert shown["status"]["peers"] == ["front"]

    await apply(admin, [])
    assert (await agent.get("/api/v1/agent/h1/networks")).json()["networks"] == []


async def test_only_that_hosts_agent_token_reads_it(
    make_client: MakeClient, state: ClusterState
) -> None:
    await join(make_client, state, "h1")
    other, _ = await join(make_client, state, "h2")
    assert_one_line_error(
        await other.get("/api/v1/agent/h1/networks"), 403, "acts only for host 'h2'"
    )
    reader = make_client(await state.create_token("join"))
    assert_one_line_error(await reader.get("/api/v1/agent/h1/networks"), 403, "agent token")
    anonymous = make_client("pdm_nope")
    assert (await anonymous.get("/api/v1/agent/h1/networks")).status_code == 401
