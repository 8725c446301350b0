"""Traffic reports: agents post bytes/s between guests; the server names MACs, merges the
hosts' reports (a pair seen by two hosts counts once), drops stale ones, and feeds the
controller's snapshot."""

from __future__ import annotations

from typing import Any

import httpx

from podium.controller._snapshot import read_snapshot
from podium.state import ClusterState, keys, loads

from .conftest import Clock, MakeClient
from .helpers import assert_one_line_error, guest_doc
from .test_agent import join

MAC = {"a": "52:54:00:00:00:0a", "b": "52:54:00:00:00:0b", "c": "52:54:00:00:00:0c"}
GATEWAY = "52:54:00:ff:ff:01"  # no guest holds it


async def guests(admin: httpx.AsyncClient, *names: str) -> None:
    docs = [guest_doc(n, nics=[{"mac": MAC[n]}]) for n in names]
    response = await admin.post("/api/v1/apply", json={"documents": docs})
    assert response.status_code == 200, response.text


def body(interval: float, *pairs: tuple[str, str, float]) -> dict[str, Any]:
    return {
        "interval_s": interval,
        "pairs": [{"a": a, "b": b, "bytes_per_s": r} for a, b, r in pairs],
    }


async def test_reports_are_named_merged_by_max_and_reach_the_snapshot(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient, clock: Clock
) -> None:
    await guests(admin, "a", "b", "c")
    h1, _ = await join(make_client, state, "h1")
    h2, _ = await join(make_client, state, "h2")
    # h1 runs a and c; b runs on h2: h1 sees b only as a MAC, h2 sees a only as a MAC.
    sent = await h1.post(
        "/api/v1/agent/h1/traffic",
        json=body(10, ("a", MAC["b"].upper(), 1000.0), ("a", "c", 10.0), ("c", GATEWAY, 5.0)),
    )
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"kept": 2}  # the gateway's MAC names no guest
    clock.now += 1
    assert (
        await h2.post("/api/v1/agent/h2/traffic", json=body(10, (MAC["a"], "b", 1500.0)))
    ).json() == {"kept": 1}

    stored = loads((await state.store.get(keys.traffic_key("h1"))).value)  # type: ignore[union-attr]
    assert stored["pairs"] == [
        {"a": "a", "b": "b", "bytes_per_s": 1000.0},
        {"a": "a", "b": "c", "bytes_per_s": 10.0},
    ]
    matrix = (await admin.get("/api/v1/traffic")).json()
    assert matrix["pairs"] == [
        {"a": "a", "b": "b", "bytes_per_s": 1500.0, "hosts": ["h1", "h2"], "at": clock.now},
        {"a": "a", "b": "c", "bytes_per_s": 10.0, "hosts": ["h1"], "at": clock.now - 1},
    ]
    assert [(h["host"], h["stale"]) for h in matrix["hosts"]] == [("h1", False), ("h2", False)]
    assert (await read_snapshot(state)).traffic == {("a", "b"): 1500.0, ("a", "c"): 10.0}

    # A new report replaces the host's last one (a pair gone quiet is gone).
    await h1.post("/api/v1/agent/h1/traffic", json=body(10, ("a", "c", 20.0)))
    assert (await read_snapshot(state)).traffic == {("a", "b"): 1500.0, ("a", "c"): 20.0}


async def test_reports_older_than_three_intervals_are_left_out(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient, clock: Clock
) -> None:
    await guests(admin, "a", "b")
    h1, _ = await join(make_client, state, "h1")
    await h1.post("/api/v1/agent/h1/traffic", json=body(10, ("a", "b", 100.0)))
    clock.now += 30  # exactly three intervals: still counted
    assert (await read_snapshot(state)).traffic == {("a", "b"): 100.0}
    clock.now += 0.5
    assert (await read_snapshot(state)).traffic == {}
    matrix = (await admin.get("/api/v1/traffic")).json()
    assert matrix["pairs"] == []
    assert matrix["hosts"] == [
        {"host": "h1", "at": clock.now - 30.5, "interval_s": 10.0, "stale": True}
    ]


async def test_only_a_hosts_agent_reports_for_it_and_only_admins_read(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await guests(admin, "a", "b")
    await join(make_client, state, "h1")
    h2, _ = await join(make_client, state, "h2")
    forged = await h2.post("/api/v1/agent/h1/traffic", json=body(10, ("a", "b", 1.0)))
    assert_one_line_error(forged, 403, "acts only for host 'h2'")
    app = make_client(await state.create_token("app", app="web"))
    assert_one_line_error(
        await app.post("/api/v1/agent/h1/traffic", json=body(1, ("a", "b", 1.0))), 403
    )
    assert await state.store.get(keys.traffic_key("h1")) is None
    assert_one_line_error(await h2.get("/api/v1/traffic"), 403, "needs an admin token")
    assert_one_line_error(await app.get("/api/v1/traffic"), 403, "needs an admin token")
    assert_one_line_error(await make_client(None).get("/api/v1/traffic"), 401)


async def test_bad_reports_get_a_clear_422(make_client: MakeClient, state: ClusterState) -> None:
    h1, _ = await join(make_client, state, "h1")
    url = "/api/v1/agent/h1/traffic"
    cases = [
        (body(0, ("a", "b", 1.0)), "'interval_s' Input should be greater than 0"),
        (
            body(10, ("a", "b", -1.0)),
            "'pairs.0.bytes_per_s' Input should be greater than or equal to 0",
        ),
        (body(10, ("A_B", "b", 1.0)), "'pairs.0.a' String should match pattern"),
        (body(10, ("a", "a", 1.0)), "a and b are both 'a': a pair needs two different ends"),
        ({**body(10), "extra": 1}, "'extra' Extra inputs are not permitted"),
        ({"pairs": []}, "'interval_s' is required"),
        (
            body(10, *[("a", f"g{i}", 1.0) for i in range(4097)]),
            "'pairs' List should have at most 4096",
        ),
    ]
    for payload, fragment in cases:
        assert_one_line_error(await h1.post(url, json=payload), 422, "invalid request", fragment)
    assert await state.store.get(keys.traffic_key("h1")) is None
