"""GET /api/v1/rebalance/plan and POST /api/v1/rebalance over the in-process app."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from podium.api import create_app
from podium.controller._rebalance import Rebalancer
from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.scheduler._rebalance import RebalancePolicy
from podium.state import ClusterState, Migrations

from .conftest import Clock, MakeClient

CAP = Resources(cpu=4, memory_mib=8192, iops=1000, net_mbps=1000)


@pytest.fixture
def app(state: ClusterState, clock: Clock) -> FastAPI:
    policy = RebalancePolicy(max_concurrent=1, consolidate=False)
    return create_app(state, host_ttl=4, clock=clock, rebalancer=Rebalancer(policy))


async def hot(state: ClusterState) -> None:
    """h1 reserved (and, without measured usage, used) to the brim; h2 empty."""
    for name in ("h1", "h2"):
        lease = await state.store.grant(600)
        await state.register_host(
            HostName(name), HostSpec(CAP), lease=lease.id, driver="sim", agent_version="t"
        )
    for name in ("a", "b"):
        spec = {"image": "tiny", "request": {"cpu": 2, "memory_mib": 512}}
        await state.apply([Manifest(Kind.GUEST, name, spec)])
        bound = await state.bind(name, "h1", expected_revision=0)
        assert bound is not None
        await state.report_guest_status("h1", name, bound.epoch, GuestState.RUNNING)


async def test_the_plan_says_what_and_why_and_a_pass_requests_it(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await hot(state)
    response = await admin.get("/api/v1/rebalance/plan")
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["hot_before"] == 1 and plan["hot_after"] == 0 and plan["budget"] == 1
    (move,) = plan["moves"]
    assert (move["from"], move["to"], move["reason"]) == ("h1", "h2", "hot")
    assert move["benefit"] > 0 and move["cost"] > 0
    assert await Migrations(state).list_records() == ([], await state.store.revision())

    applied = (await admin.post("/api/v1/rebalance")).json()
    (record,) = (await Migrations(state).list_records())[0]
    assert applied["requested"] == [record["id"]]
    assert (record["guest"], record["target"], record["reason"]) == (
        move["guest"],
        "h2",
        "rebalance",
    )
    again = (await admin.post("/api/v1/rebalance")).json()  # the budget is spent
    assert again["requested"] == [] and again["budget"] == 0


async def test_rebalancing_needs_an_admin(state: ClusterState, make_client: MakeClient) -> None:
    token = await state.create_token("app", app="web")
    response = await make_client(token).get("/api/v1/rebalance/plan")
    assert response.status_code == 403
    assert "needs an admin token" in response.json()["error"]
