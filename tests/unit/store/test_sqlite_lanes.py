"""The SQLite worker's lanes: bulk jobs wait behind every other job, a few per batch."""

from __future__ import annotations

import asyncio
import queue

from podium.store import bulk_writes
from podium.store._priority import in_bulk
from podium.store._sqlite_worker import BULK_BATCH, MAX_BATCH, Lanes, Work


def _job(name: str, *, bulk: bool = False) -> tuple[str, Work]:
    return name, Work(print, write=True, durable=True, now=0.0, bulk=bulk)


def _lanes(*messages: list[tuple[str, Work]] | None) -> Lanes[tuple[str, Work]]:
    source: queue.SimpleQueue[list[tuple[str, Work]] | None] = queue.SimpleQueue()
    for message in messages:
        source.put(message)
    return Lanes(source, lambda job: job[1])


def _names(batch: list[tuple[str, Work]] | None) -> list[str] | None:
    return None if batch is None else [name for name, _ in batch]


def test_ordinary_jobs_overtake_queued_bulk_jobs_which_keep_their_order() -> None:
    bulk = [_job(f"b{i}", bulk=True) for i in range(BULK_BATCH + 5)]
    lanes = _lanes(bulk, [_job("keepalive"), _job("get")])
    first = _names(lanes.next_batch())
    assert first == ["keepalive", "get"] + [f"b{i}" for i in range(BULK_BATCH)]
    assert _names(lanes.next_batch()) == [f"b{i}" for i in range(BULK_BATCH, BULK_BATCH + 5)]


def test_a_batch_holds_at_most_max_batch_jobs_and_the_rest_follow() -> None:
    lanes = _lanes([_job(f"j{i}") for i in range(MAX_BATCH + 3)], [_job("b", bulk=True)])
    assert len(lanes.next_batch() or []) == MAX_BATCH  # no room left for the bulk job
    assert _names(lanes.next_batch()) == ["j512", "j513", "j514", "b"]


def test_a_stop_ends_the_lanes_only_once_both_are_empty() -> None:
    lanes = _lanes([_job(f"b{i}", bulk=True) for i in range(BULK_BATCH * 2)], None)
    assert len(lanes.next_batch() or []) == BULK_BATCH
    assert len(lanes.next_batch() or []) == BULK_BATCH
    assert lanes.next_batch() is None
    assert lanes.next_batch() is None


async def test_the_bulk_hint_reaches_tasks_started_inside_and_no_further() -> None:
    async def seen() -> bool:
        return in_bulk()

    assert not in_bulk()
    with bulk_writes():
        inner = asyncio.create_task(seen())
        assert in_bulk()
    outer = asyncio.create_task(seen())
    assert await inner and not await outer
    assert not in_bulk()
