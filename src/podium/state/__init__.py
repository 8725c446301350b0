"""Cluster state over the store: key layout, typed reads and guarded writes.

::

    api / controllers ──> ClusterState ──> Store (txn with compares: epochs, ownership)

Vocabulary: a *record* is what is stored for an object (kind, name, uid, spec); a
*view* is what the API shows (record + status merged from bindings and reports).
"""

from podium.state import keys
from podium.state._cluster import (
    ROLES,
    ApplyResult,
    Assignment,
    ClusterState,
    Conflict,
    NotFound,
    StaleEpoch,
    StateError,
    dumps,
    guest_view,
    hash_token,
    host_view,
    loads,
    token_id,
)

__all__ = [
    "ROLES",
    "ApplyResult",
    "Assignment",
    "ClusterState",
    "Conflict",
    "NotFound",
    "StaleEpoch",
    "StateError",
    "dumps",
    "guest_view",
    "hash_token",
    "host_view",
    "keys",
    "loads",
    "token_id",
]
