"""The sim traffic model through a real server: agents report, the server merges, and the
controller's snapshot (what the scheduler and rebalancer read) holds the heavy talkers."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from podium.client import AsyncPodiumClient, ClientConfig
from podium.controller._snapshot import read_snapshot
from podium.drivers import SimTraffic
from podium.model import Resources
from podium.state import ClusterState
from podium.store import open_store
from tests.support.server import running_server, sqlite_url
from tests.support.sim_agents import sim_agents

CAPACITY = Resources(8, 8192, 1000, 1000)
RATE = 250_000.0  # bytes/s between each web and each db guest
INTERVAL = 0.5


def app(name: str, replicas: int) -> dict[str, Any]:
    spec = {"replicas": replicas, "image": "tiny", "request": {"cpu": 1, "memory_mib": 256}}
    return {"kind": "App", "name": name, "spec": spec}


def agents(
    config: ClientConfig, join: str, model: SimTraffic, count: int
) -> contextlib.AbstractAsyncContextManager[None]:
    return sim_agents(
        config, join, count, CAPACITY,
        driver={"traffic": model}, agent={"traffic_interval": INTERVAL},
    )  # fmt: skip


@pytest.mark.slow
async def test_sim_traffic_reaches_the_controllers_snapshot(tmp_path: Path) -> None:
    model = SimTraffic(apps={("web", "db"): RATE})
    data = tmp_path / "data"
    with running_server(data) as (_, config_path, _):
        config = ClientConfig.load(str(config_path))
        async with AsyncPodiumClient(config) as client:
            join = (await client.create_token("join", ttl=600))["token"]
            async with agents(config, join, model, 2):
                await client.apply([app("web", 2), app("db", 1), app("idle", 1)], source="t.yaml")
                async with asyncio.timeout(60):
                    while True:
                        guests, _ = await client.list("guests")
                        if len(guests) == 4 and all(
                            g["status"]["state"] == "running" for g in guests
                        ):
                            break
                        await asyncio.sleep(0.1)
                names = {g["spec"].get("app"): [] for g in guests}
                for g in guests:
                    names[g["spec"]["app"]].append(g["name"])
                (db,) = names["db"]
                expected = {tuple(sorted((w, db))) for w in names["web"]}
                async with asyncio.timeout(30):
                    while True:
                        matrix = await client.traffic()
                        seen = {(p["a"], p["b"]): p for p in matrix["pairs"]}
                        if set(seen) == expected:
                            break
                        await asyncio.sleep(0.2)
                for pair in expected:
                    # the model's rate, measured over a fraction of a second of wall time
                    assert seen[pair]["bytes_per_s"] == pytest.approx(RATE, rel=0.25)
                    hosts = {g["status"]["host"] for g in guests if g["name"] in pair}
                    assert set(seen[pair]["hosts"]) == hosts  # each host with an end saw it
                assert not any("idle" in p for p in seen)  # the silent guest talks to no one
                assert {h["host"] for h in matrix["hosts"]} == {"host-1", "host-2"}

                store = open_store(sqlite_url(data))
                try:
                    snapshot = await read_snapshot(ClusterState(store))
                finally:
                    await store.close()
    assert set(snapshot.traffic) == expected
    assert all(r == pytest.approx(RATE, rel=0.25) for r in snapshot.traffic.values())
