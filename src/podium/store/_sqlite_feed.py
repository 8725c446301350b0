"""SQLite backend: the events of this process's recent commits, for in-process watchers.

A watch would otherwise read back from the ``log`` table every event the worker has
just written (a query and a row-to-object conversion per event, on the worker thread);
after each COMMIT the worker hands the batch's events to the event loop instead, and a
watcher that is up to date takes them from here. Whatever this feed cannot vouch for
(a revision older than what it keeps, or one written by another process on the same
file) is read from the log as before.
"""

from __future__ import annotations

from collections import deque

from podium.store._protocol import Event

DEFAULT_CAPACITY = 32_768  # events kept: a watcher further behind reads the log


class CommitFeed:
    """Recent committed batches, oldest first, each as (first, last revision, events).

    A batch holds the write lock from its first revision to its last, so it covers
    every revision in between: two batches with ``last + 1 == first`` leave no gap.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._batches: deque[tuple[int, int, list[Event]]] = deque()
        self._size = 0

    def add(self, first: int, events: list[Event]) -> None:
        """A batch committed revisions ``first`` .. its last event's revision."""
        if not events:
            return
        self._batches.append((first, events[-1].revision, events))
        self._size += len(events)
        while self._size > self._capacity and len(self._batches) > 1:
            self._size -= len(self._batches.popleft()[2])

    def since(self, revision: int) -> list[list[Event]] | None:
        """The batches holding every event from ``revision`` on, oldest first.

        ``[]``: nothing committed here from ``revision`` on. ``None``: the feed cannot
        vouch for ``revision`` (dropped, or another process wrote it): read the log.
        Events before ``revision`` in the first batch are the caller's to skip.
        """
        found: list[list[Event]] = []
        expect_last = None
        for first, last, events in reversed(self._batches):
            if last < revision:
                break
            if expect_last is not None and last + 1 != expect_last:
                return None  # another writer's revisions lie between these batches
            found.append(events)
            expect_last = first
            if first <= revision:
                found.reverse()
                return found
        # none: nothing was committed here from ``revision`` on (another process may
        # have written: the watcher's poll reads the log); some: ``revision`` is older
        # than the oldest batch kept
        return None if found else []
