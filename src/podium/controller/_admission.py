"""Admission control: refuse an apply that would break the failover promise.

The promise (``podium server --failures-to-tolerate K``, default 1): after any K hosts
fail, every guest they ran can restart on the others. Or, with ``--spare-host NAME``
(repeatable): the guests of any K failed hosts restart on the dedicated spares (which
take no guests in normal placement).

::

    apply(manifests) ──> demand after: every guest (request, host) with the manifests'
                         App replicas / Guest requests in place of the current ones
        only if the apply adds demand in some dimension (shrinking is always admitted):
      1 place the new guests virtually (the scheduler; those that fit nowhere stay
        pending as before: placement says why, admission does not)
      2 necessary, O(hosts): per dimension, sum of reservations <= capacity of the
        eligible hosts - the K largest capacities (spares: the K largest per-host
        loads <= the spares' capacity)
      3 stronger: fail the K most loaded hosts (dominant reservation share) at once and
        place their guests with the scheduler on the others' free room (spares: on
        the spares) -- every filter but spread: a replica that its own spread keeps
        off the survivors is the app's redundancy at work, not missing capacity
        ──> None (admit) or one line: what, which hosts, short of what, how to fix

Why this pair: (2) is exact per dimension for capacity but blind to fragmentation;
(3) catches that with one scheduler pass over the hosts whose loss hurts
most, instead of n passes (one per host), so an apply stays in milliseconds on
thousands of hosts. The K most loaded hosts are a heuristic worst case: a less loaded
host whose guests are harder to fit (spreads, one huge guest) may still fail to restart.

A cluster with K eligible hosts or fewer cannot keep the promise at all (a forming
cluster): admission does not refuse there, so hosts can join after apps are declared.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from podium.model import DIMENSIONS, Kind, Manifest, Resources, wear_qos
from podium.scheduler import FrameworkScheduler, default_scheduler
from podium.scheduler._migration import guest_request_of, host_row_of
from podium.scheduler._table import Floats, GuestRequest, HostRow, HostTable, PlacementRequest
from podium.state import ClusterState

JSON = dict[str, Any]
FIX = "add hosts, lower replicas, or set --failures-to-tolerate 0"


@dataclass(frozen=True, slots=True)
class Demand:
    """One guest's reservations and where it runs (None: to be placed)."""

    request: GuestRequest
    host: str | None


def _fmt(values: Iterable[tuple[str, float]]) -> str:
    return ", ".join(f"{dim} {v:g}" for dim, v in values if v > 1e-9) or "nothing"


def describe(manifest: Manifest) -> str:
    """``app web (3 x cpu 4, memory_mib 8192)`` or ``guest db (cpu 2, ...)``."""
    request = Resources.from_dict(manifest.spec.get("request", {}))
    dims = _fmt(zip(DIMENSIONS, request.as_tuple(), strict=True))
    if manifest.kind is Kind.APP:
        return f"app {manifest.name} ({int(manifest.spec.get('replicas', 0))} x {dims})"
    return f"{manifest.kind.value.lower()} {manifest.name} ({dims})"


def demand_after(guest_views: Sequence[JSON], manifests: Sequence[Manifest]) -> list[Demand]:
    """Every guest once the manifests apply: App replicas and Guest specs in their place.

    An App's current replicas keep their hosts (the first ``replicas`` by name, with the
    new request); missing ones are new; extra ones go.
    """
    apps = {m.name: m for m in manifests if m.kind is Kind.APP}
    specs = {m.name: m for m in manifests if m.kind is Kind.GUEST}
    owned: dict[str, list[JSON]] = defaultdict(list)
    out: list[Demand] = []
    for view in guest_views:
        name, owner = str(view["name"]), view.get("owner")
        host = view.get("status", {}).get("host")
        if owner in apps:
            owned[str(owner)].append(view)
            continue
        changed = {**view, "spec": specs.pop(name).spec} if name in specs else view
        out.append(Demand(guest_request_of(changed), str(host) if host else None))
    for m in specs.values():
        out.append(Demand(guest_request_of({"name": m.name, "spec": m.spec}), None))
    for app, m in apps.items():
        current = sorted(owned[app], key=lambda v: _index(str(v["name"])))
        for n in range(int(m.spec.get("replicas", 0))):
            host = current[n].get("status", {}).get("host") if n < len(current) else None
            name = str(current[n]["name"]) if n < len(current) else f"{app}-new-{n}"
            view = {"name": name, "owner": app, "spec": {**m.spec, "app": app}}
            out.append(Demand(guest_request_of(view), str(host) if host else None))
    return out


def _index(name: str) -> tuple[int, str]:
    tail = name.rpartition("-")[2]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def _total(demand: Sequence[Demand]) -> Floats:
    out: Floats = np.zeros(len(DIMENSIONS))
    for d in demand:
        out += d.request.request.as_tuple()
    return out


def check_promise(
    hosts: Sequence[HostRow],
    before: Sequence[Demand],
    after: Sequence[Demand],
    *,
    failures: int,
    spares: Iterable[str] = (),
    what: str = "this apply",
    scheduler: FrameworkScheduler | None = None,
) -> str | None:
    """None if ``after`` keeps the promise (or adds no demand), else why not (one line)."""
    spare_set = frozenset(spares)
    if failures <= 0 or not np.any(_total(after) > _total(before) + 1e-9):
        return None
    scheduler = scheduler or default_scheduler()
    rows = [replace(h, allocated=Resources()) for h in hosts]
    normal = [r for r in rows if r.ready and not r.cordoned and r.name not in spare_set]
    spare_rows = [r for r in rows if r.ready and r.name in spare_set]
    if len(normal) <= failures and not spare_rows:
        return None
    where = _placed(scheduler, normal, after)
    table = HostTable.build(normal)
    load = np.zeros((len(table), len(DIMENSIONS)))
    for d, host in where:
        load[table.index[host]] += d.request.request.as_tuple()
    k = min(failures, len(table))
    if spare_rows:
        worst = np.sort(load, axis=0)[::-1][:k].sum(axis=0)
        room = np.array([r.capacity.as_tuple() for r in spare_rows]).sum(axis=0)
        short = worst - room
        if np.any(short > 1e-9):
            return (
                f"{what} would leave the spares ({', '.join(sorted(spare_set))}) unable to take "
                f"the guests of the {k} most loaded hosts: short of "
                f"{_fmt(zip(DIMENSIONS, short, strict=True))}; add spares or hosts, or lower "
                "replicas"
            )
    else:
        cap = table.capacity
        room = cap.sum(axis=0) - np.sort(cap, axis=0)[::-1][:k].sum(axis=0)
        short = load.sum(axis=0) - room
        if np.any(short > 1e-9):
            return (
                f"{what} would leave no room to restart the guests of any {k} failed host(s): "
                f"short of {_fmt(zip(DIMENSIONS, short, strict=True))}; {FIX}"
            )
    share = np.where(table.capacity > 0, load / np.where(table.capacity > 0, table.capacity, 1), 0)
    failed = [table.names[i] for i in np.argsort(-share.max(axis=1), kind="stable")[:k]]
    survivors = spare_rows or [
        replace(r, allocated=Resources(*load[table.index[r.name]]))
        for r in normal
        if r.name not in failed
    ]
    # Capacity, not spread domains: a replica whose app already covers every other
    # domain cannot restart by its app's own rule, and the spread is what makes the app
    # survive that loss. Refusing it would refuse every "N replicas on N hosts" app.
    moving = [replace(d.request, moving=True, spread=None) for d, host in where if host in failed]
    placed_apps: dict[str, list[str]] = defaultdict(list)
    for d, host in where:
        if host not in failed and d.request.app:
            placed_apps[d.request.app].append(host)
    result = scheduler.place(
        PlacementRequest(HostTable.build(survivors), moving, dict(placed_apps))
    )
    if result.unplaced:
        lost = [g for g in moving if g.name in result.unplaced]
        need = _total([Demand(g, None) for g in lost])
        hosts_txt = " and ".join(failed)
        onto = "the spares" if spare_rows else "the other hosts"
        return (
            f"{what} would leave no room to restart the guests of {hosts_txt} if "
            f"{'it' if len(failed) == 1 else 'they'} failed: {len(lost)} of them fit nowhere on "
            f"{onto} (short of {_fmt(zip(DIMENSIONS, need, strict=True))}; e.g. "
            f"{lost[0].name}: {next(iter(result.unplaced.values()))}); {FIX}"
        )
    return None


def _placed(
    scheduler: FrameworkScheduler, normal: Sequence[HostRow], demand: Sequence[Demand]
) -> list[tuple[Demand, str]]:
    """Placed guests with their hosts; pending ones placed virtually where they fit."""
    names = {r.name for r in normal}
    placed = [(d, d.host) for d in demand if d.host in names]
    base: dict[str, Resources] = defaultdict(Resources)
    apps: dict[str, list[str]] = defaultdict(list)
    for d, host in placed:
        base[host] = base[host] + d.request.request
        if d.request.app:
            apps[d.request.app].append(host)
    pending = [d for d in demand if d.host is None]
    out: list[tuple[Demand, str]] = [(d, h) for d, h in placed if h is not None]
    if pending:
        rows = [replace(r, allocated=base[r.name]) for r in normal]
        result = scheduler.place(
            PlacementRequest(HostTable.build(rows), [d.request for d in pending], dict(apps))
        )
        out += [(d, result.placements[d.request.name]) for d in pending
                if d.request.name in result.placements]  # fmt: skip
    return out


@dataclass(frozen=True)
class AdmissionControl:
    """The apply hook: reads hosts and guests, and checks the promise for ``manifests``."""

    failures: int = 1
    spares: frozenset[str] = frozenset()

    async def check(self, state: ClusterState, manifests: Sequence[Manifest]) -> str | None:
        """None to admit, or the reason to refuse (one line that says how to fix it)."""
        if self.failures <= 0 or not any(m.kind in (Kind.APP, Kind.GUEST) for m in manifests):
            return None
        host_views, _ = await state.list_objects(Kind.HOST)
        guest_views, _ = await state.list_objects(Kind.GUEST)
        hosts = [host_row_of(h) for h in host_views]
        manifests = await worn(state, manifests)
        before = demand_after(guest_views, [])
        after = demand_after(guest_views, manifests)
        what = ", ".join(describe(m) for m in manifests if m.kind in (Kind.APP, Kind.GUEST))
        return check_promise(
            hosts, before, after, failures=self.failures, spares=self.spares, what=what
        )


async def worn(state: ClusterState, manifests: Sequence[Manifest]) -> list[Manifest]:
    """``manifests`` with each new profile wearer's spec under its profile's QoS class
    (the request the guest will have), so the promise is checked on what it will hold."""
    profiles = {m.name: m.spec for m in manifests if m.kind is Kind.PROFILE}
    out = []
    for m in manifests:
        name = m.spec.get("profile") if m.kind is Kind.GUEST else None
        effective = m
        if name and not m.spec.get("qos"):
            spec = profiles.get(name)
            if spec is None:
                record = await state.get_record(Kind.PROFILE, name)
                spec = record["spec"] if record else {}
            with contextlib.suppress(ValueError):  # a class that does not fit: apply says so
                effective = replace(m, spec=wear_qos(m.spec, spec.get("qos")))
        out.append(effective)
    return out


def spare_cordons(spares: Iterable[str], hosts: Mapping[str, HostRow]) -> dict[str, HostRow]:
    """Host rows with the spares cordoned: what normal placement must see (spares idle)."""
    spare_set = frozenset(spares)
    return {n: replace(r, cordoned=True) if n in spare_set else r for n, r in hosts.items()}
