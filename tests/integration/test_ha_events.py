"""Failover as `podium events` tells it: serve() in this process, sim agents over HTTPS.

A partitioned host walks through every step, in time order: HostSuspect (renewals late),
HostFenced (its agent killed its guests; told when it registers again, placed at the
time of the fence), HostLost (lease expired), GuestRebound, GuestRunning elsewhere.
A killed host (no agent left to fence) shows the same steps without HostFenced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from podium.agent import Agent, FenceReport, LinkError, Registration
from podium.client import AgentLink, AsyncPodiumClient, ClientConfig
from podium.drivers.sim import SimDriver
from podium.model import Resources
from podium.server import ServerSettings, serve

CAPACITY = Resources(8, 8192, 1000, 1000)
TTL = 4  # suspect after 2 s without a renewal; the agent fences 0.8 s before expiry
DB = {
    "kind": "App",
    "name": "db",
    "spec": {"replicas": 1, "image": "tiny", "request": {"cpu": 1, "memory_mib": 256}},
}


class Cuttable:
    """An AgentLink that a test can cut off the network (every call fails while cut)."""

    def __init__(self, link: AgentLink) -> None:
        self.inner = link
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise LinkError("partitioned (test)")

    async def ping(self) -> None:
        self._check()
        await self.inner.ping()

    async def register(self, *args: Any, fenced: FenceReport | None = None) -> Registration:
        self._check()
        return await self.inner.register(*args, fenced=fenced)

    async def keepalive(self, host: str, lease: int) -> int:
        self._check()
        return await self.inner.keepalive(host, lease)

    async def assignments(self, host: str) -> tuple[list[dict[str, Any]], int]:
        self._check()
        return await self.inner.assignments(host)

    async def watch_assignments(
        self, host: str, from_revision: int
    ) -> AsyncIterator[dict[str, Any]]:
        self._check()
        stream = self.inner.watch_assignments(host, from_revision)
        try:
            async for line in stream:
                self._check()
                yield line
        finally:
            await stream.aclose()

    async def report(self, host: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        self._check()
        return await self.inner.report(host, reports)

    async def report_migration(self, host: str, report: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return await self.inner.report_migration(host, report)

    async def report_backup(self, host: str, report: dict[str, Any]) -> dict[str, Any]:
        self._check()
        return await self.inner.report_backup(host, report)

    async def push_console(self, host: str, guest: str, text: str) -> None:
        self._check()
        await self.inner.push_console(host, guest, text)

    async def close(self) -> None:
        await self.inner.close()


class Host:
    def __init__(self, name: str, config: ClientConfig, token: str) -> None:
        self.name = name
        self.link = Cuttable(AgentLink(config.server, token, config.ca_pem))
        self.driver = SimDriver(name=name, capacity=CAPACITY, start_delay=(0.05, 0.1))
        self.agent = Agent(name, self.link, self.driver, capacity=CAPACITY)
        self.task = asyncio.create_task(self.agent.run(), name=f"agent-{name}")

    async def kill(self) -> None:
        """kill -9 of the agent and its guests."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.driver.crash()

    async def close(self) -> None:
        await self.kill()
        await self.link.close()


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, count: int
) -> AsyncIterator[tuple[AsyncPodiumClient, list[Host]]]:
    settings = ServerSettings(
        store_url="memory://",
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        host_ttl=TTL,
        leader_ttl=2,
        heartbeat=0.2,
        shutdown_timeout=2,
    )
    ready: asyncio.Queue[str] = asyncio.Queue()
    server = asyncio.create_task(serve(settings, ready=ready.put_nowait, handle_signals=False))
    hosts: list[Host] = []
    try:
        async with asyncio.timeout(20):
            await ready.get()
        config = ClientConfig.load(str(tmp_path / "data" / "admin.conf"))
        async with AsyncPodiumClient(config) as client:
            join = (await client.create_token("join", ttl=600))["token"]
            hosts = [Host(f"host-{i}", config, join) for i in range(1, count + 1)]
            yield client, hosts
    finally:
        for host in hosts:
            await host.close()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def wait_for(client: AsyncPodiumClient, kind: str, check: Any, timeout: float = 30) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            items, _ = await client.list(kind)
            if check(items):
                return items
            await asyncio.sleep(0.1)


def db_running(off: str | None = None) -> Any:
    return lambda gs: (
        len(gs) == 1
        and all(
            g["status"]["state"] == "running" and g["status"]["host"] not in (None, off) for g in gs
        )
    )


async def steps(client: AsyncPodiumClient, host: str, guest: str) -> list[str]:
    """The failover steps in `podium events` order (the events of the host and guest)."""
    wanted = {"HostSuspect", "HostFenced", "HostLost", "GuestRebound", "GuestRunning"}
    items, _ = await client.events()
    return [e["reason"] for e in items if e["reason"] in wanted and e["name"] in (host, guest)]


async def test_partitioned_host_events_suspect_fenced_lost_rebound_running(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, 2) as (client, hosts):
        await wait_for(
            client, "hosts", lambda hs: [h["status"]["state"] for h in hs] == ["ready"] * 2
        )
        await client.apply([DB], source="db.yaml")
        (db,) = await wait_for(client, "guests", db_running())
        victim = next(h for h in hosts if h.name == db["status"]["host"])
        victim.link.cut = True
        await wait_for(
            client,
            "hosts",
            lambda hs: any(
                h["name"] == victim.name and h["status"]["state"] == "suspect" for h in hs
            ),
        )
        assert (await client.get("guests", "db-1"))["status"]["host"] == victim.name  # stays put
        (moved,) = await wait_for(client, "guests", db_running(off=victim.name))
        assert moved["status"]["epoch"] == db["status"]["epoch"] + 1
        assert victim.driver.running_uids() == []  # its own agent killed it
        victim.link.cut = False  # healed: the agent registers again and reports the fence
        async with asyncio.timeout(15):
            while "HostFenced" not in await steps(client, victim.name, "db-1"):
                await asyncio.sleep(0.1)
        await wait_for(client, "hosts", lambda hs: all(h["status"]["state"] == "ready" for h in hs))
        await asyncio.sleep(0.5)
        assert victim.driver.running_uids() == []  # the moved guest is not started again there
        seq = await steps(client, victim.name, "db-1")
    # the first GuestRunning is the original start; then the failover, step by step
    assert seq == [
        "GuestRunning",
        "HostSuspect",
        "HostFenced",
        "HostLost",
        "GuestRebound",
        "GuestRunning",
    ]


async def test_killed_host_events_suspect_lost_rebound_running(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as (client, hosts):
        await wait_for(
            client, "hosts", lambda hs: [h["status"]["state"] for h in hs] == ["ready"] * 2
        )
        await client.apply([DB], source="db.yaml")
        (db,) = await wait_for(client, "guests", db_running())
        victim = next(h for h in hosts if h.name == db["status"]["host"])
        await victim.kill()
        await wait_for(client, "guests", db_running(off=victim.name))
        async with asyncio.timeout(5):
            while (await steps(client, victim.name, "db-1")).count("GuestRunning") < 2:
                await asyncio.sleep(0.1)
        seq = await steps(client, victim.name, "db-1")
    assert seq == ["GuestRunning", "HostSuspect", "HostLost", "GuestRebound", "GuestRunning"]
