"""First bindings in bulk: many never-bound guests per transaction.

A first placement has nothing to release (no old host, no migration, epoch 1), so it
needs no reads: the caller (the placement controller, from its cache) passes each
guest's record and the mod revision it decided on. Each guest adds two compares
(binding absent, record unchanged) and two puts (binding, assignment); a transaction
carries as many guests as the store's operation limit allows. A transaction that fails
(some guest changed meanwhile) binds none of its guests: the caller binds those one at
a time, which re-reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from podium.model import Kind
from podium.state import _cluster, _ipam, keys
from podium.store import Compare, Op, Put, Store

JSON = dict[str, Any]
# Transactions of one bulk bind sent at once: as many as the app controller creates
# with (CREATE_IN_FLIGHT), so that during a rollout binds get an equal share of the
# store's queue (with 8 they fell 300k guests behind creation at a million).
IN_FLIGHT = 32


@dataclass(frozen=True, slots=True)
class NewBinding:
    """Bind never-bound ``guest`` (its ``record`` at mod revision ``guest_revision``)."""

    guest: str
    host: str
    record: JSON
    guest_revision: int


@dataclass(frozen=True, slots=True)
class BulkBindResult:
    bound: tuple[NewBinding, ...]  # now bound to their host at epoch 1
    raced: tuple[NewBinding, ...]  # in a transaction whose compares failed: not bound
    revision: int  # the store revision after the last successful transaction (0: none)


def per_transaction(guard: int) -> int:
    """Guests one transaction holds, next to ``guard`` extra compares."""
    return max(1, (_ipam.MAX_TXN_OPS - guard) // 2)


async def bind_new(
    store: Store,
    items: Sequence[NewBinding],
    *,
    guard: Sequence[Compare] = (),
    in_flight: int = IN_FLIGHT,
) -> BulkBindResult:
    """Bind every item at epoch 1, ``per_transaction`` at a time, ``in_flight``
    transactions at once (they touch disjoint keys; a store that commits in groups
    commits them together).

    Raises :class:`~podium.state.GuardFailed` once a ``guard`` compare fails (the
    transactions already sent finish; no more are sent).
    """
    size = per_transaction(len(guard))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    outcomes: list[tuple[int, Sequence[NewBinding], int | None]] = []
    gate = asyncio.Semaphore(max(1, in_flight))
    stop = asyncio.Event()

    async def one(index: int, chunk: Sequence[NewBinding]) -> None:
        async with gate:
            if stop.is_set():
                return
            revision = await _commit(store, chunk, guard)
            if revision is None:
                try:
                    await _cluster.check_guard(store, guard, "binding guests")
                except _cluster.GuardFailed:
                    stop.set()
                    raise
            outcomes.append((index, chunk, revision))

    results = await asyncio.gather(
        *(one(i, c) for i, c in enumerate(chunks)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    bound: list[NewBinding] = []
    raced: list[NewBinding] = []
    outcomes.sort(key=lambda o: o[0])  # in the caller's order
    for _, chunk, revision in outcomes:
        (raced if revision is None else bound).extend(chunk)
    revisions = [r for _, _, r in outcomes if r is not None]
    return BulkBindResult(tuple(bound), tuple(raced), max(revisions, default=0))


async def _commit(
    store: Store, chunk: Sequence[NewBinding], guard: Sequence[Compare]
) -> int | None:
    """One transaction binding ``chunk``; its revision, or None if a compare failed."""
    compares: list[Compare] = list(guard)
    ops: list[Op] = []
    for item in chunk:
        binding = keys.binding_key(item.guest)
        compares.append(Compare(binding, "version", "=", 0))
        compares.append(
            Compare(keys.object_key(Kind.GUEST, item.guest), "mod", "=", item.guest_revision)
        )
        ops.append(Put(binding, _cluster.dumps({"host": item.host, "epoch": 1})))
        assignment = {
            "guest": item.guest,
            "uid": item.record["uid"],
            "epoch": 1,
            "spec": _ipam.assignment_spec(item.record),
        }
        ops.append(Put(keys.assign_key(item.host, item.guest), _cluster.dumps(assignment)))
    result = await store.txn(compares, ops)
    return result.revision if result.succeeded else None
