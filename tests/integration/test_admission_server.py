"""serve() wires admission and the rebalancer: a refused apply, a plan, over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.model import HostName, HostSpec, Resources
from podium.state import ClusterState
from podium.store import Store
from tests.integration.test_server_inprocess import serving, settings

CAP = Resources(cpu=4, memory_mib=8192, iops=1000, net_mbps=1000)


def web(replicas: int) -> dict[str, object]:
    spec = {"replicas": replicas, "image": "tiny", "request": {"cpu": 2, "memory_mib": 1024}}
    return {"kind": "App", "name": "web", "spec": spec}


@contextlib.asynccontextmanager
async def joined(tmp_path: Path, failures: int) -> AsyncIterator[AsyncPodiumClient]:
    """A server (``--failures-to-tolerate failures``) with two 4-cpu hosts, and a client."""
    states: asyncio.Queue[ClusterState] = asyncio.Queue()

    async def controllers(state: ClusterState, store: Store) -> None:
        states.put_nowait(state)  # the server's own state: hosts join through it below
        await asyncio.Event().wait()

    cfg = settings(tmp_path, insecure=True, failures_to_tolerate=failures)
    async with serving(cfg, run_controllers=controllers, is_leader=lambda: True):
        state = await asyncio.wait_for(states.get(), 5)
        for name in ("h1", "h2"):
            lease = await state.store.grant(600)
            await state.register_host(
                HostName(name), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
            )
        config = ClientConfig.load(str(tmp_path / "data" / "admin.conf"))
        async with AsyncPodiumClient(config) as client:
            yield client


async def test_failures_to_tolerate_refuses_an_app_and_rebalance_plans(tmp_path: Path) -> None:
    async with joined(tmp_path, 1) as client:
        with pytest.raises(ClientError) as refused:
            await client.apply([web(3)], source="web.yaml")  # 6 cpu > 8 - 4
        assert refused.value.status == 409
        assert "app web (3 x cpu 2, memory_mib 1024) would leave no room" in str(refused.value)
        result = await client.apply([web(2)], source="web.yaml")
        assert result["results"][0]["action"] == "created"
        plan = await client.rebalance_plan()
        assert plan["moves"] == [] and plan["policy"]["max_concurrent"] == 2
        assert plan["budget"] == 2 and plan["hot_before"] == 0


async def test_failures_to_tolerate_zero_admits_it(tmp_path: Path) -> None:
    async with joined(tmp_path, 0) as client:
        result = await client.apply([web(3)], source="web.yaml")
        assert result["results"][0]["action"] == "created"
