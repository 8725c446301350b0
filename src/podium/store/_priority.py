"""Bulk writes: a hint that the store's other callers may go first.

A controller that writes thousands of keys (creating an app's replicas, binding a
burst of guests) marks its calls with :func:`bulk_writes`; a backend that queues jobs
(SQLite) then runs every other job first and only a few bulk jobs per batch, so an
agent's keepalive or an API request waits behind at most one small batch of bulk
writes, however many are queued. Backends without a queue of their own (etcd, memory)
ignore the hint. Order among bulk jobs, and between the jobs of one caller, is kept.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_BULK: contextvars.ContextVar[bool] = contextvars.ContextVar("podium_store_bulk", default=False)


@contextlib.contextmanager
def bulk_writes() -> Iterator[None]:
    """Mark the store calls made inside (and in tasks started inside) as bulk."""
    token = _BULK.set(True)
    try:
        yield
    finally:
        _BULK.reset(token)


def in_bulk() -> bool:
    """Whether the current context is inside :func:`bulk_writes`."""
    return _BULK.get()
