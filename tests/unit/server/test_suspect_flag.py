"""``--host-suspect-after`` reaches the controllers; out-of-range values fail in one line."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from podium.api import Metrics
from podium.controller import Leadership
from podium.server import LeaderLoop, ServerError, ServerSettings
from podium.server.__main__ import _parser
from podium.server._serve import _resolve_runner
from podium.state import ClusterState
from podium.store.memory import MemoryStore


def test_flag_parses_and_defaults_to_half_the_ttl() -> None:
    assert _parser().parse_args(["--store", "memory://"]).host_suspect_after is None
    args = _parser().parse_args(["--store", "memory://", "--host-suspect-after", "2.5"])
    assert args.host_suspect_after == 2.5
    assert ServerSettings(store_url="memory://").host_suspect_after is None
    assert "stalled" in _parser().format_help()  # the help says what a low value costs


@pytest.mark.parametrize("value", [0.0, -1.0, 10.0, 12.0])
def test_values_outside_zero_to_the_ttl_are_refused(value: float) -> None:
    settings = ServerSettings(store_url="memory://", host_ttl=10, host_suspect_after=value)
    with pytest.raises(ServerError, match=r"--host-suspect-after must be above 0 and below"):
        _resolve_runner(settings, None, None, Metrics())


async def test_the_leader_loop_hands_the_threshold_to_the_manager() -> None:
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
    loop = LeaderLoop(host_ttl=6, leader_ttl=5, identity="t", host_suspect_after=2.0)
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
    assert seen["suspect_after"] == 2.0 and seen["host_ttl"] == 6
