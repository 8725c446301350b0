"""Backups over the API: request, the agent's reports (stale hosts rejected), restore, roles."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from podium.model import GuestState, Kind
from podium.state import ClusterState, dumps, keys, loads

from .conftest import Clock, MakeClient
from .helpers import assert_one_line_error, guest_doc
from .test_agent import join


async def running_guest(
    state: ClusterState, admin: httpx.AsyncClient, name: str, host: str, **spec: Any
) -> int:
    """Apply ``name``, bind it to ``host`` and report it running; return the epoch."""
    response = await admin.post("/api/v1/apply", json={"documents": [guest_doc(name, **spec)]})
    assert response.status_code == 200, response.text
    _, rev = await state.get_binding(name)
    bound = await state.bind(name, host, expected_revision=rev)
    assert bound is not None
    await state.report_guest_status(host, name, bound.epoch, GuestState.RUNNING)
    return bound.epoch


async def assignment(state: ClusterState, host: str, guest: str) -> dict[str, Any]:
    kv = await state.store.get(keys.assign_key(host, guest))
    assert kv is not None
    value: dict[str, Any] = loads(kv.value)
    return value


async def reasons(state: ClusterState) -> list[str]:
    items, _ = await state.list_events()
    return [e["reason"] for e in items]


async def test_backup_lifecycle_full_then_incremental(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient, clock: Clock
) -> None:
    agent, _ = await join(make_client, state, "h1")
    epoch = await running_guest(state, admin, "db-1", "h1")

    created = await admin.post("/api/v1/backups", json={"guest": "db-1"})
    assert created.status_code == 202, created.text
    first = created.json()["backup"]
    assert first["id"].startswith("db-1-19700112T134640Z-")  # the test clock's UTC time
    assert (first["state"], first["mode"], first["requested_mode"]) == ("pending", "full", "auto")
    assert (first["host"], first["epoch"], first["parent"]) == ("h1", epoch, None)
    assert first["spec"]["image"] == "tiny"
    asked = await assignment(state, "h1", "db-1")
    assert asked["backup"] == {
        "id": first["id"],
        "mode": "full",
        "target": "local",
        "parent_path": None,
        "parent_volumes": {},
    }
    listed = (await agent.get("/api/v1/agent/h1/assignments")).json()["items"]
    assert listed[0]["backup"]["id"] == first["id"]  # agents see the request

    busy = await admin.post("/api/v1/backups", json={"guest": "db-1"})
    assert_one_line_error(busy, 409, f"backup {first['id']}", "still pending")

    report = {"guest": "db-1", "id": first["id"]}
    running = await agent.post(
        "/api/v1/agent/h1/backups",
        json={**report, "state": "running", "progress": {"done": 1, "total": 4}},
    )
    assert running.json() == {"accepted": True, "reason": ""}
    clock.now += 5
    done = await agent.post(
        "/api/v1/agent/h1/backups",
        json={**report, "state": "completed", "path": "/san/backups/db-1/a.qcow2",
              "mode": "full", "bytes": 1234, "duration_ms": 50.0},
    )  # fmt: skip
    assert done.json() == {"accepted": True, "reason": ""}
    record = (await admin.get(f"/api/v1/backups/{first['id']}")).json()
    assert record["state"] == "completed" and record["bytes"] == 1234
    assert record["path"] == "/san/backups/db-1/a.qcow2" and record["finished"] == clock.now
    assert record["progress"] == {"done": 1, "total": 4}
    assert "backup" not in await assignment(state, "h1", "db-1")  # the request is gone
    again = await agent.post("/api/v1/agent/h1/backups", json={**report, "state": "failed"})
    assert again.json()["accepted"] is False and "already completed" in again.json()["reason"]

    second = (await admin.post("/api/v1/backups", json={"guest": "db-1"})).json()["backup"]
    assert (second["mode"], second["parent"]) == ("incremental", first["id"])
    assert (await assignment(state, "h1", "db-1"))["backup"]["parent_path"] == record["path"]
    failed = await agent.post(
        "/api/v1/agent/h1/backups",
        json={"guest": "db-1", "id": second["id"], "state": "failed", "message": "disk full"},
    )
    assert failed.json()["accepted"] is True

    items = (await admin.get("/api/v1/backups", params={"guest": "db-1"})).json()["items"]
    assert [(b["id"], b["state"]) for b in items] == [
        (first["id"], "completed"),
        (second["id"], "failed"),
    ]
    assert (await admin.get("/api/v1/backups", params={"guest": "other"})).json()["items"] == []
    full = (await admin.post("/api/v1/backups", json={"guest": "db-1", "mode": "full"})).json()
    assert (full["backup"]["mode"], full["backup"]["parent"]) == ("full", None)
    assert sorted(reasons_in(await reasons(state))) == [  # (one clock tick: any order)
        "BackupCompleted",
        "BackupCreated",
        "BackupCreated",
        "BackupCreated",
        "BackupFailed",
    ]


def reasons_in(all_reasons: list[str]) -> list[str]:
    return [r for r in all_reasons if r.startswith("Backup")]


async def test_backup_to_the_replica_target_has_its_own_chain(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await join(make_client, state, "h1")
    await running_guest(state, admin, "b", "h1")
    created = await admin.post("/api/v1/backups", json={"guest": "b", "target": "replica"})
    assert created.status_code == 202, created.text
    record = created.json()["backup"]
    assert (record["target"], record["mode"], record["volumes"]) == ("replica", "full", {})
    assert (await assignment(state, "h1", "b"))["backup"]["target"] == "replica"
    bad = await admin.post("/api/v1/backups", json={"guest": "b", "target": "tape"})
    assert_one_line_error(bad, 422, "target")


async def test_backup_needs_a_running_guest_and_no_migration(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await join(make_client, state, "h1")
    missing = await admin.post("/api/v1/backups", json={"guest": "nope"})
    assert_one_line_error(missing, 404, "Guest 'nope' not found")
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("a")]})
    pending = await admin.post("/api/v1/backups", json={"guest": "a"})
    assert_one_line_error(pending, 409, "guest 'a' is not running (state pending)")
    await running_guest(state, admin, "b", "h1")
    incremental = await admin.post("/api/v1/backups", json={"guest": "b", "mode": "incremental"})
    assert_one_line_error(incremental, 409, "no completed backup", "full")
    bad = await admin.post("/api/v1/backups", json={"guest": "b", "mode": "sideways"})
    assert_one_line_error(bad, 422, "mode")

    kv = await state.store.get(keys.binding_key("b"))
    assert kv is not None
    binding = loads(kv.value) | {"migration": {"id": "m1", "to": "h2", "epoch": 2}}
    await state.store.put(keys.binding_key("b"), dumps(binding))  # CP-B's migration in flight
    migrating = await admin.post("/api/v1/backups", json={"guest": "b"})
    assert_one_line_error(migrating, 409, "being migrated")


async def test_reports_from_a_stale_host_or_epoch_are_not_accepted(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    h1, _ = await join(make_client, state, "h1")
    h2, _ = await join(make_client, state, "h2")
    await running_guest(state, admin, "a", "h1")
    backup = (await admin.post("/api/v1/backups", json={"guest": "a"})).json()["backup"]
    report = {"guest": "a", "id": backup["id"], "state": "completed", "path": "/b/x.qcow2"}

    other = await h2.post("/api/v1/agent/h2/backups", json=report)
    assert other.json()["accepted"] is False and "stale" in other.json()["reason"]
    forged = await h2.post("/api/v1/agent/h1/backups", json=report)
    assert_one_line_error(forged, 403, "acts only for host 'h2'")
    no_path = await h1.post("/api/v1/agent/h1/backups", json={**report, "path": None})
    assert_one_line_error(no_path, 422, "path")

    _, rev = await state.get_binding("a")
    await state.bind("a", "h2", expected_revision=rev)  # failover: epoch 2 on h2
    late = await h1.post("/api/v1/agent/h1/backups", json=report)
    assert late.json()["accepted"] is False
    assert "now bound to h2 at epoch 2" in late.json()["reason"]
    record = (await admin.get(f"/api/v1/backups/{backup['id']}")).json()
    assert record["state"] == "pending"  # the sweeper fails it (controller tests)
    unknown = await h1.post("/api/v1/agent/h1/backups", json={**report, "id": "a-x-0000"})
    assert unknown.json()["accepted"] is False


async def test_restore_creates_a_fresh_guest_from_a_completed_backup(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    agent, _ = await join(make_client, state, "h1")
    nics = [{"mac": "52:54:00:00:00:07"}, {}]
    await running_guest(state, admin, "db-1", "h1", nics=nics, disk_gib=4)
    backup = (await admin.post("/api/v1/backups", json={"guest": "db-1"})).json()["backup"]
    early = await admin.post(f"/api/v1/backups/{backup['id']}/restore", json={"as": "copy"})
    assert_one_line_error(early, 409, "is pending", "only a completed backup")
    path = "/san/backups/db-1/x.qcow2"
    await agent.post(
        "/api/v1/agent/h1/backups",
        json={"guest": "db-1", "id": backup["id"], "state": "completed", "path": path},
    )
    taken = await admin.post(f"/api/v1/backups/{backup['id']}/restore", json={})
    assert_one_line_error(taken, 409, "guest 'db-1' exists: delete it or restore --as NEW_NAME")
    bad = await admin.post(f"/api/v1/backups/{backup['id']}/restore", json={"as": "Bad_Name"})
    assert_one_line_error(bad, 422, "Bad_Name")

    restored = await admin.post(f"/api/v1/backups/{backup['id']}/restore", json={"as": "copy"})
    assert restored.status_code == 201, restored.text
    view = restored.json()["guest"]
    assert view["name"] == "copy" and view["spec"]["disk_gib"] == 4
    assert view["spec"]["nics"] == [{}, {}]  # fixed MACs dropped: a fresh identity
    assert view["spec"]["restore_from"] == {"backup": backup["id"], "path": path, "volumes": {}}
    macs = {n["mac"] for n in view["status"]["nics"]}
    assert len(macs) == 2 and "52:54:00:00:00:07" not in macs

    await admin.delete("/api/v1/guests/db-1")
    assert (await admin.get(f"/api/v1/backups/{backup['id']}")).status_code == 200  # kept
    same = await admin.post(f"/api/v1/backups/{backup['id']}/restore")
    assert same.status_code == 201, same.text
    assert same.json()["guest"]["name"] == "db-1"
    gone = await admin.post("/api/v1/backups/db-1-nope-0000/restore")
    assert_one_line_error(gone, 404, "backup 'db-1-nope-0000' not found")


@pytest.mark.parametrize("role", ["join", "agent"])
async def test_only_admins_and_app_tokens_reach_backups(
    make_client: MakeClient, state: ClusterState, role: str
) -> None:
    token = await state.create_token(role, host="h1" if role == "agent" else None)
    client = make_client(token)
    for method, path in (
        ("POST", "/api/v1/backups"),
        ("GET", "/api/v1/backups"),
        ("GET", "/api/v1/backups/x-1-2"),
    ):
        body = {"guest": "a"} if method == "POST" else None
        response = await client.request(method, path, json=body)
        assert_one_line_error(response, 403)


async def test_app_tokens_act_only_on_their_apps_guests(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    await join(make_client, state, "h1")
    for app in ("web", "db"):
        await state.create_owned_guests(app, [(f"{app}-1", guest_doc(f"{app}-1")["spec"])])
        _, rev = await state.get_binding(f"{app}-1")
        bound = await state.bind(f"{app}-1", "h1", expected_revision=rev)
        assert bound is not None
        await state.report_guest_status("h1", f"{app}-1", bound.epoch, GuestState.RUNNING)
    web = make_client(await state.create_token("app", app="web"))
    mine = await web.post("/api/v1/backups", json={"guest": "web-1"})
    assert mine.status_code == 202, mine.text
    theirs = await web.post("/api/v1/backups", json={"guest": "db-1"})
    assert_one_line_error(theirs, 403, "App 'web'")
    db_backup = (await admin.post("/api/v1/backups", json={"guest": "db-1"})).json()["backup"]
    listed = (await web.get("/api/v1/backups")).json()["items"]
    assert [b["guest"] for b in listed] == ["web-1"]
    assert_one_line_error(await web.get(f"/api/v1/backups/{db_backup['id']}"), 403)
    restore = await web.post(f"/api/v1/backups/{mine.json()['backup']['id']}/restore")
    assert_one_line_error(restore, 403, "admin")
    assert await state.get_record(Kind.GUEST, "web-1") is not None
