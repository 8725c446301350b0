"""The ``backend`` and ``store`` fixtures: every contract test runs on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podium.store import Store
from tests.integration.store_contract._support import (
    Backend,
    EtcdBackend,
    MemoryBackend,
    SQLiteBackend,
)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite-process",
        pytest.param("etcd", marks=pytest.mark.etcd),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path)
    if request.param == "sqlite-process":
        return SQLiteBackend(tmp_path, worker="process")
    return EtcdBackend(request.getfixturevalue("etcd_cluster"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """A fresh store; closed after the test, which must leave no task of its own behind."""
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()
        await backend.cleanup()
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leaked, f"tasks left running after close: {leaked}"
