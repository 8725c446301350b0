"""Fixtures: the API app over a MemoryStore, and HTTP clients bound to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from podium.api import context_of, create_app
from podium.state import ClusterState
from podium.store.memory import MemoryStore
from tests.support.server import StreamingASGITransport

MakeClient = Callable[[str | None], httpx.AsyncClient]


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    yield s
    await s.close()


@pytest.fixture
def state(store: MemoryStore, clock: Clock) -> ClusterState:
    return ClusterState(store, clock=clock)


@pytest.fixture
def leader() -> dict[str, bool]:
    return {"leading": False}


@pytest.fixture
def app(state: ClusterState, clock: Clock, leader: dict[str, bool]) -> FastAPI:
    return create_app(
        state,
        host_ttl=4,
        heartbeat=0.3,
        clock=clock,
        is_leader=lambda: leader["leading"],
    )


@pytest.fixture
async def admin_token(state: ClusterState) -> str:
    return await state.create_token("admin")


@pytest.fixture
async def make_client(app: FastAPI) -> AsyncIterator[MakeClient]:
    """``make_client(token)``: an HTTP client for the app (token None: no header)."""
    clients: list[httpx.AsyncClient] = []

    def make(token: str | None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(
            transport=StreamingASGITransport(app), base_url="http://podium", headers=headers
        )
        clients.append(client)
        return client

    yield make
    context_of(app).close_streams()
    for client in clients:
        await client.aclose()


@pytest.fixture
def admin(make_client: MakeClient, admin_token: str) -> httpx.AsyncClient:
    return make_client(admin_token)
