"""AsyncPodiumClient against the app in-process, and against fake transports for failures."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.client import _client as client_module
from podium.state import ClusterState
from tests.support.server import StreamingASGITransport

GUEST = {"kind": "Guest", "name": "a", "spec": {"image": "tiny"}}


@pytest.fixture
async def client(app: FastAPI, config: ClientConfig) -> AsyncIterator[AsyncPodiumClient]:
    async with AsyncPodiumClient(config, transport=StreamingASGITransport(app)) as c:
        yield c


def fake(
    config: ClientConfig, handler: Callable[[httpx.Request], httpx.Response]
) -> AsyncPodiumClient:
    return AsyncPodiumClient(config, transport=httpx.MockTransport(handler))


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def test_round_trip_of_every_call(client: AsyncPodiumClient, state: ClusterState) -> None:
    applied = await client.apply([GUEST], source="a.yaml")
    assert applied["results"] == [{"kind": "Guest", "name": "a", "action": "created"}]
    items, revision = await client.list("Guest")
    assert [i["name"] for i in items] == ["a"] and revision >= applied["revision"]
    assert (await client.get("guests", "a"))["status"]["state"] == "pending"
    events, _ = await client.events(limit=5)
    assert events[-1]["reason"] == "Created"
    token = await client.create_token("app", ttl=60, app="web")
    assert token["role"] == "app" and token["token"].startswith("pdm_app_")
    assert token["id"] in {t["id"] for t in await client.tokens()}
    await client.revoke_token(token["id"])
    assert token["id"] not in {t["id"] for t in await client.tokens()}
    health = await client.health()
    assert health["ok"] is True and health["store"]["backend"] == "memory"
    assert (await client.delete("guest", "a"))["deleted"] is True
    with pytest.raises(ClientError) as missing:
        await client.get("guest", "a")
    assert (str(missing.value), missing.value.status) == ("Guest 'a' not found", 404)
    with pytest.raises(ClientError, match="Host 'h9' not found"):
        await client.cordon("h9", True)


async def test_a_rejected_token_names_the_config(app: FastAPI, config: ClientConfig) -> None:
    wrong = ClientConfig(config.server, None, "pdm_admin_wrong", path="/etc/admin.conf")
    async with AsyncPodiumClient(wrong, transport=StreamingASGITransport(app)) as client:
        with pytest.raises(ClientError) as err:
            await client.list("guests")
    assert err.value.status == 401 and not err.value.retryable
    assert str(err.value).startswith("the server rejected the token from /etc/admin.conf: ")


async def test_unreachable_server(config: ClientConfig) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = ClientConfig(f"http://127.0.0.1:{port}", None, config.token)
    async with AsyncPodiumClient(down) as client:
        with pytest.raises(ClientError) as err:
            await client.health()
    message = str(err.value)
    assert message.startswith(f"cannot reach podium server at http://127.0.0.1:{port} (")
    assert message.endswith("is it running? check --config")
    assert err.value.status is None and err.value.retryable


async def test_timeouts_and_non_json_answers(config: ClientConfig) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with fake(config, slow) as client:
        with pytest.raises(ClientError, match="did not answer in time"):
            await client.list("guests")

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    async with fake(config, proxy) as client:
        with pytest.raises(ClientError) as err:
            await client.list("guests")
    assert str(err.value) == "HTTP 502 Bad Gateway: <html>Bad Gateway</html>"
    assert err.value.retryable


async def test_watch_streams_changes_without_bookmarks(
    client: AsyncPodiumClient, state: ClusterState
) -> None:
    await client.apply([GUEST])
    stream = client.watch("guests")
    first = await anext(stream)
    assert (first["type"], first["object"]["name"]) == ("ADDED", "a")
    await client.delete("guests", "a")
    second = await anext(stream)
    assert (second["type"], second["object"]) == ("DELETED", {"kind": "Guest", "name": "a"})
    await stream.aclose()


async def test_watch_resumes_after_the_last_complete_revision(config: ClientConfig) -> None:
    froms: list[str] = []
    answers = [
        ndjson({"type": "ADDED", "object": {"name": "a"}, "revision": 5}),  # snapshot cut short
        ndjson(
            {"type": "ADDED", "object": {"name": "a"}, "revision": 5},
            {"type": "BOOKMARK", "revision": 5},
            {"type": "MODIFIED", "object": {"name": "a"}, "revision": 7},
            {"type": "MODIFIED", "object": {"name": "b"}, "revision": 8},
        ),  # dropped: 8 may be incomplete
        ndjson(
            {"type": "MODIFIED", "object": {"name": "b"}, "revision": 8},
            {"type": "ERROR", "error": "history compacted: list again"},
        ),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        froms.append(request.url.params["from"])
        return httpx.Response(200, content=answers[len(froms) - 1])

    seen: list[tuple[str, int]] = []
    async with fake(config, handler) as client:
        with pytest.raises(ClientError) as err:
            async for line in client.watch("guests", bookmarks=True):
                seen.append((line["type"], line["revision"]))
    assert froms == ["0", "0", "8"]
    assert seen == [
        ("ADDED", 5),
        ("ADDED", 5),
        ("BOOKMARK", 5),
        ("MODIFIED", 7),
        ("MODIFIED", 8),
        ("MODIFIED", 8),
    ]
    assert str(err.value) == "history compacted: list again" and err.value.status == 410


async def test_watch_gives_up_after_failing_for_a_while(
    config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "RECONNECT_FOR", 0.5)
    calls = 0

    def refused(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    async with fake(config, refused) as client:
        with pytest.raises(ClientError, match="cannot reach podium server"):
            async for _ in client.watch_events(from_revision=3):
                pass
    assert calls >= 2


async def test_watch_does_not_retry_a_refusal(config: ClientConfig) -> None:
    calls = 0

    def forbidden(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(403, json={"error": "reading guests needs an admin token"})

    async with fake(config, forbidden) as client:
        with pytest.raises(ClientError, match="needs an admin token"):
            async for _ in client.watch("guests"):
                pass
    assert calls == 1
