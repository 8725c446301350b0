"""Backends by URL scheme: an explicit registry, never discovered by scanning."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from podium.store._protocol import Store
from podium.store.errors import InvalidStoreURL

StoreFactory = Callable[[str], Store]


def _sqlite(url: str) -> Store:
    from podium.store.sqlite import SQLiteStore  # noqa: PLC0415  (keeps etcd/grpc off sqlite paths)

    return SQLiteStore.from_url(url)


def _etcd(url: str) -> Store:
    from podium.store.etcd import EtcdStore  # noqa: PLC0415

    return EtcdStore.from_url(url)


def _memory(url: str) -> Store:
    from podium.store.memory import MemoryStore  # noqa: PLC0415

    return MemoryStore()


BACKENDS: dict[str, StoreFactory] = {"sqlite": _sqlite, "etcd": _etcd, "memory": _memory}

EXAMPLES = "sqlite:///var/lib/podium/podium.db or etcd://127.0.0.1:2379[,host:2379...]"


def open_store(url: str) -> Store:
    """Open the store a ``--store`` URL names. Raises ``InvalidStoreURL`` with a fix-it hint.

    Opening does not contact the backend; the first operation does (and raises
    ``StoreUnavailable`` if it does not answer).
    """
    scheme = urlsplit(url).scheme
    factory = BACKENDS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(BACKENDS))
        raise InvalidStoreURL(
            f"unknown store URL {url!r}: the scheme must be one of {known} (e.g. {EXAMPLES})"
        )
    return factory(url)
