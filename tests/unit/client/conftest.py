"""Fixtures: an API app over a MemoryStore that clients reach in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from podium.api import context_of, create_app
from podium.client import AgentLink, ClientConfig
from podium.state import ClusterState
from podium.store.memory import MemoryStore
from tests.support.server import StreamingASGITransport

# what the agents of these tests offer
CAPACITY = {"cpu": 4, "memory_mib": 4096, "iops": 100, "net_mbps": 100}


@pytest.fixture
async def state() -> AsyncIterator[ClusterState]:
    store = MemoryStore()
    yield ClusterState(store)
    await store.close()


@pytest.fixture
def app(state: ClusterState) -> AsyncIterator[FastAPI]:
    app = create_app(state, heartbeat=0.3, host_ttl=4)
    yield app
    context_of(app).close_streams()


@pytest.fixture
async def config(state: ClusterState) -> ClientConfig:
    token = await state.create_token("admin")
    return ClientConfig(server="http://podium", ca_pem=None, token=token, path="/etc/admin.conf")


@pytest.fixture
async def link(app: FastAPI, state: ClusterState) -> AsyncIterator[AgentLink]:
    """An agent's link to the app, holding a join token (register it to use it)."""
    token = await state.create_token("join")
    link = AgentLink("http://podium", token, None, transport=StreamingASGITransport(app))
    yield link
    await link.close()
