"""Cluster events at scale: bursts per host are summarised, a reason spread over many
hosts becomes one cluster event, and pruning deletes many events per transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from podium.controller._events import EventRecorder
from podium.state import ClusterState
from podium.store.memory import MemoryStore


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.txns = 0

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        self.txns += 1
        return await super().txn(*args, **kwargs)


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    s = CountingStore()
    yield s
    await s.close()  # its lease sweeper goes with it


async def listed(state: ClusterState) -> list[dict[str, Any]]:
    events, _ = await state.list_events()
    return events


async def test_a_burst_on_one_host_is_one_summary(store: CountingStore) -> None:
    state = ClusterState(store, clock=lambda: 100.0)
    recorder = EventRecorder(state, burst=3)
    for i in range(7):
        recorder.record("Guest", f"web-{i}", "GuestPlaced", "placed", group=("Host", "h1"))
    recorder.record("Guest", "db-0", "GuestPlaced", "placed on h2", group=("Host", "h2"))
    await recorder.flush()
    events = await listed(state)
    summary = [e for e in events if e["name"] == "h1"]
    assert len(summary) == 1 and summary[0]["message"].startswith("7 guests: web-0, web-1")
    assert [e["message"] for e in events if e["name"] == "db-0"] == ["placed on h2"]


async def test_a_reason_over_many_hosts_is_one_cluster_event(store: CountingStore) -> None:
    state = ClusterState(store, clock=lambda: 100.0)
    recorder = EventRecorder(state, burst=3)
    for h in range(20):
        for i in range(h % 4 + 1):
            recorder.record("Guest", f"g-{h}-{i}", "GuestPlaced", "x", group=("Host", f"h{h:02d}"))
    recorder.record("Guest", "lone", "GuestRunning", "running on h1", group=("Host", "h01"))
    await recorder.flush()
    events = await listed(state)
    placed = [e for e in events if e["reason"] == "GuestPlaced"]
    assert len(placed) == 1
    (event,) = placed
    assert (event["kind"], event["name"]) == ("Cluster", "cluster")
    total = sum(h % 4 + 1 for h in range(20))
    assert event["message"] == (
        f"{total} guests on 20 hosts: h03 (4), h07 (4), h11 (4), h15 (4), h19 (4) and 15 more"
    )
    assert [e["message"] for e in events if e["reason"] == "GuestRunning"] == ["running on h1"]


async def test_pruning_deletes_many_events_per_transaction(store: CountingStore) -> None:
    state = ClusterState(store, clock=lambda: 100.0)
    for i in range(300):
        await state.emit("Guest", f"g{i}", "GuestPlaced", "x", at=float(i))
    store.txns = 0
    assert await state.prune_events(keep=10) == 290
    assert store.txns == 3  # 128 + 128 + 34
    kept = await listed(state)
    assert [e["name"] for e in kept] == [f"g{i}" for i in range(290, 300)]
