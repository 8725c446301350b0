"""Fixtures for integration tests that need real components."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.components import missing_component
from tests.support.etcd import EtcdCluster, etcd_binary, start_etcd

# -- etcd -------------------------------------------------------------------------------


def require_etcd() -> None:
    """Skip without etcd, except in CI (``CI=true``), where a missing etcd is a failure."""
    if etcd_binary() is not None:
        return
    missing_component("etcd is not installed (apt-get install etcd-server, or run scripts/setup)")


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """One etcd member shared by the session (data on tmpfs); tests wipe it after use."""
    require_etcd()
    cluster = start_etcd(members=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_factory() -> Iterator[Callable[[int], EtcdCluster]]:
    """Start private clusters (``etcd_factory(3)``); all are killed after the test."""
    require_etcd()
    started: list[EtcdCluster] = []

    def start(members: int = 1) -> EtcdCluster:
        cluster = start_etcd(members=members)
        started.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
