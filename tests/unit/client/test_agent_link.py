"""AgentLink implements podium.agent.ServerLink and maps failures to the agent's errors."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from fastapi import FastAPI

from podium.agent import AgentError, LeaseExpired, LinkError, Registration, ServerLink
from podium.client import AgentLink
from podium.model import Kind, Manifest
from podium.state import ClusterState
from tests.support.server import StreamingASGITransport
from tests.unit.client.conftest import CAPACITY


def fake_link(status: int, body: dict[str, str]) -> AgentLink:
    transport = httpx.MockTransport(lambda _: httpx.Response(status, json=body))
    return AgentLink("http://podium", "t", None, transport=transport)


async def test_it_is_a_server_link(link: AgentLink) -> None:
    assert isinstance(link, ServerLink)


async def test_register_switches_to_the_host_token_and_the_calls_work(
    link: AgentLink, state: ClusterState
) -> None:
    join_token = link.token
    registration = await link.register("h1", CAPACITY, {"rack": "r1"}, "sim", "0.1.0")
    assert isinstance(registration, Registration)
    assert registration.host_token is not None and link.token == registration.host_token
    assert link.token != join_token
    assert await link.keepalive("h1", registration.lease) == registration.ttl
    assert await link.assignments("h1") == ([], await state.store.revision())
    again = await link.register("h1", CAPACITY, {"rack": "r1"}, "sim", "0.1.0")
    assert again.host_token is None  # registered with its own agent token now
    report = await link.report("h1", [{"guest": "nope", "epoch": 1, "state": "running"}])
    assert report["accepted"] == [] and report["rejected"][0]["guest"] == "nope"


async def test_keepalive_of_a_gone_lease_raises_lease_expired(link: AgentLink) -> None:
    registration = await link.register("h1", CAPACITY, {}, "sim", "0.1.0")
    with pytest.raises(LeaseExpired, match="lease expired: register again"):
        await link.keepalive("h1", registration.lease + 1)


async def test_watch_assignments_streams_lines(link: AgentLink, state: ClusterState) -> None:
    await link.register("h1", CAPACITY, {}, "sim", "0.1.0")
    await state.apply([_guest("a")])
    _, revision = await link.assignments("h1")
    stream = link.watch_assignments("h1", revision + 1)
    await state.bind("a", "h1", expected_revision=0)
    line = await anext(stream)
    while line["type"] == "BOOKMARK":
        line = await anext(stream)
    assert line["type"] == "PUT" and line["assignment"]["guest"] == "a"
    assert line["assignment"]["epoch"] == 1 and line["revision"] > revision
    await stream.aclose()


def _guest(name: str) -> Manifest:
    return Manifest(Kind.GUEST, name, {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}})


async def test_refusals_are_not_retryable(app: FastAPI, state: ClusterState) -> None:
    link = AgentLink("http://podium", "pdm_join_bogus", None, transport=StreamingASGITransport(app))
    with pytest.raises(AgentError) as err:
        await link.register("h1", CAPACITY, {}, "sim", "0.1.0")
    assert not isinstance(err.value, LinkError | LeaseExpired) and not err.value.retryable
    assert "unknown token" in str(err.value)
    await link.close()
    await link.close()  # idempotent
    with pytest.raises(LinkError, match="closed"):
        await link.keepalive("h1", 1)


@pytest.mark.parametrize("status", [500, 503, 409])
async def test_server_errors_and_busy_names_are_retryable(status: int) -> None:
    link = fake_link(status, {"error": "try later"})
    with pytest.raises(LinkError, match="try later") as err:
        await link.register("h1", CAPACITY, {}, "sim", "0.1.0")
    assert err.value.retryable
    await link.close()


async def test_unreachable_server_is_a_link_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    link = AgentLink(f"http://127.0.0.1:{port}", "t", None)
    with pytest.raises(LinkError, match="cannot reach podium server"):
        await link.keepalive("h1", 1)
    with pytest.raises(LinkError, match="cannot reach podium server"):
        async for _ in link.watch_assignments("h1", 1):
            pass
    await link.close()


async def test_a_dropped_stream_ends_or_raises_link_error() -> None:
    body = json.dumps({"type": "BOOKMARK", "revision": 4}).encode() + b"\n"
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=body))
    link = AgentLink("http://podium", "t", None, transport=transport)
    lines = [line async for line in link.watch_assignments("h1", 5)]
    assert lines == [{"type": "BOOKMARK", "revision": 4}]
    await link.close()
