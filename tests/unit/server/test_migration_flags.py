"""``--max-migrations`` / ``--max-migrations-per-host`` reach the controllers; bad values fail."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from podium.api import Metrics
from podium.controller import Leadership, MigrationLimits
from podium.server import LeaderLoop, ServerError, ServerSettings
from podium.server.__main__ import _parser
from podium.server._serve import _resolve_runner
from podium.state import ClusterState
from podium.store.memory import MemoryStore


def test_flags_parse_with_their_defaults() -> None:
    defaults = _parser().parse_args(["--store", "sqlite:///x.db"])
    assert (defaults.max_migrations, defaults.max_migrations_per_host) == (2, 1)
    args = _parser().parse_args(
        ["--store", "sqlite:///x.db", "--max-migrations", "5", "--max-migrations-per-host", "2"]
    )
    assert (args.max_migrations, args.max_migrations_per_host) == (5, 2)
    settings = ServerSettings(store_url="sqlite:///x.db")
    assert (settings.max_migrations, settings.max_migrations_per_host) == (2, 1)


def test_limits_below_one_are_one_clear_error() -> None:
    settings = ServerSettings(store_url="memory://", max_migrations=0)
    with pytest.raises(ServerError, match=r"--max-migrations .* at least 1"):
        _resolve_runner(settings, None, None, Metrics())


async def test_the_leader_loop_hands_the_limits_to_the_manager() -> None:
    seen: dict[str, Any] = {}
    started = asyncio.Event()

    class Manager:
        def __init__(self, state: ClusterState, scheduler: object, **kwargs: Any) -> None:
            seen.update(kwargs)

        def stats(self) -> dict[str, int]:
            return {}

        async def run(self, leadership: Leadership) -> None:
            started.set()
            await asyncio.Event().wait()

    store = MemoryStore()
    loop = LeaderLoop(
        host_ttl=5, leader_ttl=5, identity="t", max_migrations=4, max_migrations_per_host=3
    )
    loop.resolve()
    loop._manager = Manager  # type: ignore[assignment]
    task = asyncio.create_task(loop(ClusterState(store), store))
    try:
        await asyncio.wait_for(started.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
    assert seen["migrations"] == MigrationLimits(max_migrations=4, max_per_host=3)
