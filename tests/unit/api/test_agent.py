"""Agent routes: register, keepalive (410), assignments (+watch), status with epochs."""

from __future__ import annotations

import json
from typing import Any

import httpx

from podium.model import Kind
from podium.state import ClusterState, keys
from podium.store.memory import MemoryStore

from .conftest import MakeClient
from .helpers import assert_one_line_error, guest_doc

CAPACITY = {"cpu": 8, "memory_mib": 8192, "iops": 1000, "net_mbps": 1000}


def registration(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "capacity": CAPACITY, "labels": {"rack": "r1"}, "driver": "sim",
            "agent_version": "0.1.0", **extra}  # fmt: skip


async def join(
    make_client: MakeClient, state: ClusterState, name: str
) -> tuple[httpx.AsyncClient, dict[str, Any]]:
    """Register ``name`` with a join token; return a client using its agent token."""
    joiner = make_client(await state.create_token("join"))
    response = await joiner.post("/api/v1/agent/register", json=registration(name))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return make_client(body["host_token"]), body


async def events(state: ClusterState) -> list[tuple[str, str]]:
    items, _ = await state.list_events()
    return [(e["reason"], e["name"]) for e in items]


async def test_join_token_registers_and_mints_a_host_token(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, body = await join(make_client, state, "h1")
    assert body["host_token"].startswith("pdm_agent_")
    assert body["ttl"] == 4 and body["keepalive_interval"] == 1.0 and body["lease"] > 0
    host = (await admin.get("/api/v1/hosts/h1")).json()
    assert host["status"]["state"] == "ready"
    assert host["status"]["capacity"]["cpu"] == 8 and host["status"]["labels"] == {"rack": "r1"}
    record = await state.lookup_token(body["host_token"])
    assert record is not None and (record["role"], record["host"]) == ("agent", "h1")

    again = (await agent.post("/api/v1/agent/register", json=registration("h1"))).json()
    assert again["host_token"] is None and again["lease"] != body["lease"]
    assert ("HostJoined", "h1") in await events(state)
    assert ("HostReregistered", "h1") in await events(state)


async def test_join_token_cannot_take_over_a_live_host(
    make_client: MakeClient, state: ClusterState, store: MemoryStore
) -> None:
    _, body = await join(make_client, state, "h1")
    joiner = make_client(await state.create_token("join"))
    taken = await joiner.post("/api/v1/agent/register", json=registration("h1"))
    assert_one_line_error(taken, 409, "registered and alive", "agent token")
    await store.revoke(body["lease"])  # the lease expires: the name is free again
    rejoined = await joiner.post("/api/v1/agent/register", json=registration("h1"))
    assert rejoined.status_code == 200
    old = make_client(body["host_token"])  # a re-join revokes the old agent token
    assert_one_line_error(await old.get("/api/v1/agent/h1/assignments"), 401, "unknown token")


async def test_keepalive_renews_and_answers_410_once_the_lease_is_gone(
    make_client: MakeClient, state: ClusterState, store: MemoryStore
) -> None:
    agent, body = await join(make_client, state, "h1")
    renewed = await agent.post("/api/v1/agent/h1/keepalive", json={"lease": body["lease"]})
    assert renewed.json() == {"ttl": 4}
    wrong = await agent.post("/api/v1/agent/h1/keepalive", json={"lease": body["lease"] + 99})
    assert assert_one_line_error(wrong, 410) == "lease expired: register again"
    await store.revoke(body["lease"])
    gone = await agent.post("/api/v1/agent/h1/keepalive", json={"lease": body["lease"]})
    assert assert_one_line_error(gone, 410) == "lease expired: register again"
    host = await state.get_object(Kind.HOST, "h1")
    assert host["status"]["state"] == "suspect"  # lease gone, not yet judged lost


async def test_assignments_list_and_watch(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, _ = await join(make_client, state, "h1")
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a"), guest_doc("b")]})
    await state.bind("a", "h1", expected_revision=0)
    listed = (await agent.get("/api/v1/agent/h1/assignments")).json()
    view = await state.get_object(Kind.GUEST, "a")
    uid, nics = view["metadata"]["uid"], view["status"]["nics"]
    assert listed["items"] == [
        {
            "guest": "a",
            "uid": uid,
            "epoch": 1,
            "spec": guest_doc("a")["spec"] | _defaults() | {"nics": nics},  # realised NICs
        }
    ]
    params = {"watch": 1, "from": listed["revision"] + 1}
    async with agent.stream("GET", "/api/v1/agent/h1/assignments", params=params) as response:
        lines = response.aiter_lines()
        await state.bind("b", "h1", expected_revision=0)
        _, rev = await state.get_binding("a")
        await state.bind("a", "h2", expected_revision=rev)  # moved away: DELETE for h1
        seen = []
        while len(seen) < 2:
            line = json.loads(await anext(lines))
            if line["type"] != "BOOKMARK":
                seen.append(line)
    assert seen[0]["type"] == "PUT" and seen[0]["assignment"]["guest"] == "b"
    assert seen[1]["type"] == "DELETE" and seen[1]["guest"] == "a"
    assert seen[0]["revision"] < seen[1]["revision"]


def _defaults() -> dict[str, Any]:
    return {
        "priority": 0,
        "running": True,
        "request": {"cpu": 1.0, "memory_mib": 128, "iops": 0, "net_mbps": 0},
        "disk_gib": 1.0,
        "workload": "idle",
    }


async def test_status_accepts_the_current_epoch_and_rejects_stale_ones(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, _ = await join(make_client, state, "h1")
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a")]})
    await state.bind("a", "h1", expected_revision=0)
    running = {"guest": "a", "epoch": 1, "state": "running", "message": ""}
    first = (await agent.post("/api/v1/agent/h1/status", json={"reports": [running]})).json()
    assert first == {"accepted": ["a"], "rejected": []}
    view = (await admin.get("/api/v1/guests/a")).json()
    assert (view["status"]["state"], view["status"]["host"]) == ("running", "h1")
    assert ("GuestRunning", "a") not in await events(state)  # the controllers say that

    _, rev = await state.get_binding("a")
    await state.bind("a", "h2", expected_revision=rev)  # epoch 2 on h2
    stale = (await agent.post("/api/v1/agent/h1/status", json={"reports": [running]})).json()
    assert stale["accepted"] == []
    assert stale["rejected"][0]["guest"] == "a"
    assert "epoch" in stale["rejected"][0]["reason"]
    unknown = {"guest": "zz", "epoch": 1, "state": "running"}
    rejected = (await agent.post("/api/v1/agent/h1/status", json={"reports": [unknown]})).json()
    assert [r["guest"] for r in rejected["rejected"]] == ["zz"]
    bad_state = {"guest": "a", "epoch": 2, "state": "dancing"}
    invalid = await agent.post("/api/v1/agent/h1/status", json={"reports": [bad_state]})
    assert_one_line_error(invalid, 422, "body field 'reports.0.state'")


async def test_failed_reports_become_warning_events(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, _ = await join(make_client, state, "h1")
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a")]})
    await state.bind("a", "h1", expected_revision=0)
    failed = {"guest": "a", "epoch": 1, "state": "failed", "message": "no image"}
    await agent.post("/api/v1/agent/h1/status", json={"reports": [failed]})
    await agent.post("/api/v1/agent/h1/status", json={"reports": [failed]})  # no change
    items, _ = await state.list_events()
    warning = [e for e in items if e["reason"] == "GuestFailed"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning"
    assert "no image" in warning[0]["message"]


async def test_register_validates_its_body(make_client: MakeClient, state: ClusterState) -> None:
    joiner = make_client(await state.create_token("join"))
    bad = await joiner.post("/api/v1/agent/register", json=registration("Bad/Name"))
    assert_one_line_error(bad, 422, "body field 'name'")
    no_cpu = registration("h1", capacity={"memory_mib": 1})
    assert_one_line_error(
        await joiner.post("/api/v1/agent/register", json=no_cpu),
        422,
        "body field 'capacity.cpu' is required",
    )
    assert await state.store.get(keys.object_key(Kind.HOST, "h1")) is None


async def test_keepalive_records_the_server_time_of_each_renewal(
    make_client: MakeClient, state: ClusterState, store: MemoryStore, clock: Any
) -> None:
    agent, body = await join(make_client, state, "h1")
    beat = await store.get(keys.host_beat_key("h1"))
    assert beat is not None and json.loads(beat.value)["at"] == clock.now
    assert beat.lease == body["lease"]  # it goes with the lease
    clock.now += 1.5
    await agent.post("/api/v1/agent/h1/keepalive", json={"lease": body["lease"]})
    beat = await store.get(keys.host_beat_key("h1"))
    assert beat is not None and json.loads(beat.value) == {"at": clock.now, "lease": body["lease"]}


async def test_register_after_a_fence_records_host_fenced_at_the_fence_time(
    make_client: MakeClient, state: ClusterState, clock: Any
) -> None:
    agent, _ = await join(make_client, state, "h1")
    clock.now += 2
    await state.emit("Host", "h1", "HostLost", "lost")  # the server's view, meanwhile
    clock.now += 10
    fenced = {"reason": "no lease renewal for too long", "seconds_ago": 11, "killed": 2}
    again = await agent.post("/api/v1/agent/register", json=registration("h1", fenced=fenced))
    assert again.status_code == 200, again.text
    items, _ = await state.list_events()
    fence = next(e for e in items if e["reason"] == "HostFenced")
    assert fence["type"] == "Warning" and fence["time"] == clock.now - 11
    assert "killing 2 guest(s): no lease renewal for too long" in fence["message"]
    # listed where it happened: after the join, before the lost host and the re-registration
    reasons = [e["reason"] for e in items]
    assert reasons == ["HostJoined", "HostFenced", "HostLost", "HostReregistered"]
    bad = {"reason": "x", "seconds_ago": -1}
    rejected = await agent.post("/api/v1/agent/register", json=registration("h1", fenced=bad))
    assert rejected.status_code == 422
