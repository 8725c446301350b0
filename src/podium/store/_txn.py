"""Helpers every backend shares: compare evaluation, op checks, prefix bounds."""

from __future__ import annotations

from collections.abc import Sequence

from podium.store._protocol import Compare, Delete, KeyValue, Op, Put
from podium.store.errors import InvalidRequest


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _compare_values(actual: int | bytes, op: str, expected: int | bytes) -> bool:
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    if type(actual) is not type(expected):
        raise InvalidRequest(f"cannot order {actual!r} against {expected!r}")
    if op == "<":
        return actual < expected  # type: ignore[operator]
    if op == ">":
        return actual > expected  # type: ignore[operator]
    raise InvalidRequest(f"unknown compare operator {op!r}")


def check_compare(cmp: Compare, kv: KeyValue | None) -> bool:
    """Evaluate one compare against the key's current state (``None``: missing)."""
    if cmp.target == "value":
        if not isinstance(cmp.value, bytes):
            raise InvalidRequest("a value compare needs a bytes value")
        if kv is None:
            # etcd: a compare on a missing key's value fails whatever the operator
            return False
        return _compare_values(kv.value, cmp.op, cmp.value)
    if not isinstance(cmp.value, int):
        raise InvalidRequest(f"a {cmp.target} compare needs an int value")
    actual = 0
    if kv is not None:
        actual = {
            "version": kv.version,
            "create": kv.create_revision,
            "mod": kv.mod_revision,
            "lease": kv.lease,
        }[cmp.target]
    return _compare_values(actual, cmp.op, cmp.value)


def check_txn_ops(ops: Sequence[Op]) -> None:
    """Reject a transaction that writes one key twice (etcd: 'duplicate key given in txn')."""
    seen: set[str] = set()
    for op in ops:
        if isinstance(op, Put | Delete) and not (isinstance(op, Delete) and op.prefix):
            if op.key in seen:
                raise InvalidRequest(f"duplicate key {op.key!r} in one transaction")
            seen.add(op.key)
        if not op.key:
            raise InvalidRequest("empty key")
