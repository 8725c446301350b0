"""NDJSON watch streams: store events → one JSON line per change.

::

    store.watch(prefix, from) ──> _Feed (pump task + bounded queue) ──> batches per revision
        ──> kind_lines / event_lines / assignment_lines ──> b'{"type": ...}\\n' ──> client
                 │ nothing sent for `heartbeat` s ──> {"type": "BOOKMARK", "revision": N}
                 └ Compacted / store error ──> {"type": "ERROR", "error": "..."} and close

A stream started without ``from`` sends a BOOKMARK as soon as its starting point is
fixed (after the snapshot of current objects, if any). A client resumes a dropped
stream with ``from`` = the last revision it saw completely + 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from podium.api._views import read_view
from podium.model import Kind
from podium.state import ClusterState, NotFound, keys, loads
from podium.store import Compacted, Event, EventType, StoreError

JSON = dict[str, Any]
QUEUE_SIZE = 512

_END = object()


def line(obj: JSON) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class _Feed:
    """A store watch drained by a task into a bounded queue, so reads can time out.

    ``next()`` returns one event, ``None`` after ``timeout`` seconds without one,
    and raises ``StopAsyncIteration`` once the watch ended or ``stopping`` is set.
    """

    def __init__(self, source: AsyncIterator[Event], stopping: asyncio.Event) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        self._stopping = stopping
        self._pump = asyncio.get_running_loop().create_task(self._run(source))

    async def _run(self, source: AsyncIterator[Event]) -> None:
        try:
            async for event in source:
                await self._queue.put(event)
            await self._queue.put(_END)
        except Exception as err:  # handed to the consumer, which raises it
            await self._queue.put(err)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def _unpack(self, item: object) -> Event:
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, Event)
        return item

    def next_nowait(self) -> Event | None:
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return self._unpack(item)

    async def next(self, timeout: float) -> Event | None:
        if self._stopping.is_set():
            raise StopAsyncIteration
        ready = self.next_nowait()
        if ready is not None:
            return ready
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({getter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
            await asyncio.gather(getter, stopper, return_exceptions=True)
        if getter.done() and not getter.cancelled():
            return self._unpack(getter.result())
        if self._stopping.is_set():
            raise StopAsyncIteration
        return None

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


async def _batches(
    state: ClusterState,
    prefix: str,
    start: int,
    *,
    heartbeat: float,
    stopping: asyncio.Event,
) -> AsyncGenerator[list[Event] | None, None]:
    """Events under ``prefix`` from ``start``, grouped by revision; ``None``: time to bookmark.

    A group holds every event of one revision that had arrived when it was read
    (a revision split across two groups yields two batches, never a reordering).
    """
    feed = _Feed(state.store.watch(prefix, start), stopping)
    pending: Event | None = None
    last_sent = time.monotonic()
    try:
        while True:
            first = pending
            pending = None
            if first is None:
                wait = max(0.0, last_sent + heartbeat - time.monotonic())
                try:
                    first = await feed.next(wait)
                except StopAsyncIteration:
                    return
            if first is None:
                last_sent = time.monotonic()
                yield None
                continue
            group = [first]
            try:
                while (nxt := feed.next_nowait()) is not None:
                    if nxt.revision != first.revision:
                        pending = nxt
                        break
                    group.append(nxt)
            except StopAsyncIteration:
                yield group
                return
            yield group
            if time.monotonic() - last_sent >= heartbeat:
                last_sent = time.monotonic()
                yield None
    finally:
        await feed.close()


def _bookmark(revision: int) -> bytes:
    return line({"type": "BOOKMARK", "revision": revision})


def _error_line(err: StoreError, resume: int) -> bytes:
    if isinstance(err, Compacted):
        message = (
            f"watch from revision {err.requested} is no longer available (history was "
            f"compacted at {err.compact_revision}): list again and watch from that list's revision"
        )
    else:
        message = f"the store did not answer: {err}; watch again from revision {resume}"
    return line({"type": "ERROR", "error": message})


async def kind_lines(
    state: ClusterState,
    kind: Kind,
    from_revision: int,
    *,
    visible: Callable[[JSON], bool] | None,
    heartbeat: float,
    stopping: asyncio.Event,
) -> AsyncIterator[bytes]:
    """ADDED/MODIFIED/DELETED lines for objects of ``kind`` (those ``visible`` admits).

    ``visible`` None admits everything. ADDED means created at that revision (or,
    without ``from_revision``, present at the start); other changes are MODIFIED.
    """
    seen: set[str] = set()
    last = from_revision - 1
    try:
        if from_revision <= 0:
            items, last = await state.list_objects(kind)
            for view in items:
                if visible is None or visible(view):
                    if visible is not None:
                        seen.add(view["name"])
                    yield line({"type": "ADDED", "object": view, "revision": last})
            yield _bookmark(last)  # the snapshot is complete
        batches = _batches(state, keys.ROOT, last + 1, heartbeat=heartbeat, stopping=stopping)
        async with contextlib.aclosing(batches):
            async for group in batches:
                if group is None:
                    yield _bookmark(last)
                    continue
                for out in await _kind_changes(state, kind, group, visible, seen):
                    yield out
                last = group[0].revision
    except StoreError as err:
        yield _error_line(err, last + 1)


async def _kind_changes(
    state: ClusterState,
    kind: Kind,
    group: list[Event],
    visible: Callable[[JSON], bool] | None,
    seen: set[str],
) -> list[bytes]:
    revision = group[0].revision
    touched: dict[str, str] = {}  # name -> "created" | "deleted" | "changed"
    previous: dict[str, JSON] = {}
    for event in group:
        which = keys.object_of_key(event.kv.key)
        if which is None or which[0] is not kind:
            continue
        name = which[1]
        is_record = event.kv.key == keys.object_key(kind, name)
        if is_record and event.type is EventType.DELETE:
            touched[name] = "deleted"
            if event.prev_kv is not None:
                previous[name] = loads(event.prev_kv.value)
        elif is_record and event.kv.version == 1:
            touched[name] = "created"
        else:
            touched.setdefault(name, "changed")
    out: list[bytes] = []
    for name, what in touched.items():
        if what == "deleted":
            old = previous.get(name)
            if visible is None or name in seen or (old is not None and visible(old)):
                seen.discard(name)
                stub = {"kind": kind.value, "name": name}
                out.append(line({"type": "DELETED", "object": stub, "revision": revision}))
            continue
        try:
            view = await read_view(state, kind, name)
        except NotFound:
            continue  # deleted since; its DELETED line follows
        if visible is not None:
            if not visible(view):
                continue
            seen.add(name)
        change = "ADDED" if what == "created" else "MODIFIED"
        out.append(line({"type": change, "object": view, "revision": revision}))
    return out


async def event_lines(
    state: ClusterState, from_revision: int, *, heartbeat: float, stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    """EVENT lines for cluster events written at or after ``from_revision`` (0: from now)."""
    last = from_revision - 1
    try:
        if from_revision <= 0:
            last = await state.store.revision()
            yield _bookmark(last)  # where "now" is
        batches = _batches(state, keys.EVENTS, last + 1, heartbeat=heartbeat, stopping=stopping)
        async with contextlib.aclosing(batches):
            async for group in batches:
                if group is None:
                    yield _bookmark(last)
                    continue
                for event in group:
                    if event.type is EventType.PUT:
                        record = loads(event.kv.value)
                        yield line({"type": "EVENT", "event": record, "revision": event.revision})
                last = group[0].revision
    except StoreError as err:
        yield _error_line(err, last + 1)


async def assignment_lines(
    state: ClusterState, host: str, from_revision: int, *, heartbeat: float, stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    """PUT/DELETE lines for what ``host`` should run (0: current assignments first)."""
    prefix = keys.assign_prefix(host)
    last = from_revision - 1
    try:
        if from_revision <= 0:
            items, last = await state.assignments(host)
            for a in items:
                yield line({"type": "PUT", "assignment": a.to_dict(), "revision": last})
            yield _bookmark(last)  # the snapshot is complete
        batches = _batches(state, prefix, last + 1, heartbeat=heartbeat, stopping=stopping)
        async with contextlib.aclosing(batches):
            async for group in batches:
                if group is None:
                    yield _bookmark(last)
                    continue
                for event in group:
                    if event.type is EventType.PUT:
                        out = {"type": "PUT", "assignment": loads(event.kv.value)}
                    else:
                        out = {"type": "DELETE", "guest": event.kv.key[len(prefix) :]}
                    yield line({**out, "revision": event.revision})
                last = group[0].revision
    except StoreError as err:
        yield _error_line(err, last + 1)
