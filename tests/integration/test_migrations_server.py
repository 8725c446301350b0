"""Live migration and drain through a real ``podium server`` process (SQLite store).

The hosts are scripted agents over :class:`AgentLink`: they keep their lease, report
their guests running, and answer migrations the way the agent contract says (target
``ready`` with a URI, source ``completed``), instantly. What is under test is the
server: the API, the leader's migration and drain controllers, the agent endpoint,
and ``--max-migrations-per-host`` from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podium.client import AgentLink, AsyncPodiumClient, ClientConfig
from tests.support.server import running_server

CAPACITY = {"cpu": 8, "memory_mib": 8192, "iops": 1000, "net_mbps": 1000}


class ScriptedHost:
    """A host that does what it is told at once (no driver)."""

    def __init__(self, name: str, config: ClientConfig, join_token: str) -> None:
        self.name = name
        self.link = AgentLink(config.server, join_token, config.ca_pem)
        self.reported: dict[str, tuple[int, str]] = {}
        self.steps: list[tuple[str, str, str]] = []  # (guest, role, state) reported
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reg = await self.link.register(self.name, CAPACITY, {}, "sim", "test")
        self.task = asyncio.create_task(self._run(reg.lease, reg.keepalive_interval))

    async def _run(self, lease: int, interval: float) -> None:
        beat = 0.0
        while True:
            if beat <= 0:
                await self.link.keepalive(self.name, lease)
                beat = interval
            items, _ = await self.link.assignments(self.name)
            for a in items:
                await self._act(a)
            await asyncio.sleep(0.05)
            beat -= 0.05

    async def _act(self, a: dict[str, Any]) -> None:
        guest, epoch = a["guest"], int(a["epoch"])
        if "incoming" in a:
            step = {"guest": guest, "id": a["incoming"]["id"], "role": "target"}
            if (guest, "target", "ready") not in self.steps:
                await self.link.report_migration(
                    self.name, {**step, "state": "ready", "uri": f"tcp:{self.name}:4444"}
                )
                self.steps.append((guest, "target", "ready"))
            return
        if "migrate" in a:
            step = {"guest": guest, "id": a["migrate"]["id"], "role": "source"}
            if (guest, "source", "completed") not in self.steps:
                result = {"total_ms": 50.0, "downtime_ms": 5.0, "transferred": 1024}
                await self.link.report_migration(
                    self.name, {**step, "state": "completed", "result": result}
                )
                self.steps.append((guest, "source", "completed"))
            return
        if self.reported.get(guest) != (epoch, "running"):
            report = {"guest": guest, "epoch": epoch, "state": "running", "message": ""}
            answer = await self.link.report(self.name, [report])
            if guest in answer["accepted"]:
                self.reported[guest] = (epoch, "running")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.link.close()


@contextlib.asynccontextmanager
async def scripted(config: ClientConfig, join: str, names: list[str]) -> AsyncIterator[None]:
    hosts = [ScriptedHost(n, config, join) for n in names]
    try:
        for h in hosts:
            await h.start()
        yield
    finally:
        for h in hosts:
            await h.close()


async def until(client: AsyncPodiumClient, check: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await check(client):
            await asyncio.sleep(0.1)


def guest(name: str) -> dict[str, Any]:
    spec = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 256}}
    return {"kind": "Guest", "name": name, "spec": spec}


async def guests(client: AsyncPodiumClient) -> dict[str, Any]:
    items, _ = await client.list("guests")
    return {g["name"]: g["status"] for g in items}


@pytest.mark.slow
async def test_migrate_and_drain_through_a_server_process(tmp_path: Path) -> None:
    args = ["--host-ttl", "4", "--leader-ttl", "2", "--max-migrations-per-host", "1"]
    with running_server(tmp_path / "data", args=args) as (_, config_path, _):
        config = ClientConfig.load(str(config_path))
        async with AsyncPodiumClient(config) as client:
            join = (await client.create_token("join", ttl=600))["token"]
            async with scripted(config, join, ["h1", "h2", "h3"]):
                await client.apply([guest("a"), guest("b"), guest("c")], source="g.yaml")

                async def all_running(c: AsyncPodiumClient) -> bool:
                    gs = await guests(c)
                    return len(gs) == 3 and all(g["state"] == "running" for g in gs.values())

                await until(client, all_running)
                before = await guests(client)
                source = before["a"]["host"]
                target = next(h for h in ("h1", "h2", "h3") if h != source)
                record = await client.migrate("a", target)
                assert record["state"] == "pending"

                async def migrated(c: AsyncPodiumClient) -> bool:
                    return (await c.migration("a"))["state"] == "completed"

                await until(client, migrated)
                after = (await guests(client))["a"]
                assert (after["host"], after["epoch"]) == (target, before["a"]["epoch"] + 1)
                done = await client.migration("a")
                assert done["result"]["downtime_ms"] == 5.0
                assert done["result"]["total_ms"] >= 0

                drained_host = (await guests(client))["b"]["host"]
                answer = await client.drain(drained_host)
                assert answer["draining"] is True

                async def empty(c: AsyncPodiumClient) -> bool:
                    view = await c.get("host", drained_host)
                    gs = await guests(c)
                    return view["status"]["guests"] == 0 and all(
                        g["state"] == "running" and g["host"] != drained_host for g in gs.values()
                    )

                await until(client, empty)

                async def said_drained(c: AsyncPodiumClient) -> bool:
                    events, _ = await c.events()
                    return any(e["reason"] == "HostDrained" for e in events)

                await until(client, said_drained)
                events, _ = await client.events()
                reasons = [e["reason"] for e in events]
                assert "HostDraining" in reasons and reasons.count("HostDrained") == 1
                assert "MigrationStarted" in reasons and "MigrationCompleted" in reasons
                await client.cordon(drained_host, False)
                view = await client.get("host", drained_host)
                assert view["status"]["draining"] is False
