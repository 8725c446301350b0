"""What the controllers read from the store, and the leader-guarded writes
:class:`~podium.state.ClusterState` does not offer (key layout: ``podium.state.keys``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podium.model import HostState, Kind
from podium.state import ClusterState, dumps, keys, loads, read_traffic
from podium.store import Compare, Put

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BindingRow:
    """A guest's binding as stored, with the mod revision that guards changing it."""

    host: str | None
    epoch: int
    revision: int
    migrating_to: str | None = None  # a live migration's target: it holds the guest's room too


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A host's record (``spec``: capacity, labels, cordoned), status, and liveness."""

    name: str
    spec: JSON
    status: JSON | None
    live: bool
    beat: float | None = None  # server time of the last renewal (None: not recorded)

    @property
    def state(self) -> str | None:
        return None if self.status is None else str(self.status.get("state"))

    @property
    def lease(self) -> int:
        return int((self.status or {}).get("lease") or 0)


@dataclass(frozen=True)
class Snapshot:
    """Everything placement decides on. ``expired``: hosts whose lease is confirmed gone."""

    guests: dict[str, JSON]
    bindings: dict[str, BindingRow]
    statuses: dict[str, JSON]
    hosts: dict[str, HostRecord]
    expired: frozenset[str] = field(default_factory=frozenset)
    # bytes/s between guests, by sorted name pair (filled from the agents' flow reports)
    traffic: dict[tuple[str, str], float] = field(default_factory=dict)


async def _map(state: ClusterState, prefix: str) -> dict[str, tuple[JSON, int]]:
    res = await state.store.range(prefix)
    return {kv.key[len(prefix) :]: (loads(kv.value), kv.mod_revision) for kv in res.kvs}


async def read_hosts(state: ClusterState) -> dict[str, HostRecord]:
    """Every host record with its status and liveness."""
    records = await _map(state, keys.object_prefix(Kind.HOST))
    statuses = await _map(state, keys.HOST_STATUS)
    live = await _map(state, keys.HOST_LIVE)
    beats = await _map(state, keys.HOST_BEAT)
    return {
        name: HostRecord(
            name,
            rec["spec"],
            statuses.get(name, (None, 0))[0],
            name in live,
            _beat_time(beats.get(name, (None, 0))[0]),
        )
        for name, (rec, _) in records.items()
    }


def _beat_time(beat: JSON | None) -> float | None:
    return float(beat["at"]) if beat and "at" in beat else None


async def read_host(state: ClusterState, name: str) -> HostRecord | None:
    """One host, or ``None`` if it has no record."""
    rec = await state.store.get(keys.object_key(Kind.HOST, name))
    if rec is None:
        return None
    status = await state.store.get(keys.host_status_key(name))
    live = await state.store.get(keys.host_live_key(name))
    beat = await state.store.get(keys.host_beat_key(name))
    return HostRecord(
        name,
        loads(rec.value)["spec"],
        loads(status.value) if status else None,
        live is not None,
        _beat_time(loads(beat.value) if beat else None),
    )


async def lease_expired(state: ClusterState, host: HostRecord) -> bool:
    """True once the host's lease is gone from the store (never merely late)."""
    return host.lease == 0 or await state.store.lease_ttl(host.lease) < 0


async def read_snapshot(state: ClusterState) -> Snapshot:
    """Guests, bindings, guest statuses and hosts; lost hosts' leases are confirmed expired;
    the traffic between guests from the agents' fresh reports."""
    guests = {n: rec for n, (rec, _) in (await _map(state, keys.object_prefix(Kind.GUEST))).items()}
    bindings = {
        n: BindingRow(b.get("host"), int(b["epoch"]), rev, (b.get("migration") or {}).get("to"))
        for n, (b, rev) in (await _map(state, keys.BINDINGS)).items()
    }
    statuses = {n: s for n, (s, _) in (await _map(state, keys.GUEST_STATUS)).items()}
    hosts = await read_hosts(state)
    holding = {b.host for b in bindings.values() if b.host}
    expired = frozenset(
        [
            h.name
            for h in hosts.values()
            if h.name in holding
            and not h.live
            and h.state == HostState.LOST.value
            and await lease_expired(state, h)
        ]
    )
    # one range read of the agents' reports (one key per host), merged in memory
    traffic = (await read_traffic(state)).rates()
    return Snapshot(guests, bindings, statuses, hosts, expired, traffic)


async def guests_named(state: ClusterState, prefix: str) -> list[JSON]:
    """Guest records whose name starts with ``prefix`` (an app's ``<app>-`` replicas)."""
    res = await state.store.range(keys.object_key(Kind.GUEST, prefix))
    return [loads(kv.value) for kv in res.kvs]


async def set_host_state(
    state: ClusterState, name: str, host_state: HostState, now: float, guard: Iterable[Compare]
) -> bool:
    """Record a host's liveness, only while ``guard`` holds (leadership). False if it failed."""
    key = keys.host_status_key(name)
    kv = await state.store.get(key)
    status: JSON = loads(kv.value) if kv else {}
    if status.get("state") == host_state.value:
        return True
    status.update(state=host_state.value, since=now)
    result = await state.store.txn(
        [Compare(key, "mod", "=", kv.mod_revision if kv else 0), *guard],
        [Put(key, dumps(status))],
    )
    return result.succeeded
