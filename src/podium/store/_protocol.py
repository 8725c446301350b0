"""The store protocol: etcd semantics over any backend.

Vocabulary (the same as etcd's v3 API, so the etcd backend is a thin adapter):

- **revision**: a global counter. Every write (put, delete, or a whole transaction
  with at least one write) advances it by exactly one. Reads return the revision
  they observed.
- **create_revision / mod_revision / version**: per key. ``version`` counts puts
  since the key was (re)created and resets to 0 on delete.
- **lease**: a TTL handle. Keys attached to a lease are deleted, in one revision,
  when the lease expires or is revoked.
- **watch**: an ordered, gap-free stream of events under a prefix from a start
  revision. History older than the compaction revision is gone: a watch that asks
  for it fails with :class:`Compacted`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

CompareTarget = Literal["version", "create", "mod", "value", "lease"]
CompareOp = Literal["=", "!=", "<", ">"]

# The records below pickle as their constructor call (``__reduce__``): the SQLite store's
# worker process gets its jobs and returns their results pickled, and the default of a
# slots dataclass (state through Python-level getstate/setstate) cost several times more.


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def __reduce__(self) -> tuple[type[KeyValue], tuple[Any, ...]]:
        return KeyValue, (
            self.key,
            self.value,
            self.create_revision,
            self.mod_revision,
            self.version,
            self.lease,
        )


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction guard, e.g. ``Compare("k", "mod", "=", 7)``.

    A missing key has version, create and mod revision 0, lease 0, and a value that
    compares unequal to every bytes value (etcd semantics).
    """

    key: str
    target: CompareTarget
    op: CompareOp
    value: int | bytes

    def __reduce__(self) -> tuple[type[Compare], tuple[Any, ...]]:
        return Compare, (self.key, self.target, self.op, self.value)


@dataclass(frozen=True, slots=True)
class Put:
    """Transaction operation: set ``key`` to ``value`` (optionally on a lease)."""

    key: str
    value: bytes
    lease: int = 0

    def __reduce__(self) -> tuple[type[Put], tuple[Any, ...]]:
        return Put, (self.key, self.value, self.lease)


@dataclass(frozen=True, slots=True)
class Delete:
    """Transaction operation: delete ``key``, or every key under it if ``prefix``."""

    key: str
    prefix: bool = False

    def __reduce__(self) -> tuple[type[Delete], tuple[Any, ...]]:
        return Delete, (self.key, self.prefix)


@dataclass(frozen=True, slots=True)
class Get:
    """Transaction operation: read ``key``, or every key under it if ``prefix``."""

    key: str
    prefix: bool = False

    def __reduce__(self) -> tuple[type[Get], tuple[Any, ...]]:
        return Get, (self.key, self.prefix)


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class OpResult:
    """The result of one transaction operation.

    For a ``Get``: the keys read. For a ``Delete``: the number of keys deleted.
    For a ``Put``: nothing beyond the transaction revision.
    """

    kvs: tuple[KeyValue, ...] = ()
    deleted: int = 0

    def __reduce__(self) -> tuple[type[OpResult], tuple[Any, ...]]:
        return OpResult, (self.kvs, self.deleted)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the compares held, the revision after the transaction, and per-op results."""

    succeeded: bool
    revision: int
    results: tuple[OpResult, ...] = ()

    def __reduce__(self) -> tuple[type[TxnResult], tuple[Any, ...]]:
        return TxnResult, (self.succeeded, self.revision, self.results)


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Keys read (sorted by key) and the store revision they were read at."""

    kvs: tuple[KeyValue, ...]
    revision: int

    def __reduce__(self) -> tuple[type[RangeResult], tuple[Any, ...]]:
        return RangeResult, (self.kvs, self.revision)


class EventType(enum.Enum):
    """What happened to a key."""

    PUT = "put"  # created or updated
    DELETE = "delete"  # deleted (explicitly, by prefix, or by lease expiry)


@dataclass(frozen=True, slots=True)
class Event:
    """One change. ``revision`` is the store revision of the write that made it.

    For a DELETE, ``kv`` carries the key, an empty value, the deleted key's
    ``create_revision``, ``mod_revision`` equal to the delete revision, ``version`` 0 and
    ``lease`` 0; ``prev_kv`` is the key as it was.
    """

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # (a field is named type)
        return Event, (self.type, self.kv, self.prev_kv)

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease."""

    id: int
    ttl: int

    def __reduce__(self) -> tuple[type[Lease], tuple[Any, ...]]:
        return Lease, (self.id, self.ttl)


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Health summary for ``/healthz`` and ``podium`` diagnostics.

    ``compact_revision`` is 0 while nothing was compacted; ``endpoints`` are the etcd
    members, or the SQLite file.
    """

    backend: str
    revision: int
    compact_revision: int
    endpoints: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Store(Protocol):
    """A versioned key-value store with transactions, leases and watches.

    Every method may raise :class:`podium.store.StoreUnavailable` (retryable) when
    the backend cannot be reached; a write that raised may or may not have been
    applied, so callers that must know use a transaction with a compare.
    Keys are ``str`` (UTF-8); values are ``bytes``. All backends pass
    ``tests/integration/store_contract``.
    """

    async def get(self, key: str) -> KeyValue | None:
        """Read one key at the current revision; ``None`` if absent."""
        ...

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        """Read every key starting with ``prefix``, sorted by key; ``limit`` 0 means all."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write one key; return the new revision. Raises ``LeaseNotFound`` for a dead lease."""
        ...

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        """Delete a key (or prefix); return ``(revision, deleted_count)``.

        Deleting nothing does not advance the revision.
        """
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """Atomically: if every compare holds run ``success``, else ``failure``.

        All writes of one transaction share one new revision; a transaction that
        writes nothing does not advance it. Both branches are checked first, whichever
        runs (etcd's rules): putting a key twice, or putting a key the same branch
        deletes (directly or by prefix), or more than 128 operations in a branch raises
        ``InvalidRequest``, and nothing is written. A ``Put`` on a dead lease in the
        branch that runs raises ``LeaseNotFound``, and nothing is written.
        """
        ...

    async def grant(self, ttl: int) -> Lease:
        """Create a lease of ``ttl`` seconds (at least 1).

        A backend may grant more: etcd raises a TTL to its minimum (1.5 x its election
        timeout, 2 s by default). ``Lease.ttl`` is the TTL granted.
        """
        ...

    async def keepalive(self, lease_id: int) -> int:
        """Renew a lease to its full TTL; return that TTL. Raises ``LeaseNotFound``."""
        ...

    async def revoke(self, lease_id: int) -> None:
        """End a lease now, deleting its keys in one revision. Idempotent."""
        ...

    async def lease_ttl(self, lease_id: int) -> int:
        """Whole seconds left on a lease, or -1 if it does not exist (expired or revoked).

        Approximate: etcd rounds down (0 while the lease is about to expire).
        """
        ...

    def watch(self, prefix: str, start_revision: int = 0) -> AsyncIterator[Event]:
        """Stream every event under ``prefix`` with revision >= ``start_revision``.

        ``start_revision`` 0 means "from now on": from the revision after the one current
        when the stream starts, at the first iteration (to miss nothing between a read
        and a watch, pass the read's revision + 1). Events arrive in
        revision order, without gaps or duplicates, several per revision when a
        transaction wrote several keys. Raises ``Compacted`` (at the first iteration)
        if ``start_revision`` is below the compaction revision (etcd semantics). A consumer that
        loses its stream resumes with ``start_revision = last_seen_revision + 1``.
        The iterator runs until the consumer stops iterating or the store closes.
        """
        ...

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision``; later watches from below it fail.

        Raises ``InvalidRequest`` if ``revision`` is above the current revision.
        Compacting to a revision at or below the current compaction is a no-op.
        """
        ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    async def status(self) -> StoreStatus:
        """Backend name, revision, compaction revision and endpoints."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks. Idempotent."""
        ...
