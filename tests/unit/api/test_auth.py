"""Every path authenticates; roles and scopes are enforced with one-line errors."""

from __future__ import annotations

import httpx
import pytest

from podium.model import Kind
from podium.state import ClusterState, keys
from podium.store.memory import MemoryStore

from .conftest import Clock, MakeClient
from .helpers import app_doc, assert_one_line_error, guest_doc

EVERY_KIND_OF_PATH = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/api/v1/guests"),
    ("GET", "/api/v1/guests?watch=1"),
    ("GET", "/api/v1/hosts/h1"),
    ("DELETE", "/api/v1/guests/g1"),
    ("POST", "/api/v1/apply"),
    ("GET", "/api/v1/events"),
    ("POST", "/api/v1/tokens"),
    ("POST", "/api/v1/agent/register"),
    ("POST", "/api/v1/agent/h1/keepalive"),
    ("GET", "/no/such/path"),
]


@pytest.mark.parametrize(("method", "path"), EVERY_KIND_OF_PATH)
async def test_every_path_needs_a_token(make_client: MakeClient, method: str, path: str) -> None:
    response = await make_client(None).request(method, path)
    assert_one_line_error(response, 401, "missing bearer token", "Authorization: Bearer")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unknown_token_is_rejected(make_client: MakeClient) -> None:
    response = await make_client("pdm_admin_not-a-real-token").get("/healthz")
    assert_one_line_error(response, 401, "unknown token", "admin.conf")


async def test_a_non_bearer_scheme_is_rejected(make_client: MakeClient, admin_token: str) -> None:
    client = make_client(None)
    response = await client.get("/healthz", headers={"authorization": f"Basic {admin_token}"})
    assert_one_line_error(response, 401, "missing bearer token")


async def test_expired_token_is_rejected_even_when_cached(
    make_client: MakeClient, state: ClusterState, clock: Clock
) -> None:
    token = await state.create_token("admin", ttl=60)
    client = make_client(token)
    assert (await client.get("/healthz")).status_code == 200  # now cached
    clock.now += 61
    response = await client.get("/healthz")
    assert_one_line_error(response, 401, "expired", "ask an admin for a new token")


async def test_token_lookups_are_cached_briefly(
    admin: httpx.AsyncClient, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    original = store.get

    async def counting_get(key: str) -> object:
        reads.append(key)
        return await original(key)

    monkeypatch.setattr(store, "get", counting_get)
    for _ in range(5):
        assert (await admin.get("/api/v1/guests")).status_code == 200
    assert len([k for k in reads if k.startswith(keys.TOKENS)]) == 1


async def test_docs_and_openapi_work_with_a_token(admin: httpx.AsyncClient) -> None:
    spec = (await admin.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "/api/v1/apply" in spec["paths"]
    assert "/api/v1/agent/register" in spec["paths"]
    docs = await admin.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_revoked_token_stops_at_once(
    admin: httpx.AsyncClient, make_client: MakeClient
) -> None:
    created = (await admin.post("/api/v1/tokens", json={"role": "admin"})).json()
    other = make_client(created["token"])
    assert (await other.get("/api/v1/guests")).status_code == 200
    listed = (await admin.get("/api/v1/tokens")).json()["items"]
    assert created["id"] in {t["id"] for t in listed}
    assert all("token" not in t for t in listed)
    assert (await admin.delete(f"/api/v1/tokens/{created['id']}")).json() == {"deleted": True}
    assert_one_line_error(await other.get("/api/v1/guests"), 401, "unknown token")
    missing = await admin.delete(f"/api/v1/tokens/{created['id']}")
    assert_one_line_error(missing, 404, "not found")


async def test_join_token_can_only_register(make_client: MakeClient, state: ClusterState) -> None:
    join = make_client(await state.create_token("join"))
    for method, path in [
        ("GET", "/api/v1/guests"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/events"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/agent/h1/assignments"),
    ]:
        response = await join.request(method, path, json={"role": "admin"})
        assert_one_line_error(response, 403, "join token can only register")
    body = {"name": "h1", "capacity": {"cpu": 4, "memory_mib": 4096}}
    assert (await join.post("/api/v1/agent/register", json=body)).status_code == 200


async def test_agent_token_acts_only_for_its_host(
    make_client: MakeClient, state: ClusterState
) -> None:
    agent = make_client(await state.create_token("agent", host="host-a"))
    for method, path, body in [
        ("POST", "/api/v1/agent/host-b/keepalive", {"lease": 1}),
        ("GET", "/api/v1/agent/host-b/assignments", None),
        ("POST", "/api/v1/agent/host-b/status", {"reports": []}),
        (
            "POST",
            "/api/v1/agent/register",
            {"name": "host-b", "capacity": {"cpu": 1, "memory_mib": 1}},
        ),
    ]:
        response = await agent.request(method, path, json=body)
        assert_one_line_error(response, 403, "acts only for host 'host-a', not 'host-b'")
    own = await agent.get("/api/v1/agent/host-a/assignments")
    assert own.status_code == 200 and own.json()["items"] == []
    assert_one_line_error(await agent.get("/api/v1/guests"), 403, "agent token")


async def test_app_token_sees_and_changes_only_its_app(
    admin: httpx.AsyncClient, make_client: MakeClient, state: ClusterState
) -> None:
    await admin.post("/api/v1/apply", json={"documents": [app_doc("web"), app_doc("db")]})
    await state.create_owned_guests("web", [("web-1", guest_doc("web-1")["spec"])])
    await state.create_owned_guests("db", [("db-1", guest_doc("db-1")["spec"])])
    await admin.post("/api/v1/apply", json={"documents": [guest_doc("loose")]})
    app = make_client(
        (await admin.post("/api/v1/tokens", json={"role": "app", "app": "web"})).json()["token"]
    )

    assert [g["name"] for g in (await app.get("/api/v1/guests")).json()["items"]] == ["web-1"]
    assert [a["name"] for a in (await app.get("/api/v1/apps")).json()["items"]] == ["web"]
    assert (await app.get("/api/v1/guests/web-1")).status_code == 200
    assert_one_line_error(await app.get("/api/v1/guests/db-1"), 403, "App 'web'")
    assert_one_line_error(await app.get("/api/v1/hosts"), 403, "App 'web'")
    assert_one_line_error(await app.delete("/api/v1/apps/web"), 403, "admin token")
    scaled = await app.post("/api/v1/apply", json={"documents": [app_doc("web", replicas=5)]})
    assert scaled.json()["results"] == [{"kind": "App", "name": "web", "action": "configured"}]
    other = await app.post("/api/v1/apply", json={"documents": [app_doc("db", replicas=9)]})
    assert_one_line_error(other, 403, "may only apply App 'web'", "App 'db'")
    record = await state.get_record(Kind.APP, "db")
    assert record is not None and record["spec"]["replicas"] == 2


async def test_app_tokens_need_an_app_and_only_app_tokens_take_one(
    admin: httpx.AsyncClient,
) -> None:
    no_app = await admin.post("/api/v1/tokens", json={"role": "app"})
    assert_one_line_error(no_app, 422, "needs 'app'")
    join_with_app = await admin.post("/api/v1/tokens", json={"role": "join", "app": "web"})
    assert_one_line_error(join_with_app, 422, "only for app tokens")
    bad_role = await admin.post("/api/v1/tokens", json={"role": "agent"})
    assert_one_line_error(bad_role, 422, "body field 'role'")
