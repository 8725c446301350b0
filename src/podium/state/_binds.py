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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from podium.model import Kind
from podium.state import _cluster, _ipam, keys
from podium.store import Compare, Op, Put, Store

JSON = dict[str, Any]


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
    store: Store, items: Sequence[NewBinding], *, guard: Sequence[Compare] = ()
) -> BulkBindResult:
    """Bind every item at epoch 1, ``per_transaction`` at a time.

    Raises :class:`~podium.state.GuardFailed` once a ``guard`` compare fails (then
    nothing more is tried).
    """
    size = per_transaction(len(guard))
    bound: list[NewBinding] = []
    raced: list[NewBinding] = []
    revision = 0
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
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
        if result.succeeded:
            bound += chunk
            revision = result.revision
        else:
            await _cluster.check_guard(store, guard, "binding guests")
            raced += chunk
    return BulkBindResult(tuple(bound), tuple(raced), revision)
