"""The SQLite store's in-process feed of committed events: what it vouches for."""

from __future__ import annotations

from podium.store import Event, EventType, KeyValue
from podium.store._sqlite_db import _chunks
from podium.store._sqlite_feed import CommitFeed


def _events(first: int, last: int, per_revision: int = 1) -> list[Event]:
    return [
        Event(EventType.PUT, KeyValue(f"k/{rev}/{i}", b"", rev, rev, 1))
        for rev in range(first, last + 1)
        for i in range(per_revision)
    ]


def _revisions(batches: list[list[Event]] | None) -> list[int] | None:
    return None if batches is None else [e.revision for batch in batches for e in batch]


def test_contiguous_batches_are_served_from_the_batch_holding_the_revision() -> None:
    feed = CommitFeed()
    feed.add(5, _events(5, 6))
    feed.add(7, _events(7, 7, per_revision=3))
    feed.add(8, _events(8, 9))
    assert _revisions(feed.since(7)) == [7, 7, 7, 8, 9]
    # mid-batch: the whole batch comes back; the caller skips what it already has
    assert _revisions(feed.since(9)) == [8, 9]
    assert _revisions(feed.since(5)) == [5, 6, 7, 7, 7, 8, 9]


def test_nothing_new_is_an_empty_answer_not_a_refusal() -> None:
    feed = CommitFeed()
    assert feed.since(1) == []
    feed.add(3, _events(3, 4))
    assert feed.since(5) == []
    assert feed.since(50) == []  # later writes of another process: the watcher polls


def test_revisions_another_process_wrote_between_batches_send_the_watcher_to_the_log() -> None:
    feed = CommitFeed()
    feed.add(3, _events(3, 4))
    feed.add(8, _events(8, 9))  # 5..7 were written by someone else
    assert feed.since(5) is None
    assert feed.since(4) is None  # 4 is here, 5..7 are not
    assert _revisions(feed.since(8)) == [8, 9]


def test_revisions_older_than_the_oldest_batch_kept_are_read_from_the_log() -> None:
    feed = CommitFeed(capacity=4)
    feed.add(1, _events(1, 2))
    feed.add(3, _events(3, 4))
    feed.add(5, _events(5, 6))  # 6 events > 4: the oldest batch goes
    assert feed.since(1) is None
    assert _revisions(feed.since(3)) == [3, 4, 5, 6]


def test_the_newest_batch_is_kept_even_when_it_alone_exceeds_the_capacity() -> None:
    feed = CommitFeed(capacity=2)
    feed.add(1, _events(1, 5))
    assert _revisions(feed.since(4)) == [1, 2, 3, 4, 5]
    feed.add(6, [])  # a batch that wrote nothing is not a batch
    assert feed.since(6) == []


def test_multi_row_statements_cover_every_row_once_in_few_shapes() -> None:
    for total in range(300):
        pieces = _chunks(total, 64)
        assert sum(size for _, size in pieces) == total
        assert [start for start, _ in pieces] == [
            sum(size for _, size in pieces[:i]) for i in range(len(pieces))
        ]
        assert all(size == 64 or size & (size - 1) == 0 for _, size in pieces)
