"""Fixtures: an API app over a MemoryStore that clients reach in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from podium.api import context_of, create_app
from podium.client import ClientConfig
from podium.state import ClusterState
from podium.store.memory import MemoryStore


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
