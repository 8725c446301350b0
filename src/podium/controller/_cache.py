"""ClusterCache: an informer. What placement decides on, in memory, kept current by the
controller manager's one store watch, so a placement pass costs O(guests to place +
hosts), not a read and parse of every guest in the cluster.

::

    load():  store.revision() = R, then range reads of guests, bindings, statuses, hosts
    watch from R + 1 ──> apply(event) ──> maps + derived indexes, by key prefix
                                          pending (unbound guests), per host: allocated
                                          resources and bound guests, per app: replicas
                                          per host, per owner: guests; live ready and
                                          suspect hosts with their last renewal
    a controller that wrote at revision W ──> await wait_for(W) before reading again

Range reads and watch events overlap (the reads happen after R). Applying them is
idempotent: a change older than what a map holds for its key (by mod revision) is
ignored, so the cache converges to the store once the watch passes the reads.

Every watch event passes here (four per guest placed), so apply routes by key prefix in
O(1), parses a value once (controllers reuse it: :meth:`ClusterCache.value_of`), and a
binding change recomputes only what the binding decides.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from podium.controller._plans import guest_request, host_row
from podium.controller._routing import PrefixRouter
from podium.controller._snapshot import BindingRow, HostRecord
from podium.model import HostState, Kind, Resources
from podium.scheduler import GuestRequest, HostTable, PlacementRequest
from podium.state import ClusterState, keys, loads
from podium.store import Event, EventType

JSON = dict[str, Any]

MAX_REQUESTS = 4096  # distinct guest requests remembered (apps' guests ask alike)


parse_json = loads  # the maps' default parser: the state layer's (orjson) decoder


class _Held(NamedTuple):
    """What one bound guest takes: its request on each host that holds room for it.

    (A tuple: one is made per binding change, and a frozen dataclass costs more to make.)
    """

    hosts: tuple[str, ...]
    request: Resources
    app: str | None


def guest_app(record: JSON) -> str | None:
    """The app a guest belongs to (its spec's ``app``, else its owner)."""
    app = record["spec"].get("app") or record.get("owner")
    return str(app) if app else None


class _Map:
    """``name -> (value, mod revision)`` under one key prefix; ignores stale changes."""

    def __init__(self, prefix: str, parse: Callable[[bytes], Any] = parse_json) -> None:
        self.prefix = prefix
        self.items: dict[str, tuple[Any, int]] = {}
        self._gone: dict[str, int] = {}  # deleted names -> delete revision (for stale PUTs)
        self.replaying = True  # until the watch passes the range reads: deletes are marked
        self.json = parse is parse_json  # values are the keys' JSON, parsed
        self._parse = parse

    def put(self, name: str, raw: bytes, revision: int) -> bool:
        held = self.items.get(name)
        if (held is not None and held[1] >= revision) or self._gone.get(name, 0) > revision:
            return False
        self.items[name] = (self._parse(raw), revision)
        self._gone.pop(name, None)
        return True

    def delete(self, name: str, revision: int) -> bool:
        held = self.items.get(name)
        if held is not None and held[1] > revision:
            return False
        self.items.pop(name, None)
        if self.replaying:
            self._gone[name] = revision
        return held is not None

    def reset(self) -> None:
        self.items.clear()
        self._gone.clear()
        self.replaying = True

    def replayed(self) -> None:
        """The watch passed the range reads: every change from now on is newer."""
        self._gone.clear()
        self.replaying = False


class ClusterCache:
    """Guests, bindings, guest statuses and hosts as of :attr:`revision`.

    Fed by :meth:`apply` in revision order (after :meth:`load`); never written by a
    controller directly: a controller writes to the store and waits for its own write
    to come back with :meth:`wait_for`.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.loaded = False
        self._guests = _Map(keys.object_prefix(Kind.GUEST))
        self._bindings = _Map(keys.BINDINGS)
        self._statuses = _Map(keys.GUEST_STATUS)
        self._hosts = _Map(keys.object_prefix(Kind.HOST))
        self._host_status = _Map(keys.HOST_STATUS)
        self._host_live = _Map(keys.HOST_LIVE, parse=lambda _raw: True)
        self._host_beat = _Map(keys.HOST_BEAT)
        self._maps = (
            self._guests,
            self._bindings,
            self._statuses,
            self._hosts,
            self._host_status,
            self._host_live,
            self._host_beat,
        )
        self._host_maps = (self._hosts, self._host_status, self._host_live)
        self._liveness_maps = (self._host_status, self._host_live, self._host_beat)
        # live hosts, ready or suspect: name -> (suspect?, last renewal's "at")
        self._judged: dict[str, tuple[bool, Any]] = {}
        # the maps' prefixes are disjoint: a key routes to one map at most
        self._route = PrefixRouter((m, (m.prefix,)) for m in self._maps).route
        self._applied: tuple[Event, Any, tuple[Any, int] | None] | None = None  # see value_of
        self._table: HostTable | None = None  # hosts as rows, allocations aside
        self._replay_until = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._reset_derived()

    def _reset_derived(self) -> None:
        self.pending: set[str] = set()  # guests with no binding, or bound to no host
        self.allocated: dict[str, Resources] = defaultdict(Resources)
        self.host_guests: dict[str, set[str]] = defaultdict(set)  # bound (not incoming)
        self.app_hosts: dict[str, Counter[str]] = defaultdict(Counter)
        self.owned: dict[str, set[str]] = defaultdict(set)
        self.macs: set[str] = set()  # realised NIC MACs of every guest
        self._macs_of: dict[str, tuple[str, ...]] = {}
        self._held: dict[str, _Held] = {}
        self._owner: dict[str, str] = {}
        self._requests: dict[tuple[tuple[str, Any], ...], Resources] = {}  # see _request

    # -- loading and following the watch ---------------------------------------------

    async def load(self, state: ClusterState, revision: int) -> None:
        """Fill from range reads made after ``revision`` (the watch resumes at +1).

        A reload (after a compaction) builds a fresh cache and swaps it in once read, so
        no reader ever sees half-loaded maps, or an old revision over new contents.
        """
        fresh = ClusterCache()
        highest = revision
        for m in fresh._maps:
            res = await state.store.range(m.prefix)
            highest = max(highest, res.revision)
            for kv in res.kvs:
                m.put(kv.key[len(m.prefix) :], kv.value, kv.mod_revision)
        for name in list(fresh._guests.items):
            fresh._refresh_guest(name)
        for name in list(fresh._host_live.items):
            fresh._judge(name)
        waiters = self._waiters
        self.__dict__.update(fresh.__dict__)
        self._waiters = waiters
        self.loaded = True
        self._replay_until = highest
        self._advance(revision)

    def apply(self, event: Event) -> None:
        """Follow one watch event (any key; those outside the cache only move the revision)."""
        key = event.kv.key
        for m in self._route(key):
            name = key[len(m.prefix) :]
            old = m.items.get(name)
            put = event.type is EventType.PUT
            if put:
                changed = m.put(name, event.kv.value, event.revision)
            else:
                changed = m.delete(name, event.revision)
            if not changed:
                continue
            if m.json:
                self._applied = (event, m.items[name][0] if put else None, old)
            if m is self._guests:
                self._refresh_guest(name)
            elif m is self._bindings:
                self._refresh_guest(name, record_changed=False)
            else:
                if m in self._host_maps:
                    self._table = None
                if m in self._liveness_maps:
                    self._judge(name)
        self._advance(event.revision)

    def value_of(self, event: Event) -> Any:
        """``loads(event.kv.value)`` (None for an empty value), without parsing again
        what :meth:`apply` just parsed. Never mutate what it returns."""
        applied = self._applied
        if applied is not None and applied[0] is event:
            return applied[1]
        return parse_json(event.kv.value) if event.kv.value else None

    def prev_value_of(self, event: Event) -> Any:
        """``loads`` of the event's previous value (None if none), reusing the cache's."""
        prev = event.prev_kv
        if prev is None or not prev.value:
            return None
        applied = self._applied
        if applied is not None and applied[0] is event:
            old = applied[2]
            if old is not None and old[1] == prev.mod_revision:
                return old[0]
        return parse_json(prev.value)

    def _advance(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        if self._replay_until and revision >= self._replay_until:
            for m in self._maps:
                m.replayed()
            self._replay_until = 0
        if self._waiters:
            still = []
            for wanted, future in self._waiters:
                if wanted <= revision:
                    if not future.done():
                        future.set_result(None)
                else:
                    still.append((wanted, future))
            self._waiters = still

    async def wait_for(self, revision: int, timeout: float = 10.0) -> bool:
        """Wait until the cache has followed the store to ``revision``; False on timeout."""
        if self.loaded and self.revision >= revision:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not future]
        return True

    # -- derived indexes ----------------------------------------------------------------

    def _refresh_guest(self, name: str, *, record_changed: bool = True) -> None:
        """Recompute what ``name`` holds after its record (or only its binding) changed."""
        old = self._held.pop(name, None)
        if old is not None:
            for host in old.hosts:
                self.allocated[host] = self.allocated[host] - old.request
                if old.app is not None:
                    counts = self.app_hosts[old.app]
                    counts[host] -= 1
                    if counts[host] <= 0:
                        del counts[host]
            self.host_guests[old.hosts[0]].discard(name)
        if record_changed:  # (owner and MACs come from the record alone)
            owner = self._owner.pop(name, None)
            if owner is not None:
                self.owned[owner].discard(name)
            self.macs.difference_update(self._macs_of.pop(name, ()))
        held_record = self._guests.items.get(name)
        if held_record is None:
            self.pending.discard(name)
            return
        record: JSON = held_record[0]
        if record_changed:
            macs = tuple([str(n["mac"]) for n in record.get("nics", ()) if n.get("mac")])
            if macs:
                self._macs_of[name] = macs
                self.macs.update(macs)
            if owner := record.get("owner"):
                self._owner[name] = str(owner)
                self.owned[str(owner)].add(name)
        held_binding = self._bindings.items.get(name)
        binding: JSON = held_binding[0] if held_binding is not None else {}
        bound = binding.get("host")
        if bound is None:
            self.pending.add(name)
            return
        self.pending.discard(name)
        to = (binding.get("migration") or {}).get("to")
        hosts: tuple[str, ...] = (bound,) if to is None else (bound, to)
        if old is not None and not record_changed:  # the same record: the same request
            held = _Held(hosts, old.request, old.app)
        else:
            held = _Held(hosts, self._request(record["spec"].get("request", {})), guest_app(record))
        self._held[name] = held
        for host in hosts:
            self.allocated[host] = self.allocated[host] + held.request
            if held.app is not None:
                self.app_hosts[held.app][host] += 1
        self.host_guests[bound].add(name)

    def _judge(self, name: str) -> None:
        """Keep what :meth:`liveness_changes` looks at, after a host's status, liveness
        or renewal changed."""
        if name in self._host_live.items:
            status = self._host_status.items.get(name)
            state = status[0].get("state") if status is not None else None
            if state in (HostState.READY.value, HostState.SUSPECT.value):
                beat = self._host_beat.items.get(name)
                at = beat[0].get("at") if beat is not None else None
                self._judged[name] = (state == HostState.SUSPECT.value, at)
                return
        self._judged.pop(name, None)

    def _request(self, data: JSON) -> Resources:
        """``Resources.from_dict(data)``, shared among the many guests asking alike."""
        try:
            key = tuple(data.items())
            found = self._requests.get(key)
        except TypeError:  # (a value that is no number: from_dict says what it makes of it)
            return Resources.from_dict(data)
        if found is None:
            if len(self._requests) >= MAX_REQUESTS:
                self._requests.clear()
            found = self._requests[key] = Resources.from_dict(data)
        return found

    # -- reading --------------------------------------------------------------------------

    def guest(self, name: str) -> tuple[JSON, int] | None:
        """A guest's record and mod revision."""
        held = self._guests.items.get(name)
        return None if held is None else (held[0], held[1])

    def has_guest(self, name: str) -> bool:
        return name in self._guests.items

    def has_mac(self, mac: str) -> bool:
        return mac in self.macs

    def guest_names(self) -> Iterable[str]:
        return self._guests.items.keys()

    def binding(self, name: str) -> BindingRow | None:
        held = self._bindings.items.get(name)
        if held is None:
            return None
        b, rev = held
        return BindingRow(b.get("host"), int(b["epoch"]), rev, (b.get("migration") or {}).get("to"))

    def status(self, name: str) -> JSON | None:
        held = self._statuses.items.get(name)
        return None if held is None else dict(held[0])

    def host_names(self) -> list[str]:
        return list(self._hosts.items)

    def host_spec(self, name: str) -> JSON | None:
        """A host record's spec (what :meth:`host` gives, without building a record)."""
        held = self._hosts.items.get(name)
        return None if held is None else held[0]["spec"]

    def host(self, name: str) -> HostRecord | None:
        held = self._hosts.items.get(name)
        if held is None:
            return None
        status = self._host_status.items.get(name)
        beat = self._host_beat.items.get(name)
        at = beat[0].get("at") if beat is not None else None
        return HostRecord(
            name,
            held[0]["spec"],
            None if status is None else status[0],
            name in self._host_live.items,
            None if at is None else float(at),
        )

    def liveness_changes(self, now: float, suspect_after: float) -> list[str]:
        """Live hosts whose judgement the renewal age changes: ready ones with no renewal
        for more than ``suspect_after`` seconds, and suspect ones renewed since. One
        comprehension over live ready and suspect hosts, their state and last renewal
        kept by :meth:`apply` (it runs twice a second)."""
        return [
            name
            for name, (suspect, at) in self._judged.items()
            if (at is not None and now - float(at) > suspect_after) != suspect
        ]

    def hosts(self) -> dict[str, HostRecord]:
        out = {}
        for name in self._hosts.items:
            host = self.host(name)
            if host is not None:
                out[name] = host
        return out

    def host_table(self) -> HostTable:
        """Every host as the scheduler sees it, with no allocations (rebuilt only after
        a host's record, status or liveness changed)."""
        if self._table is None:
            self._table = HostTable.build([host_row(h, Resources()) for h in self.hosts().values()])
        return self._table

    # -- placement ------------------------------------------------------------------------

    def holding_lost(self) -> list[HostRecord]:
        """Hosts marked lost, their liveness key gone, that still hold bound guests."""
        out = []
        for name, guests in self.host_guests.items():
            host = self.host(name) if guests else None
            if host is not None and not host.live and host.state == HostState.LOST.value:
                out.append(host)
        return out

    def placement_request(
        self, expired: frozenset[str], traffic: Mapping[tuple[str, str], float]
    ) -> tuple[PlacementRequest, dict[str, str]]:
        """What :func:`~podium.controller._plans.placement_request` builds from a full
        snapshot, from the indexes: O(guests to place + hosts + apps in the batch)."""
        moving = {g: h for h in expired for g in self.host_guests.get(h, ())}
        todo: list[GuestRequest] = []
        for name in sorted(self.pending):
            record = self._guests.items[name][0]
            todo.append(guest_request(record))
        for name in sorted(moving):
            todo.append(guest_request(self._guests.items[name][0], moving=True))
        allocated = dict(self.allocated)
        leaving: dict[str, Counter[str]] = defaultdict(Counter)
        for name in moving:  # their room on the lost host (and a migration's target) frees
            held = self._held[name]
            for host in held.hosts:
                allocated[host] = allocated[host] - held.request
                if held.app is not None:
                    leaving[held.app][host] += 1
        talkers = {g for pair in traffic for g in pair}
        guest_hosts: dict[str, str] = {}  # (the traffic score's partners are all it needs)
        guest_apps: dict[str, str] = {}
        for name in talkers:
            talker = self._held.get(name)
            if talker is not None and name not in moving:
                guest_hosts[name] = talker.hosts[0]
            found = self._guests.items.get(name)
            if found is not None and (app := guest_app(found[0])) is not None:
                guest_apps[name] = app
        # replicas per host of the apps the batch's filters and scores look at
        apps = {g.app for g in todo if g.app is not None} | set(guest_apps.values())
        apps.update(app for g in todo for app in (*g.near, *g.talks_to))
        placed: dict[str, list[str]] = {}
        for app in sorted(apps):
            counts = self.app_hosts.get(app, Counter()) - leaving.get(app, Counter())
            placed[app] = [host for host, n in sorted(counts.items()) for _ in range(n)]
        table = self.host_table()
        zero = Resources()
        used = np.array(
            [allocated.get(n, zero).as_tuple() for n in table.names], dtype=np.float64
        ).reshape(table.capacity.shape)
        request = PlacementRequest(
            table.with_allocated(used),
            todo,
            placed,
            traffic=dict(traffic),
            guest_hosts=guest_hosts,
            guest_apps=guest_apps,
        )
        return request, moving
