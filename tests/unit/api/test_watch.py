"""NDJSON watch streams: snapshot, ordered changes, resume, bookmarks, compaction, scope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from podium.api import context_of
from podium.api._views import read_view
from podium.model import HostName, HostSpec, Kind, Resources
from podium.state import ClusterState
from podium.store.memory import MemoryStore

from .conftest import MakeClient
from .helpers import app_doc, guest_doc


class Lines:
    """The JSON lines of one streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                text = await anext(self._lines)
                if text.strip():
                    line: dict[str, Any] = json.loads(text)
                    return line

    async def changes(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` lines that are not bookmarks."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            line = await self.next()
            if line["type"] != "BOOKMARK":
                out.append(line)
        return out

    async def rest(self) -> list[dict[str, Any]]:
        """Every remaining line, until the server ends the stream."""
        out = []
        async with asyncio.timeout(5):
            async for text in self._lines:
                if text.strip():
                    out.append(json.loads(text))
        return out


async def watch(client: httpx.AsyncClient, path: str, **params: Any) -> AsyncIterator[Lines]:
    async with client.stream("GET", path, params={"watch": 1, **params}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        yield Lines(response)


def summary(lines: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(line["type"], line["object"]["name"]) for line in lines]


async def apply(client: httpx.AsyncClient, *docs: dict[str, Any]) -> int:
    response = await client.post("/api/v1/apply", json={"documents": list(docs)})
    assert response.status_code == 200, response.text
    revision: int = response.json()["revision"]
    return revision


async def test_snapshot_then_added_modified_deleted_in_order(
    admin: httpx.AsyncClient, state: ClusterState
) -> None:
    await apply(admin, guest_doc("a"))
    async for lines in watch(admin, "/api/v1/guests"):
        added = await lines.next()
        assert (added["type"], added["object"]["name"]) == ("ADDED", "a")
        assert added["object"]["status"]["state"] == "pending"
        assert await lines.next() == {"type": "BOOKMARK", "revision": added["revision"]}

        await apply(admin, guest_doc("b"))
        await apply(admin, app_doc("web"))  # another kind: not in this stream
        await apply(admin, guest_doc("a", cpu=2))
        bound = await state.bind("b", "h1", expected_revision=0)
        assert bound is not None
        await admin.delete("/api/v1/guests/a")

        changes = await lines.changes(4)
        assert summary(changes) == [
            ("ADDED", "b"),
            ("MODIFIED", "a"),
            ("MODIFIED", "b"),
            ("DELETED", "a"),
        ]
        revisions = [c["revision"] for c in changes]
        assert revisions == sorted(set(revisions)) and revisions[0] > added["revision"]
        assert changes[1]["object"]["spec"]["request"]["cpu"] == 2
        assert changes[2]["object"]["status"]["host"] == "h1"
        assert changes[3]["object"] == {"kind": "Guest", "name": "a"}


async def test_resume_from_a_revision_gets_exactly_the_later_changes(
    admin: httpx.AsyncClient,
) -> None:
    await apply(admin, guest_doc("a"), guest_doc("b"))
    async for lines in watch(admin, "/api/v1/guests"):
        await lines.changes(2)
        mark = await lines.next()
        assert mark["type"] == "BOOKMARK"
    await apply(admin, guest_doc("c"))
    await admin.delete("/api/v1/guests/b")
    async for lines in watch(admin, "/api/v1/guests", **{"from": mark["revision"] + 1}):
        assert summary(await lines.changes(2)) == [("ADDED", "c"), ("DELETED", "b")]


async def test_idle_stream_sends_bookmarks(admin: httpx.AsyncClient, store: MemoryStore) -> None:
    await apply(admin, guest_doc("a"))  # and its event
    revision = await store.revision()
    async for lines in watch(admin, "/api/v1/guests", **{"from": revision + 1}):
        first = await lines.next(timeout=2)
        second = await lines.next(timeout=2)
        assert first == second == {"type": "BOOKMARK", "revision": revision}


async def test_compacted_history_ends_the_stream_with_an_error(
    admin: httpx.AsyncClient, store: MemoryStore
) -> None:
    revision = await apply(admin, guest_doc("a"))
    await apply(admin, guest_doc("b"))
    await store.compact(revision + 1)
    async for lines in watch(admin, "/api/v1/guests", **{"from": 1}):
        rest = await lines.rest()
        assert len(rest) == 1 and rest[0]["type"] == "ERROR"
        assert "compacted" in rest[0]["error"] and "list again" in rest[0]["error"]


async def test_close_streams_ends_open_watches(admin: httpx.AsyncClient, app: FastAPI) -> None:
    async for lines in watch(admin, "/api/v1/events"):
        assert (await lines.next())["type"] == "BOOKMARK"
        context_of(app).close_streams()
        assert await lines.rest() == []


async def test_event_stream(admin: httpx.AsyncClient) -> None:
    async for lines in watch(admin, "/api/v1/events"):
        start = await lines.next()
        assert start["type"] == "BOOKMARK"
        revision = await apply(admin, guest_doc("a"))
        event = await lines.next()
        while event["type"] == "BOOKMARK":  # a heartbeat may come first on a busy machine
            event = await lines.next()
        assert event["type"] == "EVENT" and event["revision"] > revision
        assert (event["event"]["reason"], event["event"]["name"]) == ("Created", "a")


async def test_app_token_watches_only_its_guests(
    admin: httpx.AsyncClient, make_client: MakeClient, state: ClusterState
) -> None:
    token = (await admin.post("/api/v1/tokens", json={"role": "app", "app": "web"})).json()
    app_client = make_client(token["token"])
    await state.create_owned_guests("web", [("web-1", guest_doc("web-1")["spec"])])
    async for lines in watch(app_client, "/api/v1/guests"):
        assert summary([await lines.next()]) == [("ADDED", "web-1")]
        await apply(admin, guest_doc("loose"))
        await state.create_owned_guests("db", [("db-1", guest_doc("db-1")["spec"])])
        await state.create_owned_guests("web", [("web-2", guest_doc("web-2")["spec"])])
        await state.delete_object(Kind.GUEST, "db-1", force_owned=True)
        await state.delete_object(Kind.GUEST, "web-1", force_owned=True)
        assert summary(await lines.changes(2)) == [("ADDED", "web-2"), ("DELETED", "web-1")]


async def test_point_reads_build_the_same_views_as_lists(
    admin: httpx.AsyncClient, state: ClusterState
) -> None:
    await apply(admin, guest_doc("a", cpu=2), guest_doc("b"), guest_doc("c"))
    spec = HostSpec(Resources(8, 8192, 1000, 1000), {"rack": "r1"})
    for host in ("h1", "h2"):
        await state.register_host(HostName(host), spec, lease=0, driver="sim", agent_version="t")
    await state.bind("a", "h1", expected_revision=0)
    await state.bind("b", "h1", expected_revision=0)
    _, rev = await state.get_binding("b")
    await state.bind("b", "h2", expected_revision=rev)
    for kind in (Kind.GUEST, Kind.HOST):
        items, _ = await state.list_objects(kind)
        for view in items:
            assert await read_view(state, kind, view["name"]) == view
