"""Several servers on one real 3-member etcd: one leader runs the controllers, all serve.

Kill -9 the leader: another takes over within the leadership TTL and keeps placing
guests. Kill one etcd member: the cluster keeps working on the remaining quorum.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.client import AsyncPodiumClient
from tests.integration.conftest import require_etcd
from tests.support import server as support
from tests.support.etcd import EtcdCluster, start_etcd
from tests.support.shared_servers import config_for, start_servers

pytestmark = pytest.mark.etcd
LEADER_TTL = 3


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    require_etcd()
    with start_etcd(members=3) as cluster:
        yield cluster


async def leaders(servers: list[support.ServerProcess]) -> list[str]:
    found = []
    for server in servers:
        if server.proc.poll() is not None:
            continue
        async with AsyncPodiumClient(config_for(server)) as client:
            if (await client.health())["leader"]:
                found.append(server.url)
    return found


async def wait_one_leader(servers: list[support.ServerProcess], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await leaders(servers)
        if len(found) == 1:
            return found[0]
        assert len(found) <= 1, f"two leaders at once: {found}"
        await asyncio.sleep(0.2)
    raise AssertionError(f"no single leader within {timeout} s")


async def wait_running(client: AsyncPodiumClient, names: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items, _ = await client.list("Guest")
        running = {g["name"] for g in items if g["status"]["state"] == "running"}
        if names <= running:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not running within {timeout} s: {names - running}")


def app(name: str, replicas: int) -> dict[str, object]:
    return {"kind": "App", "name": name, "spec": {"replicas": replicas, "image": "tiny",
            "request": {"cpu": 1, "memory_mib": 128}}}  # fmt: skip


async def test_three_servers_one_leader_survive_leader_and_member_loss(
    etcd3: EtcdCluster, tmp_path: Path
) -> None:
    args = ("--leader-ttl", str(LEADER_TTL), "--host-ttl", "3")
    servers = start_servers(tmp_path, 3, store_url=etcd3.url, args=args)  # one CA, one token
    agent_task: asyncio.Task[None] | None = None
    try:
        leader = await wait_one_leader(servers, timeout=LEADER_TTL * 3)

        # a sim host joins through a follower; apps are applied through another server
        from podium.agent import Agent  # noqa: PLC0415
        from podium.client import AgentLink  # noqa: PLC0415
        from podium.drivers import SimDriver  # noqa: PLC0415
        from podium.model import Resources  # noqa: PLC0415

        follower = next(s for s in servers if s.url != leader)
        cfg = config_for(follower)
        async with AsyncPodiumClient(cfg) as admin:
            join = (await admin.create_token("join", ttl=300))["token"]
        cap = Resources(16, 65536, 20000, 10000)
        link = AgentLink(follower.url, join, cfg.ca_pem)
        agent = Agent("h1", link, SimDriver(name="h1", capacity=cap), capacity=cap)
        agent_task = asyncio.create_task(agent.run())

        other = next(s for s in servers if s.url not in (leader, follower.url))
        async with AsyncPodiumClient(config_for(other)) as client:
            await client.apply([app("before", 3)], source="test")
            await wait_running(client, {"before-1", "before-2", "before-3"})

        # kill -9 the leading server: a survivor leads within the TTL (plus a poll)
        dead = next(s for s in servers if s.url == leader)
        killed = time.monotonic()
        support.stop_server(dead, signal.SIGKILL)
        survivors = [s for s in servers if s is not dead]
        new_leader = await wait_one_leader(survivors, timeout=LEADER_TTL * 3)
        handover = time.monotonic() - killed
        assert new_leader != leader
        assert handover <= LEADER_TTL * 2 + 1, f"handover took {handover:.1f} s"

        # lose one etcd member: quorum (2 of 3) keeps the cluster writable
        etcd3.kill(0)
        async with AsyncPodiumClient(config_for(survivors[0])) as client:
            await client.apply([app("after", 2)], source="test")
            await wait_running(client, {"after-1", "after-2", "before-1"}, timeout=45)
            items, _ = await client.list("Guest")
            assert sorted(g["name"] for g in items) == [
                "after-1", "after-2", "before-1", "before-2", "before-3",
            ]  # fmt: skip
        assert len(await leaders(survivors)) == 1
        agent_task.cancel()
        await asyncio.gather(agent_task, return_exceptions=True)
        await link.close()
    finally:
        if agent_task and not agent_task.done():
            agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)
        for s in servers:
            support.stop_server(s, signal.SIGKILL)
