"""Cluster state over the store: key layout, typed reads and guarded writes.

::

    api / controllers ──> ClusterState ──> Store (txn with compares: epochs, ownership)

Vocabulary: a *record* is what is stored for an object (kind, name, uid, spec); a
*view* is what the API shows (record + status merged from bindings and reports).
"""

from podium.state import keys
from podium.state._backups import (
    create_backup,
    fail_stale_backups,
    get_backup,
    list_backups,
    newest_replica,
    report_backup,
    restore_backup,
    restore_spec,
    stale_reason,
)
from podium.state._binds import BulkBindResult, NewBinding
from podium.state._clone import ClonePair, ClonePlan, clone_spec, plan_clone
from podium.state._cluster import (
    ROLES,
    ApplyResult,
    Assignment,
    ClusterState,
    Conflict,
    GuardFailed,
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
from podium.state._console import CONSOLE_LIMIT, get_console, put_console
from podium.state._dr import failback as dr_failback
from podium.state._dr import failback_stop as dr_failback_stop
from podium.state._dr import failback_sync as dr_failback_sync
from podium.state._dr import failover as dr_failover
from podium.state._dr_map import DrMapModel, parse_map
from podium.state._dr_test import drill as dr_test
from podium.state._dr_test import drill_cleanup as dr_test_cleanup
from podium.state._drain import mark_drained, start_drain, stop_for_drain
from podium.state._ipam import GuestNetwork, assignment_spec
from podium.state._migrations import MigrationOutcome, Migrations, MigrationState, next_epoch
from podium.state._pools import Holder, Pool, PoolAllocator, holder_of, next_free
from podium.state._traffic import PairRate, TrafficMatrix, put_traffic, read_traffic

__all__ = [
    "CONSOLE_LIMIT",
    "ROLES",
    "ApplyResult",
    "Assignment",
    "BulkBindResult",
    "ClonePair",
    "ClonePlan",
    "ClusterState",
    "Conflict",
    "DrMapModel",
    "GuardFailed",
    "GuestNetwork",
    "Holder",
    "MigrationOutcome",
    "MigrationState",
    "Migrations",
    "NewBinding",
    "NotFound",
    "PairRate",
    "Pool",
    "PoolAllocator",
    "StaleEpoch",
    "StateError",
    "TrafficMatrix",
    "assignment_spec",
    "clone_spec",
    "create_backup",
    "dr_failback",
    "dr_failback_stop",
    "dr_failback_sync",
    "dr_failover",
    "dr_test",
    "dr_test_cleanup",
    "dumps",
    "fail_stale_backups",
    "get_backup",
    "get_console",
    "guest_view",
    "hash_token",
    "holder_of",
    "host_view",
    "keys",
    "list_backups",
    "loads",
    "mark_drained",
    "newest_replica",
    "next_epoch",
    "next_free",
    "parse_map",
    "plan_clone",
    "put_console",
    "put_traffic",
    "read_traffic",
    "report_backup",
    "restore_backup",
    "restore_spec",
    "stale_reason",
    "start_drain",
    "stop_for_drain",
    "token_id",
]
