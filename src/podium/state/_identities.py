"""Pools, Networks and Profiles as the API shows them, their deletes, and network rules.

::

    views(kind, records)   Pool: {size, used, free}; Network: {identity, profiles, peers};
                           Profile: {identity, guest, host, site, state, protection?}
    rule_peers(networks)   each network's peers: A and B when either allows the other
    routed_networks()      what every host routes (GET /api/v1/agent/{host}/networks)
    delete(kind, name)     a Profile releases every key it holds; a Pool or Network is
                           marked ``deleting``, its users counted, then deleted or unmarked

Realising them (the apply) is :mod:`podium.state._profiles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from podium.model import Kind
from podium.state import _cluster, _pools, keys
from podium.state._pools import Pool
from podium.store import Compare, Delete, Op, Put

JSON = dict[str, Any]


def rule_peers(networks: Sequence[JSON]) -> dict[str, list[str]]:
    """Each network's peers: the networks its guests may reach through the hosts' routers.

    Symmetric: A and B are peers when either allows the other. Only networks that exist,
    are not being deleted and have a gateway count (an apply refuses a rule without
    gateways; a deleted network's name left in another's ``allow`` is ignored).
    """
    routable = {
        n["name"]
        for n in networks
        if not n.get("deleting") and (n.get("identity") or {}).get("gateway")
    }
    peers: dict[str, set[str]] = {name: set() for name in routable}
    for n in networks:
        if n["name"] not in routable:
            continue
        for other in n["spec"].get("allow") or []:
            if other in routable and other != n["name"]:
                peers[n["name"]].add(other)
                peers[other].add(n["name"])
    return {name: sorted(p) for name, p in sorted(peers.items())}


async def routed_networks(state: _cluster.ClusterState) -> tuple[list[JSON], int]:
    """What every host routes (``GET /api/v1/agent/{host}/networks``): each network with at
    least one peer, ``{name, vlan, subnet, gateway, peers}``, and the revision read at."""
    records, revision = await state.list_records(Kind.NETWORK)
    by_name = {r["name"]: r for r in records}
    out = []
    for name, peers in rule_peers(records).items():
        if peers:
            identity = by_name[name]["identity"]
            out.append(
                {
                    "name": name,
                    "vlan": identity["vlan"],
                    "subnet": identity["subnet"],
                    "gateway": identity["gateway"],
                    "peers": peers,
                }
            )
    return out, revision


# -- deletes -----------------------------------------------------------------------------


async def delete(
    state: _cluster.ClusterState, kind: Kind, name: str, guard: Sequence[Compare]
) -> int:
    """Delete a Pool, Network or Profile that nothing uses; release what it holds.

    Raises :class:`~podium.state.NotFound`, or :class:`~podium.state.Conflict` naming
    a user and the fix.
    """
    key = keys.object_key(kind, name)
    record, kv = await state._get_json(key)
    if kv is None:
        raise _cluster.NotFound(f"{kind.value} {name!r} not found")
    compares = [Compare(key, "mod", "=", kv.mod_revision), *guard]
    if kind is Kind.PROFILE:
        use, _ = await state._get_json(keys.profile_use_key(name))
        if use is not None:
            raise _cluster.Conflict(
                f"Profile {name!r} is used by Guest {use['guest']!r}: delete the guest first"
            )
        compares.append(Compare(keys.profile_use_key(name), "version", "=", 0))
    else:  # mark it, so no apply that has not read it yet can start using it
        marked = {**record, "deleting": True}
        result = await state.store.txn(compares, [Put(key, _cluster.dumps(marked))])
        if not result.succeeded:
            await _cluster.check_guard(state.store, guard, f"deleting {kind.value} {name!r}")
            raise _cluster.Conflict(f"{kind.value} {name!r} changed while deleting it; try again")
        compares = [Compare(key, "mod", "=", result.revision), *guard]
        user = await _user(state, kind, name)
        if user is not None:
            await state.store.txn(compares, [Put(key, _cluster.dumps(record))])  # unmark
            raise _cluster.Conflict(f"{kind.value} {name!r} is used by {user}")
    ops: list[Op] = [Delete(key), *(Delete(k) for k in record.get("holds", []))]
    result = await state.store.txn(compares, ops)
    if not result.succeeded:
        await _cluster.check_guard(state.store, guard, f"deleting {kind.value} {name!r}")
        raise _cluster.Conflict(f"{kind.value} {name!r} changed while deleting it; try again")
    return result.revision


async def _user(state: _cluster.ClusterState, kind: Kind, name: str) -> str | None:
    """Who uses a Pool or Network, with the fix; ``None`` if nobody does."""
    if kind is Kind.POOL:
        held = await state.store.range(keys.pool_prefix(name), limit=1)
        if held.kvs:
            who = _pools.holder_of(_cluster.loads(held.kvs[0].value))
            return f"{who} (and maybe others): delete what holds its values first"
        for net in (await state.list_records(Kind.NETWORK))[0]:
            if name in (net["spec"].get("ip_pool"), net["spec"].get("vlan_pool")):
                return f"Network {net['name']!r}: delete that network first"
        return None
    for prof in (await state.list_records(Kind.PROFILE))[0]:
        if any(n.get("network") == name for n in prof["spec"].get("nics", [])):
            return f"Profile {prof['name']!r}: delete that profile (or its NICs' use) first"
    return None


# -- views -------------------------------------------------------------------------------


async def views(state: _cluster.ClusterState, kind: Kind, records: list[JSON]) -> list[JSON]:
    """API views of Pools (size, used, free), Networks (identity, profiles, rule peers) and Profiles
    (identity, the guest wearing it, where that guest runs and its state; a protected
    profile's replication: ``protection``)."""
    out = []
    if kind is Kind.POOL:
        used: dict[str, int] = {}
        for kv in (await state.store.range(keys.POOLS)).kvs:
            held_in = kv.key[len(keys.POOLS) :].partition("/")[0]
            used[held_in] = used.get(held_in, 0) + 1
        for r in records:
            pool = Pool.of(r["name"], r["spec"])
            n = used.get(r["name"], 0)
            status: JSON = {"type": pool.type.value, "size": pool.size, "used": n}
            status["free"] = pool.size - n
            out.append(_status(r, status))
    elif kind is Kind.NETWORK:
        profiles = (await state.list_records(Kind.PROFILE))[0]
        peers = rule_peers((await state.list_records(Kind.NETWORK))[0])
        for r in records:
            count = sum(
                any(n.get("network") == r["name"] for n in p["spec"].get("nics", []))
                for p in profiles
            )
            status = {"identity": r.get("identity"), "profiles": count}
            status["peers"] = peers.get(r["name"], [])
            out.append(_status(r, status))
    else:
        uses = await state._map(keys.PROFILE_USE)
        guests = {g["name"]: g for g in (await state.list_records(Kind.GUEST))[0]}
        wearers = [guests[u["guest"]] for u in uses.values() if u["guest"] in guests]
        shown = {g["name"]: g for g in await state._guest_views(wearers)}
        sites = {
            h["name"]: (h["spec"].get("labels") or {}).get("site")
            for h in (await state.list_records(Kind.HOST))[0]
        }
        for r in records:
            guest = (uses.get(r["name"]) or {}).get("guest")
            view = shown.get(guest or "")
            host = view["status"]["host"] if view else None
            state_now = view["status"]["state"] if view else None
            status = {"identity": r.get("identity"), "guest": guest, "host": host}
            status["site"] = sites.get(host) if host else None  # where the identity lives
            status["state"] = state_now
            if r["spec"].get("protection"):
                wearer = guests.get(guest or "")
                status["protection"] = await _protection(state, r["spec"]["protection"], wearer)
            out.append(_status(r, status))
    return out


async def _protection(state: _cluster.ClusterState, protection: JSON, wearer: JSON | None) -> JSON:
    """``{rpo_s, last_point, lag_s, within_rpo}`` from the wearer's newest completed replica
    (its ``created``: the consistency point). No replica yet: no point, not within."""
    rpo = int(protection["rpo_s"])
    point: float | None = None
    if wearer is not None:
        res = await state.store.range(keys.backup_prefix(wearer["name"]))
        points = [
            float(b["created"])
            for b in (_cluster.loads(kv.value) for kv in res.kvs)
            if b.get("uid") == wearer["uid"]
            and b.get("target") == "replica"
            and b.get("state") == "completed"
        ]
        point = max(points, default=None)
    lag = None if point is None else max(0.0, state.now() - point)
    return {
        "rpo_s": rpo,
        "last_point": point,
        "lag_s": lag,
        "within_rpo": lag is not None and lag <= rpo,
    }


def _status(record: JSON, status: JSON) -> JSON:
    view = _cluster._public(record)
    if record.get("deleting"):
        status = {**status, "deleting": True}
    view["status"] = status
    return view
