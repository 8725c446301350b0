"""A keyed work queue: deduplicated, one worker per key at a time (client-go's workqueue).

::

    add(key) ──> dirty? ──no──> queued ──get()──> processing ──done()──> (dirty again? requeue)
    add_after(key, s) ──timer──> add(key)          failures(key) counts retries for backoff
"""

from __future__ import annotations

import asyncio
from collections import deque


class WorkQueue:
    """Keys waiting for a reconcile. A key is never handed to two workers at once; adding
    it while it is being processed queues it once more, after ``done``."""

    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 30.0) -> None:
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._base_delay = base_delay
        self._max_delay = max_delay

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        """Ask for a reconcile of ``key`` (coalesced with any pending request)."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds; an earlier pending timer for it wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        """Wait for the next key; the caller must call :meth:`done` with it."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        if self._queue:
            self._ready.set()  # wake another worker
        return key

    def done(self, key: str) -> None:
        """Finish processing ``key``; requeue it if it was added meanwhile."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def retry(self, key: str, delay: float | None = None) -> float:
        """Schedule a retry of ``key`` with exponential backoff (or ``delay``); return it."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        if delay is None:
            delay = min(self._max_delay, self._base_delay * 2**failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """Reset the backoff of ``key`` after a success."""
        self._failures.pop(key, None)

    def close(self) -> None:
        """Cancel pending timers."""
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
