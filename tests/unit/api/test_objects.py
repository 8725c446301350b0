"""Object routes: apply (all or nothing), list, get, delete, cordon, events, errors."""

from __future__ import annotations

import httpx
import pytest

from podium.model import HostName, HostSpec, Resources
from podium.state import ClusterState

from .conftest import Clock
from .helpers import app_doc, assert_one_line_error, guest_doc


async def apply(client: httpx.AsyncClient, *docs: object, source: str = "f.yaml") -> httpx.Response:
    return await client.post("/api/v1/apply", json={"source": source, "documents": list(docs)})


async def test_apply_creates_configures_and_leaves_unchanged(admin: httpx.AsyncClient) -> None:
    first = await apply(admin, guest_doc("a"), guest_doc("b"))
    assert first.status_code == 200
    assert first.json()["results"] == [
        {"kind": "Guest", "name": "a", "action": "created"},
        {"kind": "Guest", "name": "b", "action": "created"},
    ]
    second = (await apply(admin, guest_doc("a", cpu=2), guest_doc("b"))).json()
    assert [r["action"] for r in second["results"]] == ["configured", "unchanged"]
    assert second["revision"] > first.json()["revision"]
    view = (await admin.get("/api/v1/guests/a")).json()
    assert view["spec"]["request"]["cpu"] == 2
    assert view["status"]["state"] == "pending" and view["status"]["uuid"]


async def test_apply_is_all_or_nothing_and_names_document_and_field(
    admin: httpx.AsyncClient,
) -> None:
    bad = {"kind": "Guest", "name": "c", "spec": {"image": "tiny", "request": {"cpu": -1}}}
    response = await apply(admin, guest_doc("a"), bad, source="web.yaml")
    assert_one_line_error(response, 422, "web.yaml: document 2", "field 'spec.request.cpu'")
    assert (await admin.get("/api/v1/guests")).json()["items"] == []


async def test_apply_rejects_typos_duplicates_and_empty_input(admin: httpx.AsyncClient) -> None:
    typo = {"kind": "Guest", "name": "a", "spec": {"imgae": "tiny"}}
    assert_one_line_error(
        await apply(admin, typo), 422, "document 1", "'spec.imgae'", "unknown field"
    )
    dup = await apply(admin, guest_doc("a"), guest_doc("a"))
    assert_one_line_error(dup, 422, "document 2", "already declared in document 1")
    assert_one_line_error(await apply(admin), 422, "no documents")
    host = {"kind": "Host", "name": "h", "spec": {}}
    assert_one_line_error(await apply(admin, host), 422, "podium agent")
    assert (await admin.get("/api/v1/guests")).json()["items"] == []


async def test_an_apply_too_big_for_one_transaction_is_refused_whole(
    admin: httpx.AsyncClient,
) -> None:
    docs = [guest_doc(f"g-{i}") for i in range(300)]
    response = await apply(admin, *docs, source="big.yaml")
    assert_one_line_error(response, 422, "big.yaml: 300 documents", "split them")
    assert (await admin.get("/api/v1/guests")).json()["items"] == []


async def test_apply_conflicts_with_an_owned_guest(
    admin: httpx.AsyncClient, state: ClusterState
) -> None:
    await state.create_owned_guests("web", [("web-1", guest_doc("web-1")["spec"])])
    response = await apply(admin, guest_doc("web-1"))
    assert_one_line_error(response, 409, "owned by App 'web'")


@pytest.mark.parametrize("kind", ["guests", "guest", "Guest"])
async def test_kind_aliases(admin: httpx.AsyncClient, kind: str) -> None:
    await apply(admin, guest_doc("a"))
    listed = (await admin.get(f"/api/v1/{kind}")).json()
    assert [g["name"] for g in listed["items"]] == ["a"]
    assert isinstance(listed["revision"], int)


async def test_unknown_kind_and_missing_object(admin: httpx.AsyncClient) -> None:
    message = assert_one_line_error(await admin.get("/api/v1/foo"), 404)
    assert message == (
        "unknown kind 'foo': expected one of hosts, apps, guests, pools, networks, profiles"
    )
    assert_one_line_error(await admin.get("/api/v1/foo/x"), 404, "unknown kind 'foo'")
    assert assert_one_line_error(await admin.get("/api/v1/guests/x"), 404) == "Guest 'x' not found"
    assert_one_line_error(await admin.delete("/api/v1/apps/x"), 404, "App 'x' not found")


async def test_delete_and_owned_guest_conflict(
    admin: httpx.AsyncClient, state: ClusterState
) -> None:
    await apply(admin, guest_doc("a"), app_doc("web"))
    deleted = (await admin.delete("/api/v1/guests/a")).json()
    assert deleted["deleted"] is True and isinstance(deleted["revision"], int)
    assert (await admin.get("/api/v1/guests/a")).status_code == 404
    await state.create_owned_guests("web", [("web-1", guest_doc("web-1")["spec"])])
    owned = await admin.delete("/api/v1/guests/web-1")
    assert_one_line_error(owned, 409, "owned by App 'web'", "scale or delete the App")


async def test_cordon_and_uncordon(admin: httpx.AsyncClient, state: ClusterState) -> None:
    spec = HostSpec(Resources(4, 4096, 100, 100), {"rack": "r1"})
    await state.register_host(HostName("h1"), spec, lease=0, driver="sim", agent_version="t")
    assert (await admin.post("/api/v1/hosts/h1/cordon")).json() == {"name": "h1", "cordoned": True}
    host = (await admin.get("/api/v1/hosts/h1")).json()
    assert host["status"]["cordoned"] is True
    assert (await admin.post("/api/v1/hosts/h1/uncordon")).json()["cordoned"] is False
    assert_one_line_error(await admin.post("/api/v1/hosts/nope/cordon"), 404, "Host 'nope'")


async def test_events_list_newest_with_limit(admin: httpx.AsyncClient, clock: Clock) -> None:
    await apply(admin, guest_doc("a"))
    clock.now += 1
    await apply(admin, guest_doc("b"))
    clock.now += 1
    await admin.delete("/api/v1/guests/a")
    everything = (await admin.get("/api/v1/events")).json()
    reasons = [(e["reason"], e["name"]) for e in everything["items"]]
    assert reasons == [("Created", "a"), ("Created", "b"), ("Deleted", "a")]
    last = (await admin.get("/api/v1/events", params={"limit": 1})).json()["items"]
    assert [(e["reason"], e["name"]) for e in last] == [("Deleted", "a")]


async def test_bad_requests_get_one_line_errors(admin: httpx.AsyncClient) -> None:
    not_json = await admin.post(
        "/api/v1/apply", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_one_line_error(not_json, 422, "not valid JSON")
    missing = await admin.post("/api/v1/apply", json={"source": "x"})
    assert_one_line_error(missing, 422, "body field 'documents' is required")
    bad_query = await admin.get("/api/v1/guests", params={"watch": 1, "from": "soon"})
    assert_one_line_error(bad_query, 422, "query parameter 'from'")
    assert_one_line_error(await admin.get("/api/v2/guests"), 404, "no such endpoint")
    assert_one_line_error(await admin.put("/api/v1/apply"), 405, "method not allowed")
