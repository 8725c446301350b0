"""Backups and console through both clients: the CLI's AsyncPodiumClient, the agent's link."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from podium.agent import AgentError, LinkError
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig, ClientError
from podium.model import Kind, Manifest
from podium.state import ClusterState
from tests.support.server import StreamingASGITransport
from tests.unit.client.conftest import CAPACITY

SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}, "nics": [{}]}


@pytest.fixture
async def client(app: FastAPI, config: ClientConfig) -> AsyncIterator[AsyncPodiumClient]:
    async with AsyncPodiumClient(config, transport=StreamingASGITransport(app)) as c:
        yield c


async def agent_of(app: FastAPI, state: ClusterState, host: str) -> AgentLink:
    link = AgentLink(
        "http://podium",
        await state.create_token("join"),
        None,
        transport=StreamingASGITransport(app),
    )
    await link.register(host, CAPACITY, {}, "sim", "0.1.0")
    return link


async def run_guest(state: ClusterState, link: AgentLink, name: str, host: str) -> None:
    await state.apply([Manifest(Kind.GUEST, name, SPEC)])
    bound = await state.bind(name, host, expected_revision=0)
    assert bound is not None
    answer = await link.report(host, [{"guest": name, "epoch": bound.epoch, "state": "running"}])
    assert answer["accepted"] == [name]


async def test_backup_round_trip(
    app: FastAPI, state: ClusterState, client: AsyncPodiumClient
) -> None:
    link = await agent_of(app, state, "h1")
    try:
        await run_guest(state, link, "db-1", "h1")
        record = await client.create_backup("db-1")
        assert (record["state"], record["mode"]) == ("pending", "full")
        items, _ = await link.assignments("h1")
        assert items[0]["backup"] == {
            "id": record["id"],
            "mode": "full",
            "target": "local",
            "parent_path": None,
            "parent_volumes": {},
        }
        report = {"guest": "db-1", "id": record["id"], "state": "completed",
                  "path": "/san/db-1.qcow2", "mode": "full", "bytes": 10}  # fmt: skip
        assert await link.report_backup("h1", report) == {"accepted": True, "reason": ""}
        assert (await client.backup(record["id"]))["state"] == "completed"
        assert [b["id"] for b in await client.backups("db-1")] == [record["id"]]
        assert [b["id"] for b in await client.backups()] == [record["id"]]
        with pytest.raises(ClientError, match="is not running") as err:
            await _not_running(state, client)
        assert err.value.status == 409
        restored = await client.restore_backup(record["id"], "db-2")
        assert restored["guest"]["name"] == "db-2"
        assert restored["guest"]["spec"]["restore_from"]["path"] == "/san/db-1.qcow2"
        with pytest.raises(ClientError, match="exists: delete it or restore --as") as err:
            await client.restore_backup(record["id"])
        assert err.value.status == 409
        with pytest.raises(ClientError, match="not found") as err:
            await client.backup("db-1-x-0000")
        assert err.value.status == 404
    finally:
        await link.close()


async def _not_running(state: ClusterState, client: AsyncPodiumClient) -> None:
    await state.apply([Manifest(Kind.GUEST, "idle", SPEC)])
    await client.create_backup("idle")


async def test_console_round_trip(
    app: FastAPI, state: ClusterState, client: AsyncPodiumClient
) -> None:
    h1 = await agent_of(app, state, "h1")
    h2 = await agent_of(app, state, "h2")
    try:
        await run_guest(state, h1, "a", "h1")
        with pytest.raises(ClientError, match="no console captured for guest 'a' yet") as err:
            await client.console("a")
        assert err.value.status == 404
        assert await h1.push_console("h1", "a", "login: ") is None
        got = await client.console("a")
        assert (got["guest"], got["host"], got["text"]) == ("a", "h1", "login: ")
        with pytest.raises(LinkError, match="bound to h1, not h2"):  # 409: retried later
            await h2.push_console("h2", "a", "forged")
        with pytest.raises(AgentError, match="acts only for host 'h2'"):  # 403: not retryable
            await h2.push_console("h1", "a", "forged")
        assert (await client.console("a"))["text"] == "login: "
    finally:
        await h1.close()
        await h2.close()


async def test_stale_backup_reports_come_back_not_accepted(
    app: FastAPI, state: ClusterState, client: AsyncPodiumClient
) -> None:
    h1 = await agent_of(app, state, "h1")
    try:
        await run_guest(state, h1, "a", "h1")
        record = await client.create_backup("a")
        _, rev = await state.get_binding("a")
        await state.bind("a", "h2", expected_revision=rev)
        answer = await h1.report_backup(
            "h1", {"guest": "a", "id": record["id"], "state": "running"}
        )
        assert answer["accepted"] is False and "stale" in answer["reason"]
    finally:
        await h1.close()
