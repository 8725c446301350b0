"""A Hypothesis state machine: random puts, deletes, transactions and leases against a
backend and a plain dict model. After every step the keyspace and the revision must
equal the model's; at the end a watch from the first revision must replay exactly the
model's history. Example counts are small on real backends to keep the suite quick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from podium.store import (
    Compare,
    Delete,
    EventType,
    Get,
    InvalidRequest,
    LeaseNotFound,
    Op,
    Put,
    Store,
    TxnResult,
)
from tests.integration.store_contract._support import Backend, take, watching

T = TypeVar("T")

KEYS = st.sampled_from(["a", "a/1", "a/2", "a/2/x", "ab", "b", "b/1"])
PREFIXES = st.sampled_from(["", "a", "a/", "a/2", "b", "c"])
VALUES = st.binary(max_size=3)
EXAMPLES = {"memory": 60, "sqlite": 12, "etcd": 10}


@dataclass
class Row:
    value: bytes
    create: int
    mod: int
    version: int
    lease: int


def ops_strategy() -> st.SearchStrategy[list[Op]]:
    op: st.SearchStrategy[Op] = st.one_of(
        st.builds(Put, KEYS, VALUES),
        st.builds(Delete, KEYS),
        st.builds(lambda p: Delete(p, prefix=True), PREFIXES),
        st.builds(Get, KEYS),
        st.builds(lambda p: Get(p, prefix=True), PREFIXES),
    )
    return st.lists(op, max_size=4)


def duplicate(ops: Sequence[Op]) -> bool:
    """etcd's rule, restated: a key put twice, or put and deleted in one branch."""
    puts = [op.key for op in ops if isinstance(op, Put)]
    deletes = [op for op in ops if isinstance(op, Delete)]
    covered = any(k.startswith(d.key) if d.prefix else k == d.key for k in puts for d in deletes)
    return len(puts) != len(set(puts)) or covered


class StoreModel(RuleBasedStateMachine):
    backend: ClassVar[Backend]
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.store: Store = self.run(self.backend.open())
        self.base = self.run(self.store.revision())
        self.rev = self.base
        self.rows: dict[str, Row] = {}
        self.alive: set[int] = set()
        self.history: list[tuple[EventType, str, bytes, int]] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    # -- the model ------------------------------------------------------------------

    def _apply(self, ops: Sequence[Op]) -> list[list[tuple[str, bytes]]]:
        """Apply ops at the next revision; return what each Get saw."""
        rev = self.rev + 1
        wrote = False
        seen: list[list[tuple[str, bytes]]] = []
        for op in ops:
            if isinstance(op, Put):
                old = self.rows.get(op.key)
                self.rows[op.key] = Row(
                    op.value,
                    old.create if old else rev,
                    rev,
                    old.version + 1 if old else 1,
                    op.lease,
                )
                self.history.append((EventType.PUT, op.key, op.value, rev))
                wrote = True
            elif isinstance(op, Delete):
                for key in self._match(op.key, op.prefix):
                    del self.rows[key]
                    self.history.append((EventType.DELETE, key, b"", rev))
                    wrote = True
            else:
                seen.append([(k, self.rows[k].value) for k in self._match(op.key, op.prefix)])
        if wrote:
            self.rev = rev
        return seen

    def _match(self, key: str, prefix: bool) -> list[str]:
        if prefix:
            return sorted(k for k in self.rows if k.startswith(key))
        return [key] if key in self.rows else []

    def _holds(self, cmp: Compare) -> bool:
        row = self.rows.get(cmp.key)
        if cmp.target == "value":
            if row is None:
                return False
            actual: int | bytes = row.value
        else:
            fields = {"version": "version", "create": "create", "mod": "mod", "lease": "lease"}
            actual = getattr(row, fields[cmp.target]) if row else 0
        return {
            "=": actual == cmp.value,
            "!=": actual != cmp.value,
            "<": actual < cmp.value,  # type: ignore[operator]
            ">": actual > cmp.value,  # type: ignore[operator]
        }[cmp.op]

    # -- rules ----------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.run(self.store.range("")).kvs == ()

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: bytes) -> None:
        rev = self.run(self.store.put(key, value))
        self._apply([Put(key, value)])
        assert rev == self.rev

    @rule(key=KEYS, value=VALUES, lease=leases)
    def put_on_lease(self, key: str, value: bytes, lease: int) -> None:
        if lease not in self.alive:
            with pytest.raises(LeaseNotFound):
                self.run(self.store.put(key, value, lease=lease))
            return
        assert self.run(self.store.put(key, value, lease=lease)) == self.rev + 1
        self._apply([Put(key, value, lease)])

    @rule(keys=st.lists(KEYS, min_size=1, max_size=3, unique=True), value=VALUES, lease=leases)
    def txn_on_lease(self, keys: list[str], value: bytes, lease: int) -> None:
        ops: list[Op] = [Put(k, value, lease) for k in keys]
        if lease not in self.alive:
            with pytest.raises(LeaseNotFound):
                self.run(self.store.txn([], ops))
            return
        assert self.run(self.store.txn([], ops)).revision == self.rev + 1
        self._apply(ops)

    @rule(key=KEYS, prefix=st.booleans())
    def delete(self, key: str, prefix: bool) -> None:
        rev, deleted = self.run(self.store.delete(key, prefix=prefix))
        expected = len(self._match(key, prefix))
        self._apply([Delete(key, prefix)])
        assert (rev, deleted) == (self.rev, expected)

    @rule(
        compares=st.lists(
            st.one_of(
                st.builds(
                    Compare,
                    KEYS,
                    st.sampled_from(["version", "create", "mod", "lease"]),
                    st.sampled_from(["=", "!=", "<", ">"]),
                    st.integers(0, 12),
                ),
                st.builds(
                    Compare, KEYS, st.just("value"), st.sampled_from(["=", "!=", "<", ">"]), VALUES
                ),
            ),
            max_size=3,
        ),
        success=ops_strategy(),
        failure=ops_strategy(),
    )
    def txn(self, compares: list[Compare], success: list[Op], failure: list[Op]) -> None:
        # create/mod compares are made relative to the first revision of this run
        compares = [
            Compare(c.key, c.target, c.op, self.base + c.value)  # type: ignore[operator]
            if c.target in ("create", "mod") and c.value
            else c
            for c in compares
        ]
        if duplicate(success) or duplicate(failure):
            with pytest.raises(InvalidRequest):
                self.run(self.store.txn(compares, success, failure))
            return
        ok = all(self._holds(c) for c in compares)
        result: TxnResult = self.run(self.store.txn(compares, success, failure))
        seen = self._apply(success if ok else failure)
        assert result.succeeded is ok
        assert result.revision == self.rev
        gets = [
            r
            for r, op in zip(result.results, success if ok else failure, strict=True)
            if isinstance(op, Get)
        ]
        assert [[(kv.key, kv.value) for kv in r.kvs] for r in gets] == seen

    @rule(target=leases)
    def grant(self) -> int:
        lease = self.run(self.store.grant(60))
        self.alive.add(lease.id)
        return lease.id

    @rule(lease=leases)
    def revoke(self, lease: int) -> None:
        self.run(self.store.revoke(lease))
        if lease in self.alive:
            self.alive.discard(lease)
            self._apply([Delete(k) for k in sorted(self.rows) if self.rows[k].lease == lease])

    # -- checks ---------------------------------------------------------------------

    @invariant()
    def keyspace_matches(self) -> None:
        result = self.run(self.store.range(""))
        assert result.revision == self.rev
        actual = {
            kv.key: Row(kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in result.kvs
        }
        assert actual == self.rows

    async def _replay(self) -> list[tuple[EventType, str, bytes, int]]:
        sentinel = await self.store.put("~end", b"")
        async with watching(self.store, "", self.base + 1) as stream:
            events = await take(stream, len(self.history) + 1)
        assert (events[-1].kv.key, events[-1].revision) == ("~end", sentinel)
        return [(e.type, e.kv.key, e.kv.value, e.revision) for e in events[:-1]]

    def teardown(self) -> None:
        try:
            assert self.run(self._replay()) == self.history
        finally:
            self.run(self.store.close())
            self.run(self.backend.cleanup())
            self.runner.close()


def test_store_matches_a_dict_model(backend: Backend) -> None:
    machine = type(f"StoreModel_{backend.name}", (StoreModel,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[backend.name], stateful_step_count=20, deadline=None
        ),
    )
