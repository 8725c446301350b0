"""Helpers every backend shares: compare evaluation, request checks, prefix bounds."""

from __future__ import annotations

from collections.abc import Sequence

from podium.store._protocol import Compare, Delete, Get, KeyValue, Op, Put
from podium.store.errors import InvalidRequest

# etcd's default --max-txn-ops: a larger transaction is rejected there, so every
# backend rejects it (a caller must not work on SQLite and fail on etcd).
MAX_TXN_OPS = 128


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return "\U0010ffff"
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def prefix_end_bytes(prefix: bytes) -> bytes | None:
    """etcd's range end for a byte prefix; ``None`` means "no upper bound".

    UTF-8 byte order is code point order, so byte ranges match ``str`` prefixes.
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return None


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
    """Reject one branch that etcd rejects: 'duplicate key given in txn request'.

    etcd's rule (``checkIntervals``): a key may be put at most once, and never inside a
    key or prefix the same branch deletes; deletes may overlap each other; gets are free.
    """
    puts: set[str] = set()
    deletes: list[Delete] = []
    for op in ops:
        if not op.key and not (isinstance(op, Delete | Get) and op.prefix):
            raise InvalidRequest("empty key")
        if isinstance(op, Put):
            if op.key in puts:
                raise InvalidRequest(f"duplicate key {op.key!r} in one transaction")
            puts.add(op.key)
        elif isinstance(op, Delete):
            deletes.append(op)
    for d in deletes:
        clash = [k for k in puts if k.startswith(d.key)] if d.prefix else [d.key] * (d.key in puts)
        if clash:
            raise InvalidRequest(
                f"duplicate key {clash[0]!r} in one transaction (put and deleted together)"
            )


def check_txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> None:
    """Validate a whole transaction before evaluating it, as etcd does.

    Both branches are checked whichever one would run, so a malformed transaction fails
    the same way on every backend and in every store state.
    """
    if max(len(compares), len(success), len(failure)) > MAX_TXN_OPS:
        raise InvalidRequest(f"too many operations in one transaction (at most {MAX_TXN_OPS})")
    for cmp in compares:
        if not cmp.key:
            raise InvalidRequest("empty key in a compare")
        check_compare(cmp, None)  # type and operator checks only
    check_txn_ops(success)
    check_txn_ops(failure)
