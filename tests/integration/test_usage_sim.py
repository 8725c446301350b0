"""The sim usage model through a real server: agents send measured usage with guest
status, the API shows it, and the rebalancer finds a host hot by use whose reservations
are nowhere near hot."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from podium.client import AsyncPodiumClient, ClientConfig
from podium.controller._rebalance import input_of
from podium.drivers import SimUsage
from podium.model import Kind, Resources
from podium.scheduler._rebalance import RebalancePolicy, plan_rebalance
from podium.state import ClusterState, Migrations, keys, loads
from podium.store import open_store
from tests.support.server import running_server, sqlite_url
from tests.support.sim_agents import sim_agents

CAPACITY = Resources(8, 8192, 1000, 1000)
HOG = 3.5  # the hog uses 3.5 x its 2 reserved cores: 7 of its host's 8 (> 85 %)
INTERVAL = 0.3


def app(name: str, replicas: int, cpu: float) -> dict[str, Any]:
    spec = {"replicas": replicas, "image": "tiny", "request": {"cpu": cpu, "memory_mib": 256}}
    return {"kind": "App", "name": name, "spec": spec}


def agents(
    config: ClientConfig, join: str, model: SimUsage, count: int
) -> contextlib.AbstractAsyncContextManager[None]:
    return sim_agents(
        config, join, count, CAPACITY,
        driver={"usage": model}, agent={"usage_interval": INTERVAL},
    )  # fmt: skip


async def rebalancer_input(state: ClusterState, *, with_usage: bool) -> Any:
    """What the controller's rebalancer reads (``Rebalancer.plan``), usage kept or not."""
    hosts, _ = await state.list_objects(Kind.HOST)
    guests, _ = await state.list_objects(Kind.GUEST)
    res = await state.store.range(keys.GUEST_STATUS)
    statuses = {kv.key[len(keys.GUEST_STATUS) :]: loads(kv.value) for kv in res.kvs}
    if not with_usage:
        statuses = {
            name: {k: v for k, v in s.items() if k != "usage"} for name, s in statuses.items()
        }
    records, _ = await Migrations(state).list_records()
    return input_of(hosts, guests, statuses, records, {}, now=state.now())


@pytest.mark.slow
async def test_sim_usage_reaches_the_rebalancer_and_makes_a_host_hot(tmp_path: Path) -> None:
    model = SimUsage(seed=5, base=0.3, swing=0.1, apps={"hog": HOG})
    data = tmp_path / "data"
    with running_server(data) as (_, config_path, _):
        config = ClientConfig.load(str(config_path))
        async with AsyncPodiumClient(config) as client:
            join = (await client.create_token("join", ttl=600))["token"]
            async with agents(config, join, model, 2):
                await client.apply([app("hog", 1, 2), app("web", 2, 1)], source="t.yaml")
                async with asyncio.timeout(60):
                    while True:  # all running, each showing the usage its host measured
                        guests, _ = await client.list("guests")
                        if len(guests) == 3 and all(
                            g["status"]["state"] == "running" and "usage" in g["status"]
                            for g in guests
                        ):
                            break
                        await asyncio.sleep(0.1)
                (hog,) = [g for g in guests if g["spec"]["app"] == "hog"]
                hot_host = hog["status"]["host"]
                view = await client.get("guests", hog["name"])  # podium get guest -o json
                assert view["status"]["usage"]["cpu"] == pytest.approx(2 * HOG)
                assert view["status"]["usage"]["memory_mib"] == pytest.approx(256 * HOG)
                for g in guests:
                    if g["spec"]["app"] == "web":  # drifting at 0.2..0.4 of a core
                        assert 0.2 - 1e-3 <= g["status"]["usage"]["cpu"] <= 0.4 + 1e-3
                plan = await client.rebalance_plan()  # podium rebalance --dry-run
                hosts, _ = await client.list("hosts")

                store = open_store(sqlite_url(data))
                try:
                    state = ClusterState(store)
                    measured = await rebalancer_input(state, with_usage=True)
                    reserved = await rebalancer_input(state, with_usage=False)
                finally:
                    await store.close()
    # reservations: at most 4 of 8 cores on a host, nowhere near the 85 % of "hot"
    assert all(h["status"]["allocated"]["cpu"] <= 4 for h in hosts)
    usage = {g.request.name: g.usage for g in measured.guests}
    assert usage[hog["name"]] is not None and usage[hog["name"]][0] == pytest.approx(7.0)
    assert all(g.usage is None for g in reserved.guests)
    policy = RebalancePolicy()
    assert plan_rebalance(reserved, policy).hot_before == 0  # by reservations: all is well
    by_use = plan_rebalance(measured, policy)
    assert by_use.hot_before == 1  # by use: the hog's host is hot
    assert plan["hot_before"] == 1, plan  # and so says the server's own dry run
    assert all(m["from"] == hot_host and m["reason"] == "hot" for m in plan["moves"]), plan
    sharing = {g["name"] for g in guests if g["status"]["host"] == hot_host} - {hog["name"]}
    # the hog alone is hot wherever it goes; guests beside it can leave (the scheduler
    # packs: all three start on one host)
    assert bool(plan["moves"]) == bool(sharing), plan
    assert {m["guest"] for m in plan["moves"]} <= sharing
