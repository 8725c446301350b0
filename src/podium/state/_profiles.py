"""Pools, Networks and Profiles in the store: identities realised in the apply's transaction.

::

    ClusterState.apply(manifests)      (Pools, then Networks, Profiles, then the rest)
      Network  ──> identity {vlan (fixed | from vlan_pool), subnet, gateway, ip_pool?}
                   (spec.allow: network rules, the one part of a realised spec that may
                   change; both ends need a gateway; peers = the symmetric closure)
      Profile  ──> identity {nics [{network, vlan, mac, ip, gw}], hbas [{wwpn, wwnn,
                   luns [{lun, volume, wwn, serial, size_gib}]}], boot}; record["holds"]
      Guest(profile) ──> record nics/hbas/boot = the profile's identity
                         Compare(/podium/profileuse/<profile>, version = 0) + Put({guest, uid})
    (views, network rules and deletes: :mod:`podium.state._identities`; a delete marks
     a Pool or Network ``deleting`` first, so an apply that read it before fails its
     compare and one after sees the mark)

Vocabulary: a *reference* is a name another object of the kind must answer to (a
Network's ``ip_pool``, a NIC's ``network``); every reference read from the store adds
a compare on its mod revision, so a delete racing the apply fails one of them. *holds*:
the pool and index keys a record holds, deleted with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podium.model import Kind, Manifest, PoolType, lun_serial, parse_value, wear_qos
from podium.state import _cluster, keys
from podium.state._pools import Holder, Pool, PoolAllocator
from podium.store import Compare, Delete, Op, Put

JSON = dict[str, Any]
KINDS = (Kind.POOL, Kind.NETWORK, Kind.PROFILE)
_ORDER = {Kind.POOL: 0, Kind.NETWORK: 1, Kind.PROFILE: 2}
MAX_SPREAD = 4096


def in_order(manifests: Sequence[Manifest]) -> list[Manifest]:
    """Pools, then Networks, then Profiles, then everything else (stable otherwise)."""
    return sorted(manifests, key=lambda m: _ORDER.get(m.kind, 3))


def _fixed(manifests: Sequence[Manifest]) -> list[tuple[PoolType, int]]:
    out: list[tuple[PoolType, int]] = []
    for m in manifests:
        if m.kind is not Kind.PROFILE:
            continue
        for nic in m.spec.get("nics", []):
            if nic.get("mac"):
                out.append((PoolType.MAC, int(nic["mac"].replace(":", ""), 16)))
            if nic.get("ip"):
                kind = PoolType.IPV6 if ":" in nic["ip"] else PoolType.IPV4
                out.append((kind, parse_value(kind, nic["ip"])))
        for hba in m.spec.get("hbas", []):
            wwns = [hba[w] for w in ("wwpn", "wwnn") if hba.get(w)]
            out += [(PoolType.WWN, parse_value(PoolType.WWN, w)) for w in wwns]
    return out


class Realiser:
    """Realises the Networks, Profiles and profile-wearing Guests of one apply attempt."""

    def __init__(
        self, state: _cluster.ClusterState, manifests: Sequence[Manifest], *, attempt: int = 0
    ) -> None:
        self._state = state
        spread = 0 if attempt == 0 else min(MAX_SPREAD, 8 << attempt)
        self.alloc = PoolAllocator(state.store, spread=spread, fixed=_fixed(manifests))
        self._here: dict[tuple[Kind, str], JSON] = {}  # records this apply writes or keeps
        self._compared: set[str] = set()
        self._worn: dict[str, str] = {}  # profile -> guest, in this apply
        # Networks of this apply, so a rule may name one applied later in the same file
        self._applied = {m.name: m.spec for m in manifests if m.kind is Kind.NETWORK}

    def note(self, record: JSON) -> None:
        """``record`` is written (or kept, already compared) by this apply."""
        key = keys.object_key(Kind(record["kind"]), record["name"])
        self._here[(Kind(record["kind"]), record["name"])] = record
        self._compared.add(key)

    async def _ref(self, kind: Kind, name: str, by: str, compares: list[Compare]) -> JSON:
        if (kind, name) in self._here:
            return self._here[(kind, name)]
        key = keys.object_key(kind, name)
        kv = await self._state.store.get(key)
        if kv is None:
            raise _cluster.Conflict(
                f"{by} names {kind.value} {name!r}, which does not exist: "
                f"apply the {kind.value} first (or in the same file)"
            )
        record: JSON = _cluster.loads(kv.value)
        if record.get("deleting"):
            raise _cluster.Conflict(f"{by} names {kind.value} {name!r}, which is being deleted")
        if key not in self._compared:
            compares.append(Compare(key, "mod", "=", kv.mod_revision))
            self._compared.add(key)
        self._here[(kind, name)] = record
        return record

    async def _pool(
        self, name: str, types: Sequence[PoolType], by: str, compares: list[Compare]
    ) -> Pool:
        record = await self._ref(Kind.POOL, name, by, compares)
        pool = Pool.of(name, record["spec"])
        if pool.type not in types:
            want = " or ".join(t.value for t in types)
            raise _cluster.Conflict(
                f"{by} names Pool {name!r} of type {pool.type.value}; it needs a {want} pool"
            )
        return pool

    async def realise(self, record: JSON, compares: list[Compare], ops: list[Op]) -> None:
        """Set a new Network's or Profile's ``identity`` and ``holds`` (Pools have none)."""
        kind = Kind(record["kind"])
        if kind is Kind.NETWORK:
            await self._network(record, compares, ops)
        elif kind is Kind.PROFILE:
            await self._profile(record, compares, ops)

    async def _network(self, record: JSON, compares: list[Compare], ops: list[Op]) -> None:
        spec, name = record["spec"], record["name"]
        by = f"Network {name!r}"
        identity: JSON = {"vlan": spec.get("vlan"), "subnet": None, "gateway": None}
        start = len(ops)
        if spec.get("vlan_pool"):
            pool = await self._pool(spec["vlan_pool"], [PoolType.VLAN], by, compares)
            holder = Holder("Network", name, record["uid"], "vlan")
            identity["vlan"] = int(await self.alloc.take(pool, holder, compares, ops))
            identity["vlan_pool"] = pool.name
        if spec.get("ip_pool"):
            ipool = await self._pool(spec["ip_pool"], [PoolType.IPV4, PoolType.IPV6], by, compares)
            identity.update(subnet=ipool.subnet, gateway=ipool.gateway, ip_pool=ipool.name)
        record["identity"] = identity
        record["holds"] = _keys_put(ops[start:])
        await self._check_allow(name, spec, identity, compares)

    async def _check_allow(
        self, name: str, spec: JSON, identity: JSON, compares: list[Compare]
    ) -> None:
        """Raise ``Conflict`` unless each network ``spec.allow`` names exists and both it
        and this one have a gateway (the hosts route between gateways)."""
        allow = list(spec.get("allow") or [])
        if not allow:
            return
        if name in allow:
            raise _cluster.Conflict(
                f"Network {name!r}: allow names the network itself; guests on one network "
                "always reach each other: leave it out"
            )
        fix = "an ip_pool whose Pool has a gateway (the hosts route between gateways)"
        if not identity.get("gateway"):
            raise _cluster.Conflict(
                f"Network {name!r} allows {', '.join(allow)} but has no gateway: give it {fix}"
            )
        by = f"Network {name!r} allow"
        for peer in allow:
            if not await self._gateway_of(peer, by, compares):
                raise _cluster.Conflict(
                    f"Network {name!r} allows Network {peer!r}, which has no gateway: "
                    f"give {peer!r} {fix}"
                )

    async def _gateway_of(self, network: str, by: str, compares: list[Compare]) -> str | None:
        """The gateway of ``network``: realised, or of a network this apply creates."""
        if (Kind.NETWORK, network) not in self._here and network in self._applied:
            kv = await self._state.store.get(keys.object_key(Kind.NETWORK, network))
            if kv is None:  # created later in this apply: its pool tells the gateway
                ip_pool = self._applied[network].get("ip_pool")
                if not ip_pool:
                    return None
                types = [PoolType.IPV4, PoolType.IPV6]
                return (await self._pool(ip_pool, types, by, compares)).gateway
        record = await self._ref(Kind.NETWORK, network, by, compares)
        gateway: str | None = (record.get("identity") or {}).get("gateway")
        return gateway

    async def _profile(self, record: JSON, compares: list[Compare], ops: list[Op]) -> None:
        spec, name, uid = record["spec"], record["name"], record["uid"]
        start = len(ops)
        nics: list[JSON] = []
        for i, nic in enumerate(spec.get("nics", [])):
            by = f"Profile {name!r} nics[{i}]"
            net = await self._ref(Kind.NETWORK, nic["network"], by, compares)
            mac_pool = nic.get("mac_pool")
            pool = await self._pool(mac_pool, [PoolType.MAC], by, compares) if mac_pool else None
            holder = Holder("Profile", name, uid, f"nic {i} mac")
            if nic.get("mac"):
                mac = await self.alloc.claim(
                    pool or PoolType.MAC, nic["mac"], holder, compares, ops
                )
            else:
                assert pool is not None  # the manifest needs mac or mac_pool
                mac = await self.alloc.take(pool, holder, compares, ops)
            holder = Holder("Profile", name, uid, f"nic {i} ip")
            ip, gw = await self._nic_ip(net, nic, holder, compares, ops, by=by)
            vlan = net["identity"]["vlan"]
            nics.append({"network": nic["network"], "vlan": vlan, "mac": mac, "ip": ip, "gw": gw})
        hbas: list[JSON] = []
        for j, hba in enumerate(spec.get("hbas", [])):
            by = f"Profile {name!r} hbas[{j}]"
            wpool = None
            if hba.get("wwn_pool"):
                wpool = await self._pool(hba["wwn_pool"], [PoolType.WWN], by, compares)
            names: JSON = {}
            for part in ("wwpn", "wwnn"):
                holder = Holder("Profile", name, uid, f"hba {j} {part}")
                if hba.get(part):
                    names[part] = await self.alloc.claim(
                        wpool or PoolType.WWN, hba[part], holder, compares, ops
                    )
                else:
                    assert wpool is not None  # the manifest needs wwn_pool or both names
                    names[part] = await self.alloc.take(wpool, holder, compares, ops)
            luns: list[JSON] = []
            for k, lun in enumerate(hba.get("luns", [])):
                assert wpool is not None  # the manifest needs wwn_pool for LUNs
                holder = Holder("Profile", name, uid, f"hba {j} lun {k}")
                wwn = await self.alloc.take(wpool, holder, compares, ops)
                luns.append(
                    {
                        "lun": k,
                        "volume": f"{name}/{lun['volume']}",
                        "wwn": wwn,
                        "serial": lun_serial(name, lun["volume"]),
                        "size_gib": lun["size_gib"],
                    }
                )
            hbas.append({**names, "luns": luns})
        record["identity"] = {"nics": nics, "hbas": hbas, "boot": list(spec.get("boot", ["disk"]))}
        record["holds"] = _keys_put(ops[start:])

    async def _nic_ip(
        self,
        net: JSON,
        nic: JSON,
        holder: Holder,
        compares: list[Compare],
        ops: list[Op],
        *,
        by: str,
    ) -> tuple[str | None, str | None]:
        pool_name = net["identity"].get("ip_pool")
        if not pool_name:
            if nic.get("ip"):
                raise _cluster.Conflict(
                    f"{by}: Network {nic['network']!r} has no ip_pool, so ip {nic['ip']} "
                    "cannot be tracked: give the Network an ip_pool, or leave ip out"
                )
            return None, None
        pool = await self._pool(pool_name, [PoolType.IPV4, PoolType.IPV6], by, compares)
        if nic.get("ip"):
            addr = await self.alloc.claim(pool, nic["ip"], holder, compares, ops)
        else:
            addr = await self.alloc.take(pool, holder, compares, ops)
        return f"{addr}/{pool.prefix}", pool.gateway

    async def reconfigure(self, current: JSON, record: JSON, compares: list[Compare]) -> None:
        """A changed spec of an existing Pool, Network or Profile: what may change, changes.

        Raises :class:`~podium.state.Conflict` for a change to a realised identity.
        """
        kind, name, old, new = Kind(record["kind"]), record["name"], current["spec"], record["spec"]
        if old == new:
            return  # only a delete's mark is cleared
        if kind is Kind.POOL:
            await self._repool(name, old, new)
        elif kind is Kind.NETWORK:
            if _without_allow(old) != _without_allow(new):
                raise _cluster.Conflict(
                    f"Network {name!r} is realised (VLAN {current['identity']['vlan']}): its "
                    "vlan, vlan_pool and ip_pool cannot change (allow can); delete it (and the "
                    "profiles on it) and apply it again"
                )
            await self._check_allow(name, new, current["identity"], compares)
        elif kind is Kind.PROFILE:
            for part in ("nics", "hbas"):
                if old.get(part, []) != new.get(part, []):
                    raise _cluster.Conflict(
                        f"Profile {name!r} is realised: its {part} cannot change in place; "
                        "delete the profile and apply it again, or clone it"
                    )
            use = await self._state.store.get(keys.profile_use_key(name))
            if old.get("boot") != new.get("boot") and use is not None:
                raise _cluster.Conflict(
                    f"Profile {name!r} is worn by Guest "
                    f"{_cluster.loads(use.value)['guest']!r}: change its boot order while no "
                    "guest wears it"
                )
            record["identity"] = {**current["identity"], "boot": list(new.get("boot", ["disk"]))}

    async def _repool(self, name: str, old: JSON, new: JSON) -> None:
        for part in ("type", "subnet", "gateway"):
            if old.get(part) != new.get(part):
                raise _cluster.Conflict(
                    f"Pool {name!r}: {part} cannot change ({old.get(part)} -> "
                    f"{new.get(part)}); create a new pool instead"
                )
        pool = Pool.of(name, new)
        for value in sorted(await self.alloc.used(Pool.of(name, old))):
            if not pool.first <= value <= pool.last or value in pool.excluded:
                raise _cluster.Conflict(
                    f"Pool {name!r}: {pool.text(value)} is allocated and would fall outside "
                    "the new range (or be reserved): keep it inside, or release it first"
                )

    async def rehome(
        self,
        record: JSON,
        networks: Mapping[str, str],
        ips: Mapping[str, str],
        compares: list[Compare],
        ops: list[Op],
    ) -> Rehomed:
        """Move a realised profile's NICs to other networks (a site failover); return it.

        Each NIC on a network ``networks`` names moves there (or stays, if not named) and
        takes that network's VLAN, subnet and gateway; its IP is ``ips[old]`` if given,
        else the old one if the new network's pool holds it and it is free, else a free
        one from that pool. The old IP's pool key is released in the same transaction.
        MACs, WWPNs, WWNNs, LUN WWNs and serials are kept. The caller adds the compare
        on the profile's own key and puts ``Rehomed.record``. Raises ``Conflict``.
        """
        name, identity = record["name"], record["identity"]
        spec_nics = [dict(n) for n in record["spec"].get("nics", [])]
        holds = list(record.get("holds", []))
        nics: list[JSON] = []
        moved: dict[str, str] = {}
        readdressed: dict[str, str] = {}
        for i, nic in enumerate(identity["nics"]):
            old_net = nic["network"]
            new_net = networks.get(old_net, old_net)
            old_ip = nic["ip"].split("/")[0] if nic.get("ip") else None
            wanted = ips.get(old_ip) if old_ip else None
            if new_net == old_net and wanted in (None, old_ip):
                nics.append(nic)
                continue
            by = f"Profile {name!r} nics[{i}] (moving to Network {new_net!r})"
            net = await self._ref(Kind.NETWORK, new_net, by, compares)
            old_key = _pool_key_of(holds, old_ip)
            start = len(ops)
            ip, gw = await self._new_ip(
                record, i, net, old=(old_ip, old_key), wanted=wanted, compares=compares, ops=ops
            )
            new_ip = ip.split("/")[0] if ip else None
            pool_name = net["identity"].get("ip_pool")
            kept = new_ip is not None and old_key == keys.pool_key(str(pool_name), new_ip)
            if old_key is not None and not kept:
                ops.append(Delete(old_key))
                holds.remove(old_key)
            holds += _keys_put(ops[start:])
            nics.append({**nic, "network": new_net, "vlan": net["identity"]["vlan"],
                         "ip": ip, "gw": gw})  # fmt: skip
            if i < len(spec_nics):
                spec_nics[i]["network"] = new_net
                if "ip" in spec_nics[i]:  # a fixed address follows the NIC (or goes)
                    spec_nics[i].pop("ip")
                    if new_ip:
                        spec_nics[i]["ip"] = new_ip
            if new_net != old_net:
                moved[old_net] = new_net
            if old_ip and new_ip != old_ip:
                readdressed[old_ip] = new_ip or ""
        spec = {**record["spec"], "nics": spec_nics} if "nics" in record["spec"] else record["spec"]
        new = {**record, "spec": spec, "identity": {**identity, "nics": nics}, "holds": holds}
        return Rehomed(new, moved, readdressed)

    async def _new_ip(
        self,
        record: JSON,
        i: int,
        net: JSON,
        *,
        old: tuple[str | None, str | None],
        wanted: str | None,
        compares: list[Compare],
        ops: list[Op],
    ) -> tuple[str | None, str | None]:
        """The IP (``ADDR/PREFIX``) and gateway of NIC ``i`` on network ``net``; ``old``:
        the NIC's address now and the pool key that holds it."""
        old_ip, old_key = old
        by = f"Profile {record['name']!r} nics[{i}] on Network {net['name']!r}"
        pool_name = net["identity"].get("ip_pool")
        if not pool_name:
            if wanted:
                raise _cluster.Conflict(
                    f"{by}: the map gives it IP {wanted}, but the network has no ip_pool: "
                    "give the Network an ip_pool, or drop the address from the map's ips"
                )
            return None, None
        pool = await self._pool(pool_name, [PoolType.IPV4, PoolType.IPV6], by, compares)
        holder = Holder("Profile", record["name"], record["uid"], f"nic {i} ip")
        if wanted:
            try:
                addr = await self.alloc.claim(pool, wanted, holder, compares, ops)
            except ValueError as err:
                raise _cluster.Conflict(f"{by}: mapped IP {wanted}: {err}") from err
        elif old_ip and old_key == keys.pool_key(pool.name, old_ip):
            addr = old_ip  # the same pool already holds it for this profile
        elif old_ip and await self._free_in(pool, old_ip):
            addr = await self.alloc.claim(pool, old_ip, holder, compares, ops)
        else:
            addr = await self.alloc.take(pool, holder, compares, ops)
        return f"{addr}/{pool.prefix}", pool.gateway

    async def _free_in(self, pool: Pool, addr: str) -> bool:
        """``addr`` lies in ``pool`` (not reserved) and nobody holds it there."""
        try:
            value = parse_value(pool.type, addr)
        except ValueError:
            return False  # another family
        if not pool.first <= value <= pool.last or value in pool.excluded:
            return False
        return value not in await self.alloc.used(pool)

    async def wear(self, record: JSON, compares: list[Compare], ops: list[Op]) -> None:
        """A new guest wears its spec's profile: copy the identity, take the profileuse key."""
        name, profile = record["name"], record["spec"]["profile"]
        prof = await self._ref(Kind.PROFILE, profile, f"Guest {name!r}", compares)
        key = keys.profile_use_key(profile)
        user = self._worn.get(profile)
        if user is None:
            kv = await self._state.store.get(key)
            user = str(_cluster.loads(kv.value)["guest"]) if kv is not None else None
        if user is not None:
            raise _cluster.Conflict(
                f"Profile {profile!r} is used by Guest {user!r}: a profile serves one guest; "
                f"delete that guest first, or clone the profile for {name!r}"
            )
        self._worn[profile] = name
        compares.append(Compare(key, "version", "=", 0))
        ops.append(Put(key, _cluster.dumps({"guest": name, "uid": record["uid"]})))
        identity = prof["identity"]
        record.update(nics=identity["nics"], hbas=identity["hbas"], boot=identity["boot"])
        if prof["spec"].get("qos"):  # kept: a re-apply of the guest gets the same class
            record["class_qos"] = prof["spec"]["qos"]
        record["spec"] = worn_spec(record, record["spec"])


def worn_spec(record: JSON, spec: JSON) -> JSON:
    """``spec`` (as declared) under the QoS class the guest ``record`` took from its
    profile when it was created (``class_qos``), unless it declares a qos of its own.
    Raises :class:`~podium.state.Conflict` if a limit of the class is below its request."""
    try:
        return wear_qos(spec, record.get("class_qos"))
    except ValueError as err:
        raise _cluster.Conflict(
            f"Guest {record['name']!r} cannot wear Profile {spec.get('profile')!r}: {err} "
            "(raise the class's limit, or give the guest a qos of its own)"
        ) from err


def check_rewear(current: JSON, record: JSON) -> None:
    """An existing guest keeps the profile it was created with (409 otherwise)."""
    old, new = current["spec"].get("profile"), record["spec"].get("profile")
    if old != new:
        raise _cluster.Conflict(
            f"Guest {record['name']!r}: its profile cannot change ({old} -> {new}); "
            "delete the guest and apply it again"
        )


@dataclass(frozen=True, slots=True)
class Rehomed:
    """A profile moved to other networks: its new record, and what changed."""

    record: JSON
    networks: dict[str, str]  # old network -> new, for the NICs that moved
    ips: dict[str, str]  # old address -> new ("" : none on the new network)


def _without_allow(spec: JSON) -> JSON:
    return {k: v for k, v in spec.items() if k != "allow"}


def _pool_key_of(holds: Sequence[str], addr: str | None) -> str | None:
    """The pool key among ``holds`` that holds IP ``addr`` (MAC and WWN keys never match)."""
    if addr is None:
        return None
    found = [k for k in holds if k.startswith(keys.POOLS) and k.endswith("/" + addr)]
    return found[0] if found else None


def _keys_put(ops: Sequence[Op]) -> list[str]:
    return [op.key for op in ops if isinstance(op, Put)]
