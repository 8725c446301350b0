"""Stateful: profiles allocated, imported and deleted at random keep every pool consistent.

Invariants after every step: no value is held twice, the per-pool keys and the global
MAC/WWN indexes are exactly what the profiles' identities say, and each pool's view
counts its keys.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from podium.model import Kind, Manifest, validate_document
from podium.state import ClusterState, Conflict, keys, loads
from podium.store.memory import MemoryStore

NAMES = st.sampled_from([f"p{i}" for i in range(6)])
MACS = [f"02:00:0a:00:00:{i:02x}" for i in range(6)]


def doc(kind: str, name: str, spec: dict[str, Any]) -> Manifest:
    return validate_document({"kind": kind, "name": name, "spec": spec})


BASE = [
    doc("Pool", "macs", {"type": "mac", "range": f"{MACS[0]}-{MACS[-1]}"}),
    doc(
        "Pool", "wwns", {"type": "wwn", "range": "50:00:00:00:00:00:00:00-50:00:00:00:00:00:00:09"}
    ),
    doc(
        "Pool",
        "ips",
        {
            "type": "ipv4",
            "subnet": "10.0.0.0/29",
            "range": "10.0.0.2-10.0.0.6",
            "gateway": "10.0.0.1",
            "reserved": ["10.0.0.4"],
        },
    ),
    doc("Network", "net", {"vlan": 10, "ip_pool": "ips"}),
]


class Pools(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = MemoryStore()
        self.state = ClusterState(self.store, clock=lambda: 1000.0)
        self.run(self.state.apply(BASE))
        self.worn: set[str] = set()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    def profiles(self) -> dict[str, Any]:
        records = self.run(self.state.list_records(Kind.PROFILE))[0]
        return {r["name"]: r for r in records}

    @rule(name=NAMES, nics=st.integers(1, 2), luns=st.integers(0, 2))
    def allocate(self, name: str, nics: int, luns: int) -> None:
        spec = {
            "nics": [{"network": "net", "mac_pool": "macs"}] * nics,
            "hbas": [{"wwn_pool": "wwns", "luns": [{"volume": f"v{i}"} for i in range(luns)]}],
        }
        exists = name in self.profiles()
        try:
            self.run(self.state.apply([doc("Profile", name, spec)]))
        except Conflict as err:
            assert exists or "exhausted" in str(err), str(err)

    @rule(name=NAMES, mac=st.sampled_from(MACS))
    def import_mac(self, name: str, mac: str) -> None:
        holders = {n["mac"]: p for p, r in self.profiles().items() for n in r["identity"]["nics"]}
        spec = {"nics": [{"network": "net", "mac_pool": "macs", "mac": mac}]}
        try:
            self.run(self.state.apply([doc("Profile", name, spec)]))
        except Conflict as err:
            taken = mac in holders and f"held by Profile {holders[mac]!r}" in str(err)
            assert taken or name in holders.values() or "exhausted" in str(err), str(err)
        else:
            assert holders.get(mac, name) == name  # new, or re-applied unchanged

    @rule(name=NAMES)
    def wear(self, name: str) -> None:
        if name in self.profiles() and name not in self.worn:
            self.run(self.state.apply([doc("Guest", name, {"profile": name})]))
            self.worn.add(name)

    @precondition(lambda self: bool(self.worn))
    @rule(data=st.data())
    def unwear(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.worn)))
        self.run(self.state.delete_object(Kind.GUEST, name))
        self.worn.discard(name)

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        if name not in self.profiles():
            return
        try:
            self.run(self.state.delete_object(Kind.PROFILE, name))
        except Conflict:
            assert name in self.worn
        else:
            assert name not in self.worn

    @invariant()
    def keys_agree_with_identities(self) -> None:
        expected: dict[str, str] = {}  # key -> holder
        values: Counter[str] = Counter()
        for name, record in self.profiles().items():
            ident = record["identity"]
            macs = [n["mac"] for n in ident["nics"]]
            ips = [n["ip"].split("/")[0] for n in ident["nics"]]
            wwns = [w for h in ident["hbas"] for w in (h["wwpn"], h["wwnn"])]
            wwns += [lun["wwn"] for h in ident["hbas"] for lun in h["luns"]]
            values.update(macs + ips + wwns)
            for mac in macs:
                expected[keys.pool_key("macs", mac)] = expected[keys.mac_key(mac)] = name
            for ip in ips:
                expected[keys.pool_key("ips", ip)] = name
            for wwn in wwns:
                expected[keys.pool_key("wwns", wwn)] = expected[keys.wwn_key(wwn)] = name
            assert sorted(record["holds"]) == sorted(k for k, v in expected.items() if v == name)
        assert not [v for v, n in values.items() if n > 1], "a value is held twice"
        found: dict[str, str] = {}
        for prefix in (keys.POOLS, keys.IPAM_MAC, keys.IPAM_WWN):
            for kv in self.run(self.store.range(prefix)).kvs:
                value = loads(kv.value)
                found[kv.key] = value.get("profile") or value["holder"].partition("/")[2]
        assert found == expected
        uses = {kv.key for kv in self.run(self.store.range(keys.PROFILE_USE)).kvs}
        assert uses == {keys.profile_use_key(n) for n in self.worn}

    @invariant()
    def pool_views_count_their_keys(self) -> None:
        views = self.run(self.state.list_objects(Kind.POOL))[0]
        for view in views:
            count = len(self.run(self.store.range(keys.pool_prefix(view["name"]))).kvs)
            status = view["status"]
            assert status["used"] == count and status["free"] == status["size"] - count


TestPools = Pools.TestCase
TestPools.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
