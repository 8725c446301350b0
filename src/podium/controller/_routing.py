"""PrefixRouter: which watchers of key prefixes a store key concerns, without asking each.

::

    routes: (target, prefixes | None)     None: every key
    key ──> head (up to its third "/": /podium/objects/) ──> table, built once per head
            table: targets every key under the head concerns, plus (prefix, targets)
                   for prefixes longer than the head ──> a few startswith, no target asked

A million guests make millions of watch events, most of them (MAC index, assignments,
events) of no interest to most controllers; the manager and the cache route each event
in O(1) instead of offering it to every controller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_HEADS = 4096  # tables kept; keys past it route by a scan (only odd layouts get there)


class _Table(Generic[T]):
    """The targets of keys under one head."""

    __slots__ = ("every", "longer")

    def __init__(self, every: tuple[T, ...], longer: tuple[tuple[str, tuple[T, ...]], ...]):
        self.every = every  # each key under the head matches one of their prefixes
        self.longer = longer  # (prefix longer than the head, every + its targets, in order)


class PrefixRouter(Generic[T]):
    """Routes a key to the targets with a prefix it starts with, in the routes' order."""

    def __init__(self, routes: Iterable[tuple[T, tuple[str, ...] | None]]) -> None:
        self._routes = [(t, p) for t, p in routes]
        self._tables: dict[str, _Table[T]] = {}
        self._whole: dict[str, tuple[T, ...]] = {}  # heads whose keys all route alike

    def route(self, key: str) -> tuple[T, ...]:
        """The targets one of whose prefixes ``key`` starts with (each once, in order)."""
        first = key.find("/", 1)
        cut = key.find("/", first + 1) if first > 0 else -1
        if cut < 0:
            return self._scan(key)
        head = key[: cut + 1]
        whole = self._whole.get(head)
        if whole is not None:
            return whole
        table = self._tables.get(head)
        if table is None:
            if len(self._tables) >= MAX_HEADS:
                return self._scan(key)
            table = self._tables[head] = self._table(head)
            if not table.longer:
                self._whole[head] = table.every
        if not table.longer:
            return table.every
        matched = [targets for prefix, targets in table.longer if key.startswith(prefix)]
        if not matched:
            return table.every
        if len(matched) == 1:
            return matched[0]
        seen = {id(t) for targets in matched for t in targets}
        return tuple(t for t, _ in self._routes if id(t) in seen)

    def _scan(self, key: str) -> tuple[T, ...]:
        return tuple(t for t, p in self._routes if p is None or key.startswith(p))

    def _table(self, head: str) -> _Table[T]:
        every: set[int] = set()  # (indexes into the routes: targets need not be hashable)
        by_prefix: dict[str, set[int]] = {}
        for i, (_, prefixes) in enumerate(self._routes):
            if prefixes is None or any(head.startswith(p) for p in prefixes):
                every.add(i)
                continue
            for p in prefixes:
                if p.startswith(head):  # a key under the head may or may not start with it
                    by_prefix.setdefault(p, set()).add(i)

        def ordered(indexes: set[int]) -> tuple[T, ...]:
            return tuple(self._routes[i][0] for i in sorted(indexes))

        longer = tuple((p, ordered(every | ts)) for p, ts in by_prefix.items())
        return _Table(ordered(every), longer)
