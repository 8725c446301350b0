"""1,000 profiles allocated at once through two podium servers on one real etcd.

Two ``podium server`` processes (one CA, one admin token) share a single-member etcd.
The base pools and network are applied once; then 1,000 single-profile applies are
split over the two servers' HTTP APIs, ``IN_FLIGHT`` at a time per server. An apply
that answers 409 "kept changing" (every retry inside the server lost its race) is sent
again, at most ``RESENDS`` times, and counted. Afterwards, through the API and in the
store: no MAC, WWN or IP in two identities, each pool key names the one profile whose
identity has it, the index keys match the identities, and each pool's ``used`` counts
its values.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from podium.client import AsyncPodiumClient, ClientError
from podium.state import keys, loads
from podium.store.etcd import EtcdStore
from tests.support.etcd import EtcdCluster
from tests.support.shared_servers import config_for, running_servers

pytestmark = [pytest.mark.etcd, pytest.mark.slow]
PROFILES = 1000
SERVERS = 2
IN_FLIGHT = 24  # applies in flight per server
RESENDS = 5  # an apply answered 409 "kept changing" is sent again at most this often
JSON = dict[str, Any]


def doc(kind: str, name: str, spec: JSON) -> JSON:
    return {"kind": kind, "name": name, "spec": spec}


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
HELD_PER_PROFILE = {"macs": 1, "wwns": 3, "ips": 1}  # a WWPN, a WWNN and a LUN WWN each


def profile(i: int) -> JSON:
    spec = {
        "nics": [{"network": "front", "mac_pool": "macs"}],
        "hbas": [{"wwn_pool": "wwns", "luns": [{"volume": "data"}]}],
    }
    return doc("Profile", f"p{i}", spec)


async def apply_all(client: AsyncPodiumClient, numbers: range, resent: Counter[str]) -> None:
    """Apply one profile per number, ``IN_FLIGHT`` at a time; resend a lost race."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with gate:
            for attempt in range(RESENDS + 1):
                try:
                    await client.apply([profile(i)], source="test")
                    return
                except ClientError as err:
                    if err.status != 409 or "kept changing" not in str(err) or attempt == RESENDS:
                        raise
                    resent["kept changing"] += 1

    await asyncio.gather(*(one(i) for i in numbers))


def held_values(identity: JSON) -> dict[str, list[str]]:
    """Per pool, the values an identity holds (IPs without their prefix length)."""
    nics, hbas = identity["nics"], identity["hbas"]
    return {
        "macs": [n["mac"] for n in nics],
        "ips": [n["ip"].split("/")[0] for n in nics],
        "wwns": [w for h in hbas for w in (h["wwpn"], h["wwnn"])]
        + [lun["wwn"] for h in hbas for lun in h["luns"]],
    }


@pytest.mark.timeout(300)
async def test_a_thousand_concurrent_profiles_through_two_servers_never_share_a_value(
    etcd_factory: Callable[[int], EtcdCluster], tmp_path: Path
) -> None:
    cluster = etcd_factory(1)
    with running_servers(tmp_path, SERVERS, store_url=cluster.url) as servers:
        clients = [AsyncPodiumClient(config_for(s), timeout=60) for s in servers]
        store = EtcdStore(cluster.endpoints)
        try:
            await clients[0].apply(BASE, source="test")
            resent: Counter[str] = Counter()
            share = PROFILES // SERVERS
            started = time.monotonic()
            await asyncio.gather(
                *(
                    apply_all(c, range(n * share, (n + 1) * share), resent)
                    for n, c in enumerate(clients)
                )
            )
            elapsed = time.monotonic() - started

            # through the API (``podium get profiles -o json``): every value held once
            items, _ = await clients[1].list("profiles")
            assert sorted(p["name"] for p in items) == sorted(f"p{i}" for i in range(PROFILES))
            holder: dict[str, str] = {}  # pool key -> profile
            everything: Counter[str] = Counter()
            for p in items:
                for pool, values in held_values(p["status"]["identity"]).items():
                    everything.update(values)
                    for v in values:
                        holder[keys.pool_key(pool, v)] = p["name"]
            duplicates = [v for v, n in everything.items() if n > 1]
            assert duplicates == [], f"values held twice: {duplicates[:10]}"
            per_pool = {pool: n * PROFILES for pool, n in HELD_PER_PROFILE.items()}
            assert len(holder) == sum(per_pool.values())

            # in the store: each pool key names its one holder, the index keys match
            pool_keys = (await store.range(keys.POOLS)).kvs
            assert {kv.key for kv in pool_keys} == set(holder)
            for kv in pool_keys:
                assert loads(kv.value)["holder"] == f"Profile/{holder[kv.key]}", kv.key
            for prefix, pool, index in (
                (keys.IPAM_MAC, "macs", keys.mac_key),
                (keys.IPAM_WWN, "wwns", keys.wwn_key),
            ):
                want = {
                    index(k.removeprefix(keys.pool_prefix(pool))): name
                    for k, name in holder.items()
                    if k.startswith(keys.pool_prefix(pool))
                }
                got = {kv.key: loads(kv.value)["profile"] for kv in (await store.range(prefix)).kvs}
                assert got == want, prefix

            # each pool's view counts the values held in it
            pools, _ = await clients[0].list("pools")
            used = {p["name"]: p["status"]["used"] for p in pools}
            assert used == per_pool
            print(
                f"{PROFILES} profiles over {SERVERS} servers in {elapsed:.1f} s; "
                f"{resent['kept changing']} applies resent after 409 kept changing"
            )
        finally:
            await store.close()
            for c in clients:
                await c.close()
