"""Migration and drain routes, and the agents' migration reports, over the in-process app."""

from __future__ import annotations

from typing import Any

import httpx

from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.state import ClusterState, Migrations, keys
from podium.store.memory import MemoryStore

from .conftest import MakeClient
from .helpers import assert_one_line_error

CAP = Resources(cpu=4, memory_mib=1024, iops=1000, net_mbps=1000)


async def host(state: ClusterState, name: str, capacity: Resources = CAP) -> None:
    lease = await state.store.grant(600)
    await state.register_host(
        HostName(name), HostSpec(capacity), lease=lease.id, driver="sim", agent_version="t"
    )


async def guest(
    state: ClusterState, name: str, on: str | None, *, cpu: float = 1, memory: int = 128
) -> None:
    spec = {"image": "tiny", "request": {"cpu": cpu, "memory_mib": memory}, "running": True}
    await state.apply([Manifest(Kind.GUEST, name, spec)])
    if on is not None:
        bound = await state.bind(name, on, expected_revision=0)
        assert bound is not None
        await state.report_guest_status(on, name, bound.epoch, GuestState.RUNNING)


async def owned(state: ClusterState, app: str, name: str, on: str) -> None:
    spec = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}, "running": True}
    assert await state.create_owned_guests(app, [(name, spec)]) == 1
    bound = await state.bind(name, on, expected_revision=0)
    assert bound is not None
    await state.report_guest_status(on, name, bound.epoch, GuestState.RUNNING)


async def reasons(state: ClusterState) -> list[str]:
    items, _ = await state.list_events()
    return [e["reason"] for e in items]


async def test_migrate_to_a_named_host_records_a_pending_migration(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    for name in ("h1", "h2"):
        await host(state, name)
    await guest(state, "g", "h1")
    response = await admin.post("/api/v1/guests/g/migrate", json={"to": "h2"})
    assert response.status_code == 202, response.text
    record = response.json()["migration"]
    assert (record["guest"], record["source"], record["target"]) == ("g", "h1", "h2")
    assert record["state"] == "pending" and record["reason"] == "operator"
    assert not record["auto"]
    assert "MigrationRequested" in await reasons(state)
    assert (await admin.get("/api/v1/migrations/g")).json() == record
    listed = (await admin.get("/api/v1/migrations")).json()
    assert listed["items"] == [record] and listed["revision"] > 0
    view = (await admin.get("/api/v1/guests/g")).json()
    assert view["status"]["migration"] == {"id": record["id"], "to": "h2", "state": "pending"}


async def test_migrate_without_a_target_lets_the_scheduler_pick(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    for name in ("h1", "h2", "h3"):
        await host(state, name)
    await guest(state, "g", "h1")
    await guest(state, "other", "h3", cpu=2)  # best fit: the fuller host
    response = await admin.post("/api/v1/guests/g/migrate", json={"to": None})
    assert response.status_code == 202, response.text
    record = response.json()["migration"]
    assert record["target"] == "h3" and record["auto"]
    again = await admin.post("/api/v1/guests/g/migrate", json={})
    assert_one_line_error(again, 409, "already migrating", record["id"])


async def test_bad_targets_are_422_with_the_reason(
    state: ClusterState, store: MemoryStore, admin: httpx.AsyncClient
) -> None:
    for name in ("h1", "h2", "cordoned", "gone", "draining"):
        await host(state, name)
    await host(state, "small", Resources(cpu=4, memory_mib=64, iops=1000, net_mbps=1000))
    await guest(state, "g", "h1")
    await state.set_cordoned("cordoned", True)
    await store.delete(keys.host_live_key("gone"))
    assert (await admin.post("/api/v1/hosts/draining/drain")).status_code == 200
    cases = {
        "nowhere": ("unknown host 'nowhere'",),
        "h1": ("already runs on h1",),
        "cordoned": ("cordoned",),
        "gone": ("not ready",),
        "draining": ("draining",),
        "small": ("does not fit", "memory_mib needs 128, 64 free"),
    }
    for target, fragments in cases.items():
        response = await admin.post("/api/v1/guests/g/migrate", json={"to": target})
        assert_one_line_error(response, 422, f"cannot migrate guest 'g' to {target}", *fragments)
    assert await Migrations(state).get("g") is None  # nothing written


async def test_no_host_fits_is_422_and_not_running_is_409(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await host(state, "h1")
    await guest(state, "g", "h1")
    alone = await admin.post("/api/v1/guests/g/migrate", json={"to": None})
    assert_one_line_error(alone, 422, "no host can take it", "no other host")
    await host(state, "h2", Resources(cpu=0.5, memory_mib=1024, iops=1, net_mbps=1))
    small = await admin.post("/api/v1/guests/g/migrate", json={"to": None})
    assert_one_line_error(small, 422, "no host can take it", "0/1 hosts fit", "lacked cpu")
    await guest(state, "idle", None)
    pending = await admin.post("/api/v1/guests/idle/migrate", json={"to": "h2"})
    assert_one_line_error(pending, 409, "is pending, not running")
    missing = await admin.post("/api/v1/guests/nope/migrate", json={"to": "h2"})
    assert_one_line_error(missing, 404, "not found")
    bad = await admin.post("/api/v1/guests/g/migrate", json={"to": "h2", "when": "now"})
    assert_one_line_error(bad, 422, "when")
    none = await admin.get("/api/v1/migrations/g")
    assert_one_line_error(none, 404, "no migration of guest 'g'", "/migrate")


async def test_app_tokens_migrate_and_see_only_their_guests(
    state: ClusterState, make_client: MakeClient
) -> None:
    for name in ("h1", "h2"):
        await host(state, name)
    await owned(state, "web", "web-1", "h1")
    await owned(state, "db", "db-1", "h1")
    web = make_client(await state.create_token("app", app="web"))
    assert (await web.post("/api/v1/guests/web-1/migrate", json={"to": "h2"})).status_code == 202
    other = await web.post("/api/v1/guests/db-1/migrate", json={"to": "h2"})
    assert_one_line_error(other, 403, "App 'web'")
    await Migrations(state).request("db-1", "h2")
    items = (await web.get("/api/v1/migrations")).json()["items"]
    assert [m["guest"] for m in items] == ["web-1"]
    assert_one_line_error(await web.get("/api/v1/migrations/db-1"), 403, "App 'web'")
    assert_one_line_error(await web.post("/api/v1/hosts/h1/drain"), 403, "admin token")
    agent = make_client(await state.create_token("agent", host="h1"))
    denied = await agent.post("/api/v1/guests/web-1/migrate", json={"to": "h2"})
    assert denied.status_code == 403


async def test_agents_report_a_whole_migration_and_see_it_in_their_assignments(
    state: ClusterState, make_client: MakeClient, admin: httpx.AsyncClient
) -> None:
    for name in ("h1", "h2"):
        await host(state, name)
    await guest(state, "g", "h1")
    record = (await admin.post("/api/v1/guests/g/migrate", json={"to": "h2"})).json()["migration"]
    mid = record["id"]
    assert (await Migrations(state).start("g", mid, "h2")).accepted
    source = make_client(await state.create_token("agent", host="h1"))
    target = make_client(await state.create_token("agent", host="h2"))

    incoming = (await target.get("/api/v1/agent/h2/assignments")).json()["items"]
    assert incoming[0]["incoming"] == {"id": mid, "source": "h1"} and incoming[0]["epoch"] == 2

    def step(role: str, state_: str, **extra: Any) -> dict[str, Any]:
        return {"guest": "g", "id": mid, "role": role, "state": state_, **extra}

    cross = await source.post("/api/v1/agent/h2/migrations", json=step("target", "ready"))
    assert_one_line_error(cross, 403, "only for host 'h1'")
    stale = await target.post(
        "/api/v1/agent/h2/migrations", json={**step("target", "ready"), "id": "mig-0"}
    )
    assert stale.status_code == 200 and not stale.json()["accepted"]
    assert "not current" in stale.json()["reason"]
    ready = await target.post(
        "/api/v1/agent/h2/migrations", json=step("target", "ready", uri="tcp:10.0.0.2:5000")
    )
    assert ready.json() == {"accepted": True, "reason": "transferring"}
    out = (await source.get("/api/v1/agent/h1/assignments")).json()["items"]
    assert out[0]["migrate"] == {"id": mid, "to": "h2", "uri": "tcp:10.0.0.2:5000"}
    progress = {"status": "active", "transferred": 1, "remaining": 2, "total": 3}
    sent = await source.post(
        "/api/v1/agent/h1/migrations", json=step("source", "progress", progress=progress)
    )
    assert sent.json()["accepted"]
    result = {"total_ms": 1000.0, "downtime_ms": 30.0, "transferred": 3}
    done = await source.post(
        "/api/v1/agent/h1/migrations", json=step("source", "completed", result=result)
    )
    assert done.json() == {"accepted": True, "reason": "completed"}
    final = (await admin.get("/api/v1/migrations/g")).json()
    assert final["state"] == "completed" and final["result"]["downtime_ms"] == 30.0
    view = (await admin.get("/api/v1/guests/g")).json()
    assert (view["status"]["host"], view["status"]["epoch"]) == ("h2", 2)
    assert (await source.get("/api/v1/agent/h1/assignments")).json()["items"] == []
    flipped = (await target.get("/api/v1/agent/h2/assignments")).json()["items"]
    assert "incoming" not in flipped[0] and flipped[0]["epoch"] == 2
    bad = await source.post("/api/v1/agent/h1/migrations", json=step("source", "finished"))
    assert_one_line_error(bad, 422, "state")


async def test_drain_cordons_reports_guests_and_uncordon_ends_it(
    state: ClusterState, admin: httpx.AsyncClient
) -> None:
    for name in ("h1", "h2"):
        await host(state, name)
    await guest(state, "a", "h1")
    await guest(state, "b", "h1")
    response = await admin.post("/api/v1/hosts/h1/drain")
    assert response.json() == {"name": "h1", "draining": True, "guests": 2}
    status = (await admin.get("/api/v1/hosts/h1")).json()["status"]
    assert status["draining"] and status["cordoned"] and status["guests"] == 2
    assert "HostDraining" in await reasons(state)
    assert (await admin.get("/api/v1/hosts/h2")).json()["status"]["draining"] is False
    await admin.post("/api/v1/hosts/h1/uncordon")
    status = (await admin.get("/api/v1/hosts/h1")).json()["status"]
    assert not status["draining"] and not status["cordoned"]
    assert_one_line_error(await admin.post("/api/v1/hosts/nope/drain"), 404, "not found")
