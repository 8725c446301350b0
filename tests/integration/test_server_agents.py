"""Agents over AgentLink against a real server: join, run guests, fail over a dead host."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podium.agent import Agent
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig
from podium.drivers.sim import SimDriver
from podium.model import Resources
from tests.support.server import running_server

CAPACITY = Resources(8, 8192, 1000, 1000)


class Host:
    def __init__(self, name: str, config: ClientConfig, join_token: str) -> None:
        self.name = name
        self.link = AgentLink(config.server, join_token, config.ca_pem)
        self.driver = SimDriver(name=name, capacity=CAPACITY, start_delay=(0.05, 0.1))
        self.agent = Agent(name, self.link, self.driver, capacity=CAPACITY, labels={"rack": name})
        self.task = asyncio.create_task(self.agent.run(), name=f"agent-{name}")

    async def kill(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.driver.crash()

    async def close(self) -> None:
        await self.kill()
        await self.link.close()


@contextlib.asynccontextmanager
async def hosts(config: ClientConfig, join: str, count: int) -> AsyncIterator[list[Host]]:
    started = [Host(f"host-{i}", config, join) for i in range(1, count + 1)]
    try:
        yield started
    finally:
        for host in started:
            await host.close()


async def wait_for(
    client: AsyncPodiumClient, kind: str, check: Any, timeout: float = 30
) -> list[Any]:
    async with asyncio.timeout(timeout):
        while True:
            items, _ = await client.list(kind)
            if check(items):
                return items
            await asyncio.sleep(0.1)


def ready_hosts(count: int) -> Any:
    return lambda hs: sum(h["status"]["state"] == "ready" for h in hs) == count


def lost(name: str) -> Any:
    return lambda hs: any(h["name"] == name and h["status"]["state"] == "lost" for h in hs)


def running(count: int, *, off: str | None = None) -> Any:
    def check(gs: list[Any]) -> bool:
        return len(gs) == count and all(
            g["status"]["state"] == "running" and g["status"]["host"] != off for g in gs
        )

    return check


WEB = {
    "kind": "App",
    "name": "web",
    "spec": {"replicas": 4, "image": "tiny", "request": {"cpu": 1, "memory_mib": 256}},
}


@pytest.mark.slow
async def test_agents_join_run_guests_and_fail_over(tmp_path: Path) -> None:
    args = ["--host-ttl", "2", "--leader-ttl", "2"]
    with running_server(tmp_path / "data", args=args) as (_, config_path, _):
        config = ClientConfig.load(str(config_path))
        async with AsyncPodiumClient(config) as client:
            join = (await client.create_token("join", ttl=600))["token"]
            async with hosts(config, join, 3) as nodes:
                await wait_for(client, "hosts", ready_hosts(3))
                assert all(n.link.token.startswith("pdm_agent_") for n in nodes)
                await client.apply([WEB], source="web.yaml")
                guests = await wait_for(client, "guests", running(4))
                victim = next(n for n in nodes if n.name == guests[0]["status"]["host"])
                moved = {
                    g["name"]: g["status"]["epoch"]
                    for g in guests
                    if g["status"]["host"] == victim.name
                }
                await victim.kill()
                await wait_for(client, "hosts", lost(victim.name))
                after = await wait_for(client, "guests", running(4, off=victim.name))
                for g in after:
                    if g["name"] in moved:
                        assert g["status"]["epoch"] > moved[g["name"]]
                async with asyncio.timeout(10):
                    while "HostLost" not in {e["reason"] for e in (await client.events())[0]}:
                        await asyncio.sleep(0.1)
