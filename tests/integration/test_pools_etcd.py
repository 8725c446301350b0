"""1,000 profiles allocated at once through two servers' stores on one real etcd.

Two ClusterStates, each over its own etcd client, race 500 profile applies each (32
in flight per client). Every value must end up held exactly once: no MAC, WWN or IP in
two identities, and each pool key naming the one profile whose identity has it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from podium.model import Kind, Manifest, validate_document
from podium.state import ClusterState, keys, loads
from podium.store.etcd import EtcdStore
from tests.support.etcd import EtcdCluster

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
PROFILES = 1000
IN_FLIGHT = 32  # per client


def doc(kind: str, name: str, spec: dict[str, Any]) -> Manifest:
    return validate_document({"kind": kind, "name": name, "spec": spec})


BASE = [
    doc("Pool", "macs", {"type": "mac", "range": "02:00:0a:00:00:00-02:00:0a:00:ff:ff"}),
    doc(
        "Pool", "wwns", {"type": "wwn", "range": "50:01:43:80:00:00:00:00-50:01:43:80:00:00:ff:ff"}
    ),
    doc(
        "Pool",
        "ips",
        {
            "type": "ipv4",
            "subnet": "10.1.0.0/20",
            "range": "10.1.0.10-10.1.15.250",
            "gateway": "10.1.0.1",
        },
    ),
    doc("Network", "front", {"vlan": 100, "ip_pool": "ips"}),
]


def profile(i: int) -> Manifest:
    spec = {
        "nics": [{"network": "front", "mac_pool": "macs"}],
        "hbas": [{"wwn_pool": "wwns", "luns": [{"volume": "data"}]}],
    }
    return doc("Profile", f"p{i}", spec)


@pytest.mark.timeout(600)
async def test_a_thousand_concurrent_profiles_never_share_a_value(
    etcd_factory: Callable[[int], EtcdCluster],
) -> None:
    cluster = etcd_factory(1)
    stores = [EtcdStore(cluster.endpoints), EtcdStore(cluster.endpoints)]
    try:
        states = [ClusterState(s) for s in stores]
        await states[0].apply(BASE)

        async def apply_all(state: ClusterState, numbers: range) -> None:
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def one(i: int) -> None:
                async with gate:
                    await state.apply([profile(i)])

            await asyncio.gather(*(one(i) for i in numbers))

        started = time.monotonic()
        half = PROFILES // 2
        await asyncio.gather(
            apply_all(states[0], range(half)), apply_all(states[1], range(half, PROFILES))
        )
        elapsed = time.monotonic() - started

        records = (await states[1].list_records(Kind.PROFILE))[0]
        assert len(records) == PROFILES
        values: Counter[str] = Counter()
        owner: dict[str, str] = {}
        for r in records:
            ident = r["identity"]
            held = [n["mac"] for n in ident["nics"]] + [
                n["ip"].split("/")[0] for n in ident["nics"]
            ]
            held += [w for h in ident["hbas"] for w in (h["wwpn"], h["wwnn"])]
            held += [lun["wwn"] for h in ident["hbas"] for lun in h["luns"]]
            values.update(held)
            for key in r["holds"]:
                owner[key] = r["name"]
        duplicates = [v for v, n in values.items() if n > 1]
        assert duplicates == [], f"values held twice: {duplicates[:10]}"
        assert len(values) == PROFILES * 5  # a MAC, an IP, a WWPN, a WWNN, a LUN WWN each
        pool_keys = (await stores[0].range(keys.POOLS)).kvs
        assert len(pool_keys) == PROFILES * 5
        for kv in pool_keys:
            holder = loads(kv.value)["holder"]
            assert holder == f"Profile/{owner[kv.key]}", kv.key
        for prefix, count in ((keys.IPAM_MAC, PROFILES), (keys.IPAM_WWN, PROFILES * 3)):
            index = (await stores[1].range(prefix)).kvs
            assert len(index) == count
            assert all(loads(kv.value)["profile"] == owner[kv.key] for kv in index)
        print(f"{PROFILES} profiles over 2 clients in {elapsed:.1f} s")
    finally:
        for s in stores:
            await s.close()
