"""Client calls for live migration and drain, and AgentLink.report_migration, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from podium.client import AgentLink, AsyncPodiumClient, ClientConfig, ClientError
from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.state import ClusterState, Migrations
from tests.support.server import StreamingASGITransport

CAP = Resources(cpu=4, memory_mib=1024, iops=100, net_mbps=100)


@pytest.fixture
async def client(app: FastAPI, config: ClientConfig) -> AsyncIterator[AsyncPodiumClient]:
    async with AsyncPodiumClient(config, transport=StreamingASGITransport(app)) as c:
        yield c


async def cluster(state: ClusterState) -> None:
    for name in ("h1", "h2"):
        lease = await state.store.grant(600)
        await state.register_host(
            HostName(name), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
        )
    spec = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 64}, "running": True}
    await state.apply([Manifest(Kind.GUEST, "g", spec)])
    await state.bind("g", "h1", expected_revision=0)
    await state.report_guest_status("h1", "g", 1, GuestState.RUNNING)


async def test_migrate_migration_migrations_and_drain(
    client: AsyncPodiumClient, state: ClusterState
) -> None:
    await cluster(state)
    with pytest.raises(ClientError, match="cannot migrate guest 'g' to h9: unknown host") as bad:
        await client.migrate("g", "h9")
    assert bad.value.status == 422
    record = await client.migrate("g")
    assert (record["state"], record["source"], record["target"]) == ("pending", "h1", "h2")
    assert await client.migration("g") == record
    assert await client.migrations() == [record]
    with pytest.raises(ClientError, match="already migrating") as busy:
        await client.migrate("g", "h2")
    assert busy.value.status == 409
    with pytest.raises(ClientError, match="no migration of guest 'x'"):
        await client.migration("x")
    assert await client.drain("h1") == {"name": "h1", "draining": True, "guests": 1}
    assert (await client.get("host", "h1"))["status"]["draining"] is True


async def test_agent_link_reports_migration_steps(app: FastAPI, state: ClusterState) -> None:
    await cluster(state)
    m = Migrations(state)
    record = await m.request("g", "h2")
    await m.start("g", record["id"], "h2")
    token = await state.create_token("agent", host="h2")
    link = AgentLink("http://podium", token, None, transport=StreamingASGITransport(app))
    try:
        step = {"guest": "g", "id": record["id"], "role": "target", "state": "ready"}
        answer = await link.report_migration("h2", {**step, "uri": "tcp:10.0.0.2:1"})
        assert answer == {"accepted": True, "reason": "transferring"}
        stale = await link.report_migration("h2", {**step, "id": "mig-gone", "uri": "tcp:x:1"})
        assert stale["accepted"] is False and "not current" in stale["reason"]
    finally:
        await link.close()
    assert (await m.get("g") or {})["state"] == "transferring"
