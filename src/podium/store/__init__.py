"""State store: one protocol, several backends.

::

    caller ──> Store protocol ──┬── SQLiteStore  (sqlite:///path: embedded default, WAL + fsync)
                                ├── EtcdStore    (etcd://h:p[,h:p]: a real etcd cluster, via aetcd)
                                └── MemoryStore  (memory://: the reference model, for unit tests)

Every backend passes the same contract suite (``tests/integration/store_contract``).
"""

from podium.store._priority import bulk_writes
from podium.store._protocol import (
    Compare,
    Delete,
    Event,
    EventType,
    Get,
    KeyValue,
    Lease,
    Op,
    OpResult,
    Put,
    RangeResult,
    Store,
    StoreStatus,
    TxnResult,
)
from podium.store._registry import BACKENDS, open_store
from podium.store.errors import (
    Compacted,
    InvalidRequest,
    InvalidStoreURL,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "BACKENDS",
    "Compacted",
    "Compare",
    "Delete",
    "Event",
    "EventType",
    "Get",
    "InvalidRequest",
    "InvalidStoreURL",
    "KeyValue",
    "Lease",
    "LeaseNotFound",
    "Op",
    "OpResult",
    "Put",
    "RangeResult",
    "Store",
    "StoreError",
    "StoreStatus",
    "StoreUnavailable",
    "TxnResult",
    "bulk_writes",
    "open_store",
]
