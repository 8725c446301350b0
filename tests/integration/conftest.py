"""Fixtures for integration tests that need real components."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.support.etcd import EtcdCluster, etcd_binary, start_etcd

# -- etcd -------------------------------------------------------------------------------


def require_etcd() -> None:
    """Skip without etcd, except in CI (``CI=true``), where a missing etcd is a failure."""
    if etcd_binary() is not None:
        return
    why = "etcd is not installed (apt-get install etcd-server, or run scripts/setup)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run the etcd tests", pytrace=False)
    pytest.skip(why)


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
