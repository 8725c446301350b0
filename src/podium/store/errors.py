"""Store errors.

Hierarchy::

    StoreError
    ├── StoreUnavailable   (retryable: the backend did not answer)
    ├── Compacted          (watch history before ``compact_revision`` is gone)
    ├── LeaseNotFound      (the lease expired or was revoked)
    ├── InvalidRequest     (a caller bug: bad key, duplicate key in a txn, bad TTL)
    └── InvalidStoreURL    (``--store`` cannot be parsed or names an unknown backend)
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of every store error."""

    retryable: bool = False


class StoreUnavailable(StoreError):
    """The backend did not answer; the operation may be retried."""

    retryable = True


class Compacted(StoreError):
    """A watch asked for history that compaction removed."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {requested} is compacted (history starts after {compact_revision}); "
            "re-list the prefix and watch from the revision of that list"
        )
        self.requested = requested
        self.compact_revision = compact_revision

    def __reduce__(self) -> tuple[type[Compacted], tuple[int, int]]:
        return Compacted, (self.requested, self.compact_revision)  # pickles (worker process)


class LeaseNotFound(StoreError):
    """The lease does not exist (it expired or was revoked)."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} not found (expired or revoked)")
        self.lease_id = lease_id

    def __reduce__(self) -> tuple[type[LeaseNotFound], tuple[int]]:
        return LeaseNotFound, (self.lease_id,)  # pickles (worker process)


class InvalidRequest(StoreError):
    """The request itself is wrong; retrying it will not help."""


class InvalidStoreURL(StoreError):
    """A ``--store`` URL that cannot be used."""
