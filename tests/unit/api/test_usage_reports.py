"""Measured usage in status reports: validated at the edge, stored in the guest status
(where the rebalancer reads it), shown by the guest view, dropped with a state change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from podium.controller._rebalance import usage_of
from podium.state import ClusterState, keys, loads

from .conftest import MakeClient
from .helpers import assert_one_line_error, guest_doc
from .test_agent import join

USAGE = {"cpu": 1.5, "memory_mib": 512.0, "iops": 300.0, "net_mbps": 12.5}


async def raw_status(state: ClusterState, guest: str) -> dict[str, Any]:
    kv = await state.store.get(keys.guest_status_key(guest))
    assert kv is not None
    status: dict[str, Any] = loads(kv.value)
    return status


async def post(agent: httpx.AsyncClient, *reports: dict[str, Any]) -> httpx.Response:
    return await agent.post("/api/v1/agent/h1/status", json={"reports": list(reports)})


async def test_usage_is_stored_shown_and_kept_until_the_state_changes(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, _ = await join(make_client, state, "h1")
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a")]})
    await state.bind("a", "h1", expected_revision=0)
    running = {"guest": "a", "epoch": 1, "state": "running", "message": ""}
    assert (await post(agent, running)).json()["accepted"] == ["a"]
    since = (await raw_status(state, "a"))["since"]
    assert "usage" not in (await admin.get("/api/v1/guests/a")).json()["status"]

    assert (await post(agent, {**running, "usage": USAGE})).json()["accepted"] == ["a"]
    stored = await raw_status(state, "a")
    assert stored["usage"] == USAGE and stored["since"] == since  # still running since then
    assert usage_of(stored) == (1.5, 512.0, 300.0, 12.5)  # what the rebalancer reads
    view = (await admin.get("/api/v1/guests/a")).json()
    assert view["status"]["usage"] == USAGE

    partial = {**running, "usage": {"cpu": 0.25}}  # missing dimensions: 0
    await post(agent, partial)
    assert (await raw_status(state, "a"))["usage"] == {
        "cpu": 0.25,
        "memory_mib": 0.0,
        "iops": 0.0,
        "net_mbps": 0.0,
    }
    await post(agent, {**running, "message": "paused"})  # same state, no usage: kept
    assert (await raw_status(state, "a"))["usage"]["cpu"] == 0.25
    await post(agent, {**running, "state": "stopped"})  # another run: its usage is gone
    stopped = await raw_status(state, "a")
    assert "usage" not in stopped and stopped["state"] == "stopped"
    assert usage_of(stopped) is None


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"cpu": -1}, "reports.0.usage.cpu"),
        ({"gpu": 1}, "reports.0.usage.gpu"),
        ({"iops": "lots"}, "reports.0.usage.iops"),
        ([1, 2, 3, 4], "reports.0.usage"),
    ],
)
async def test_bad_usage_is_refused_naming_the_field(
    make_client: MakeClient,
    state: ClusterState,
    admin: httpx.AsyncClient,
    usage: Any,
    field: str,
) -> None:
    agent, _ = await join(make_client, state, "h1")
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a")]})
    await state.bind("a", "h1", expected_revision=0)
    report = {"guest": "a", "epoch": 1, "state": "running", "usage": usage}
    assert_one_line_error(await post(agent, report), 422, f"body field '{field}'")
    kv = await state.store.get(keys.guest_status_key("a"))
    assert kv is None  # nothing written
