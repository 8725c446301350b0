"""Console capture: only the guest's host may push; admins and the guest's app may read."""

from __future__ import annotations

import httpx

from podium.model import GuestState
from podium.state import CONSOLE_LIMIT, ClusterState, keys

from .conftest import Clock, MakeClient
from .helpers import assert_one_line_error
from .test_agent import join
from .test_backups import running_guest


async def test_console_push_and_read(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient, clock: Clock
) -> None:
    h1, _ = await join(make_client, state, "h1")
    await running_guest(state, admin, "a", "h1")
    none_yet = await admin.get("/api/v1/guests/a/console")
    assert_one_line_error(none_yet, 404, "no console captured for guest 'a' yet")
    assert_one_line_error(await admin.get("/api/v1/guests/zz/console"), 404, "'zz' not found")

    pushed = await h1.put("/api/v1/agent/h1/console/a", json={"text": "booting\nready\n"})
    assert pushed.status_code == 200, pushed.text
    got = (await admin.get("/api/v1/guests/a/console")).json()
    assert got == {"guest": "a", "host": "h1", "text": "booting\nready\n", "updated": clock.now}

    long = "x" * 10 + "é" * CONSOLE_LIMIT  # 2 bytes each: keep the last 16 KiB, whole chars
    assert (await h1.put("/api/v1/agent/h1/console/a", json={"text": long})).json() == {
        "stored": CONSOLE_LIMIT
    }
    text = (await admin.get("/api/v1/guests/a/console")).json()["text"]
    assert text == "é" * (CONSOLE_LIMIT // 2)

    await admin.delete("/api/v1/guests/a")
    assert await state.store.get(keys.console_key("a")) is None  # gone with the guest


async def test_only_the_guests_host_may_push(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    h1, _ = await join(make_client, state, "h1")
    h2, _ = await join(make_client, state, "h2")
    await running_guest(state, admin, "a", "h1")
    other = await h2.put("/api/v1/agent/h2/console/a", json={"text": "forged"})
    assert_one_line_error(other, 409, "bound to h1, not h2")
    forged = await h2.put("/api/v1/agent/h1/console/a", json={"text": "forged"})
    assert_one_line_error(forged, 403, "acts only for host 'h2'")
    unknown = await h1.put("/api/v1/agent/h1/console/zz", json={"text": "?"})
    assert_one_line_error(unknown, 404, "'zz' not found")
    app = make_client(await state.create_token("app", app="web"))
    assert_one_line_error(await app.put("/api/v1/agent/h1/console/a", json={"text": "x"}), 403)
    assert await state.store.get(keys.console_key("a")) is None

    _, rev = await state.get_binding("a")
    await state.bind("a", "h2", expected_revision=rev)  # moved: h1 is stale now
    stale = await h1.put("/api/v1/agent/h1/console/a", json={"text": "late"})
    assert_one_line_error(stale, 409, "bound to h2")
    assert (await h2.put("/api/v1/agent/h2/console/a", json={"text": "ok"})).status_code == 200


async def test_console_readers(
    make_client: MakeClient, state: ClusterState, admin: httpx.AsyncClient
) -> None:
    h1, _ = await join(make_client, state, "h1")
    for app in ("web", "db"):
        name = f"{app}-1"
        spec = {"image": "tiny", "request": {"cpu": 1}}
        await state.create_owned_guests(app, [(name, spec)])
        bound = await state.bind(name, "h1", expected_revision=0)
        assert bound is not None
        await state.report_guest_status("h1", name, bound.epoch, GuestState.RUNNING)
        await h1.put(f"/api/v1/agent/h1/console/{name}", json={"text": app})
    web = make_client(await state.create_token("app", app="web"))
    assert (await web.get("/api/v1/guests/web-1/console")).json()["text"] == "web"
    assert_one_line_error(await web.get("/api/v1/guests/db-1/console"), 403, "App 'web'")
    assert_one_line_error(await h1.get("/api/v1/guests/web-1/console"), 403)
