"""ClusterCache (the placement informer) agrees with the from-scratch path.

Every test drives real :class:`~podium.state.ClusterState` operations on a memory store
and feeds the cache the way ``ControllerManager._watch`` does: ``R = store.revision()``,
``cache.load(state, R)`` (range reads made after R), then every event of
``store.watch(keys.ROOT, R + 1)`` through ``cache.apply``. Once the cache has followed
the store's revision, its maps, indexes and placement request must equal what
``read_snapshot`` + ``placement_request`` build from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from podium.controller._cache import ClusterCache
from podium.controller._plans import placement_request, replica_spec
from podium.controller._snapshot import Snapshot, read_snapshot
from podium.model import GuestState, HostName, HostSpec, HostState, Kind, Manifest, Resources
from podium.state import (
    ClusterState,
    Conflict,
    Migrations,
    NewBinding,
    NotFound,
    StaleEpoch,
    keys,
    loads,
    start_drain,
)
from podium.store import Event, EventType, KeyValue, RangeResult, Store
from podium.store.errors import LeaseNotFound
from podium.store.memory import MemoryStore
from tests.support.tasks import running
from tests.unit.controller.ctrl_support import FakeClock

JSON = dict[str, Any]
Op = tuple[Any, ...]

HOSTS = tuple(f"h{i}" for i in range(6))
APPS = ("web", "db")
APP_GUESTS = ("web-1", "web-2", "web-3", "db-1", "db-2")
GUESTS = (*(f"g{i}" for i in range(10)), *APP_GUESTS)  # 15 guests at most
# binary fractions only: sums are exact whatever order the cache adds and subtracts them in
REQUESTS = (
    {"cpu": 0.5, "memory_mib": 128, "iops": 0, "net_mbps": 0},
    {"cpu": 1.0, "memory_mib": 256, "iops": 50, "net_mbps": 10},
    {"cpu": 2.0, "memory_mib": 1024, "iops": 100, "net_mbps": 100},
)
CAPACITIES = (
    Resources(cpu=4, memory_mib=4096, iops=1000, net_mbps=1000),
    Resources(cpu=16, memory_mib=32768, iops=5000, net_mbps=10000),
)
WAIT = 5.0  # bound on any wait for the cache to follow the store

# -- feeding the cache as the manager does ------------------------------------------------


class HookedStore:
    """A store whose range reads first run a write: the writes a real load overlaps."""

    def __init__(self, inner: MemoryStore, before_range: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._before_range = before_range

    async def range(self, prefix: str, *, limit: int = 0) -> RangeResult:
        await self._before_range()
        return await self._inner.range(prefix, limit=limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextlib.asynccontextmanager
async def following(
    state: ClusterState,
    cache: ClusterCache,
    *,
    during_load: Sequence[Callable[[], Awaitable[None]]] = (),
    stale_replays: bool = False,
) -> AsyncIterator[None]:
    """Load ``cache`` at the store's revision R and follow the watch from R + 1 for the body.

    ``during_load``: writes run after R is read, one before each of the load's range
    reads (the rest after the load, before the watch starts). ``stale_replays``: while
    the watch replays what the range reads already saw (up to the revision H of the last
    read), re-apply after each event every event before it, newest first: duplicates
    and changes older than what the cache holds, which it must ignore.
    """
    store = state.store
    revision = await store.revision()
    todo = list(during_load)

    async def next_write() -> None:
        if todo:
            await todo.pop(0)()

    hooked = HookedStore(cast(MemoryStore, store), next_write)
    await cache.load(ClusterState(cast(Store, hooked)), revision)
    read_at = await store.revision()  # H: the last range read's revision
    for write in todo:
        await write()
    watch = store.watch(keys.ROOT, revision + 1)
    replayed: list[Event] = []

    async def feed() -> None:  # one task, as the manager: a revision's events in one go
        async for change in watch:
            cache.apply(change)
            if stale_replays and change.revision < read_at:
                replayed.append(change)
                for old in reversed(replayed):
                    cache.apply(old)

    try:
        async with running(feed()):
            yield
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()


async def caught_up(state: ClusterState, cache: ClusterCache) -> None:
    revision = await state.store.revision()
    assert await cache.wait_for(revision, timeout=WAIT), (cache.revision, revision)


# -- what the cache must equal -------------------------------------------------------------


def nonzero(allocated: dict[str, Resources]) -> dict[str, Resources]:
    return {h: r for h, r in allocated.items() if r != Resources()}


def expected_indexes(snapshot: Snapshot) -> JSON:
    """The cache's derived indexes, computed from scratch from a snapshot."""
    pending = set()
    allocated: dict[str, Resources] = defaultdict(Resources)
    host_guests: dict[str, set[str]] = defaultdict(set)
    app_hosts: dict[str, Counter[str]] = defaultdict(Counter)
    owned: dict[str, set[str]] = defaultdict(set)
    macs: set[str] = set()
    for name, record in snapshot.guests.items():
        macs.update(n["mac"] for n in record.get("nics", ()) if n.get("mac"))
        if record.get("owner"):
            owned[record["owner"]].add(name)
        binding = snapshot.bindings.get(name)
        if binding is None or binding.host is None:
            pending.add(name)
            continue
        request = Resources.from_dict(record["spec"]["request"])
        app = record["spec"].get("app") or record.get("owner")
        host_guests[binding.host].add(name)
        for host in (binding.host, binding.migrating_to):
            if host is None:
                continue
            allocated[host] = allocated[host] + request
            if app:
                app_hosts[app][host] += 1
    return {
        "pending": pending,
        "allocated": nonzero(allocated),
        "host_guests": {h: g for h, g in host_guests.items() if g},
        "app_hosts": {a: +c for a, c in app_hosts.items() if +c},
        "owned": {o: g for o, g in owned.items() if g},
        "macs": macs,
    }


def cache_indexes(cache: ClusterCache) -> JSON:
    return {
        "pending": set(cache.pending),
        "allocated": nonzero(cache.allocated),
        "host_guests": {h: set(g) for h, g in cache.host_guests.items() if g},
        "app_hosts": {a: +c for a, c in cache.app_hosts.items() if +c},
        "owned": {o: set(g) for o, g in cache.owned.items() if g},
        "macs": set(cache.macs),
    }


async def assert_matches(
    state: ClusterState, cache: ClusterCache, traffic: Sequence[tuple[str, str]] = ()
) -> Snapshot:
    """The cache (caught up to the store) equals a from-scratch read, map by map and in
    the placement request it builds (``traffic``: pairs of guests said to talk)."""
    await caught_up(state, cache)
    snapshot = await read_snapshot(state)
    # the maps
    assert {n: cache.guest(n) for n in cache.guest_names()} == {
        kv.key[len(keys.object_prefix(Kind.GUEST)) :]: (loads(kv.value), kv.mod_revision)
        for kv in (await state.store.range(keys.object_prefix(Kind.GUEST))).kvs
    }
    names = {*snapshot.guests, *snapshot.bindings, *snapshot.statuses}
    assert {n: cache.binding(n) for n in names} == {n: snapshot.bindings.get(n) for n in names}
    assert {n: cache.status(n) for n in names} == {n: snapshot.statuses.get(n) for n in names}
    assert sorted(cache.host_names()) == sorted(snapshot.hosts)
    assert cache.hosts() == snapshot.hosts
    # the derived indexes
    assert cache_indexes(cache) == expected_indexes(snapshot)
    assert {h.name for h in cache.holding_lost()} == snapshot.expired  # (leases revoked)
    # the scheduler's input
    want, want_moving = placement_request(snapshot)
    rates = dict.fromkeys(traffic, 1000.0)
    got, got_moving = cache.placement_request(snapshot.expired, rates)
    assert got_moving == want_moving
    by_name = lambda g: g.name  # noqa: E731
    assert sorted(got.guests, key=by_name) == sorted(want.guests, key=by_name)
    assert got.hosts.names == want.hosts.names
    for column in ("capacity", "allocated", "ready", "cordoned", "draining", "rack"):
        np.testing.assert_array_equal(
            getattr(got.hosts, column), getattr(want.hosts, column), err_msg=column
        )
    # the traffic score needs the talkers' hosts and apps only
    talkers = {g for pair in traffic for g in pair}
    assert got.traffic == rates
    assert got.guest_hosts == {g: h for g, h in want.guest_hosts.items() if g in talkers}
    assert got.guest_apps == {g: a for g, a in want.guest_apps.items() if g in talkers}
    batch_apps = {g.app for g in got.guests if g.app} | {a for g in got.guests for a in g.near}
    assert batch_apps | set(got.guest_apps.values()) <= set(got.placed)
    for app, hosts in got.placed.items():
        assert sorted(hosts) == sorted(want.placed.get(app, ())), app
    return snapshot


# -- random operations over real state -------------------------------------------------------


def guest_spec(name: str, request: int, app: str | None, priority: int, near: bool) -> JSON:
    spec: JSON = {
        "image": "tiny",
        "request": dict(REQUESTS[request]),
        "priority": priority,
        "nics": [{}] * (1 + int(name[-1]) % 2),  # never changes for a name (apply refuses that)
    }
    if app is not None:
        spec["app"] = app
        spec["spread"] = "host"
    if near:
        spec["near"] = ["db"]
    return spec


class World:
    """Runs one drawn operation against real state; remembers each host's lease."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.leases: dict[str, int] = {}
        self.done: Counter[str] = Counter()

    async def run(self, op: Op) -> None:
        kind, *args = op
        try:
            took = await getattr(self, f"op_{kind}")(*args)
            self.done[kind if took is not False else f"{kind}-"] += 1
        except (Conflict, NotFound, StaleEpoch, LeaseNotFound):
            self.done[f"{kind}!"] += 1

    async def op_guest(
        self, name: str, request: int, app: str | None, prio: int, near: bool
    ) -> None:
        spec = guest_spec(name, request, app, prio, near)
        await self.state.apply([Manifest(Kind.GUEST, name, spec)])

    async def op_app(self, app: str, replicas: int, request: int) -> None:
        spec = replica_spec(app, {"request": REQUESTS[request], "spread": "host"})
        names = [f"{app}-{i}" for i in range(1, replicas + 1)]
        await self.state.create_owned_guests(app, [(n, spec) for n in names])

    async def op_join(self, host: str, capacity: int, rack: str) -> None:
        lease = await self.state.store.grant(10)
        spec = HostSpec(capacity=CAPACITIES[capacity], labels={"rack": rack})
        await self.state.register_host(
            HostName(host), spec, lease=lease.id, driver="sim", agent_version="t"
        )
        self.leases[host] = lease.id

    async def op_bind(self, guest: str, host: str | None) -> bool:
        _, revision = await self.state.get_binding(guest)
        return await self.state.bind(guest, host, expected_revision=revision) is not None

    async def op_bind_new(self, guests: tuple[str, ...], host: str) -> bool:
        items = []
        for guest in guests:
            kv = await self.state.store.get(keys.object_key(Kind.GUEST, guest))
            if kv is not None:
                items.append(NewBinding(guest, host, loads(kv.value), kv.mod_revision))
        return bool((await self.state.bind_new(items)).bound)

    async def op_report(self, guest: str, observed: GuestState) -> bool:
        binding, _ = await self.state.get_binding(guest)
        if binding.host is None:
            return False
        await self.state.report_guest_status(binding.host, guest, binding.epoch, observed)
        return True

    async def op_note(self, guest: str, reason: str) -> bool:
        return await self.state.note_unplaced(guest, reason)

    async def op_delete_guest(self, guest: str) -> None:
        await self.state.delete_object(Kind.GUEST, guest, force_owned=True)

    async def op_delete_host(self, host: str) -> None:
        await self.state.delete_object(Kind.HOST, host)

    async def op_host_state(self, host: str, judged: HostState) -> None:
        await self.state.set_host_state(host, judged)

    async def op_cordon(self, host: str, cordoned: bool) -> None:
        await self.state.set_cordoned(host, cordoned)

    async def op_drain(self, host: str) -> None:
        await start_drain(self.state, host)

    async def op_revoke(self, host: str) -> bool:
        """The host's lease ends: its liveness key goes (the controller marks it lost)."""
        lease = self.leases.pop(host, None)
        if lease is not None:
            await self.state.store.revoke(lease)
        return lease is not None

    async def op_lose(self, host: str) -> bool:
        """The lease ends and the host controller marks the host lost: its guests move."""
        if not await self.op_revoke(host):
            return False
        await self.state.set_host_state(host, HostState.LOST)
        return True

    async def op_beat(self, host: str) -> bool:
        lease = self.leases.get(host)
        if lease is not None:
            await self.state.record_keepalive(host, lease)
        return lease is not None

    async def op_migrate(self, guest: str, target: str) -> bool:
        """Start a live migration: the binding names ``target`` as ``migration.to``."""
        binding, _ = await self.state.get_binding(guest)
        if binding.host is None or binding.host == target:
            return False
        await self.state.report_guest_status(binding.host, guest, binding.epoch, GuestState.RUNNING)
        migrations = Migrations(self.state)
        record = await migrations.request(guest, target)
        return (await migrations.start(guest, record["id"], target)).accepted


hosts = st.sampled_from(HOSTS)
guests = st.sampled_from(GUESTS)
operations = st.one_of(
    st.tuples(
        st.just("guest"),
        st.sampled_from(GUESTS[:10]),
        st.integers(0, len(REQUESTS) - 1),
        st.sampled_from((None, *APPS)),
        st.integers(0, 2),
        st.booleans(),
    ),
    st.tuples(
        st.just("app"), st.sampled_from(APPS), st.integers(1, 3), st.integers(0, len(REQUESTS) - 1)
    ),
    st.tuples(
        st.just("join"), hosts, st.integers(0, len(CAPACITIES) - 1), st.sampled_from(("r1", "r2"))
    ),
    st.tuples(st.just("bind"), guests, st.one_of(st.none(), hosts)),
    st.tuples(st.just("bind"), guests, hosts),
    st.tuples(st.just("bind"), st.sampled_from(("g0", "g1", "g2", "db-1", "db-2")), hosts),
    st.tuples(st.just("migrate"), st.sampled_from(("g0", "g1", "g2", "db-1", "db-2")), hosts),
    st.tuples(st.just("bind_new"), st.lists(guests, max_size=4, unique=True).map(tuple), hosts),
    st.tuples(st.just("report"), guests, st.sampled_from(list(GuestState))),
    st.tuples(st.just("note"), guests, st.sampled_from(("no room", "cordoned"))),
    st.tuples(st.just("delete_guest"), guests),
    st.tuples(st.just("delete_host"), hosts),
    st.tuples(st.just("host_state"), hosts, st.sampled_from(list(HostState))),
    st.tuples(st.just("cordon"), hosts, st.booleans()),
    st.tuples(st.just("drain"), hosts),
    st.tuples(st.just("revoke"), hosts),
    st.tuples(st.just("lose"), hosts),
    st.tuples(st.just("beat"), hosts),
    st.tuples(st.just("migrate"), guests, hosts),
)


# hosts to bind to and guests to bind, so most drawn operations act on something
START: tuple[Op, ...] = (
    ("join", "h0", 0, "r1"),
    ("join", "h1", 1, "r2"),
    ("join", "h2", 1, "r1"),
    ("guest", "g0", 0, None, 0, False),
    ("guest", "g1", 1, "web", 1, False),
    ("guest", "g2", 2, "db", 0, True),
    ("app", "db", 2, 0),
    ("bind", "g0", "h0"),
    ("bind_new", ("g1", "db-1"), "h1"),
)


async def scenario(
    before: list[Op],
    during: list[Op],
    after: list[Op],
    traffic: Sequence[tuple[str, str]] = (),
    *,
    in_hypothesis: bool = True,
) -> Counter[str]:
    """``before`` the cache's revision R, ``during`` its load (between its range reads),
    ``after`` it follows the watch; the cache must match the store once caught up, after
    the load and after every later operation."""
    clock = FakeClock()
    ticks = itertools.count()
    store = MemoryStore(clock=clock, sweep_interval=3600)
    state = ClusterState(store, clock=lambda: clock.now + next(ticks) * 1e-3)
    world = World(state)
    try:
        for op in (*START, *before):
            await world.run(op)
        cache = ClusterCache()
        writes = [lambda op=op: world.run(op) for op in during]
        async with following(state, cache, during_load=writes, stale_replays=True):
            seen = [await assert_matches(state, cache, traffic)]
            for op in after:
                await world.run(op)
                seen.append(await assert_matches(state, cache, traffic))
    finally:
        await store.close()
    done = Counter(world.done)
    done["checked: guests moving off a lost host"] = sum(1 for snap in seen if snap.expired)
    done["checked: a migration target"] = sum(
        1 for snap in seen if any(b.migrating_to for b in snap.bindings.values())
    )
    if in_hypothesis:
        for outcome, n in done.items():
            if n:
                event(outcome)
    return done


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(operations, max_size=5),  # with START's 9: 25 operations at most
    st.lists(operations, max_size=6),
    st.lists(operations, max_size=5),
    st.lists(st.tuples(guests, guests), max_size=3),
)
def test_cache_matches_a_snapshot_after_random_operations(
    before: list[Op], during: list[Op], after: list[Op], traffic: list[tuple[str, str]]
) -> None:
    asyncio.run(scenario(before, during, after, traffic))


def test_the_random_operations_reach_the_interesting_states() -> None:
    """A fixed sequence through every operation, each one succeeding (the generator's
    operations are not all no-ops): bound, migrating, lost-host and pending guests."""
    before: list[Op] = [  # after START
        ("guest", "g3", 0, "web", 1, False),
        ("bind_new", ("db-2", "g3"), "h2"),
    ]
    during: list[Op] = [
        ("migrate", "db-1", "h2"),
        ("guest", "g4", 1, "db", 0, False),
        ("delete_guest", "db-2"),
        ("cordon", "h1", True),
        ("bind", "g2", "h2"),
        ("note", "g4", "no room"),
    ]
    after: list[Op] = [
        ("report", "g0", GuestState.RUNNING),
        ("guest", "g0", 2, None, 1, False),  # a bound guest's request grows
        ("drain", "h2"),
        ("beat", "h1"),
        ("lose", "h0"),  # h0's lease is gone and it is marked lost: g0 moves
        ("delete_host", "h1"),
    ]
    traffic = [("g0", "db-1"), ("g2", "nobody")]
    done = asyncio.run(scenario(before, during, after, traffic, in_hypothesis=False))
    assert not [k for k in done if k.endswith(("!", "-"))], done
    ran = sum(n for k, n in done.items() if not k.startswith("checked"))
    assert ran == len(START) + len(before) + len(during) + len(after)
    assert done["checked: guests moving off a lost host"] == 2
    assert done["checked: a migration target"] == len(after) + 1


# -- loading while the store changes ----------------------------------------------------------

REQ = {"cpu": 1.0, "memory_mib": 256, "iops": 0, "net_mbps": 0}


def guest(name: str, **spec: Any) -> Manifest:
    return Manifest(Kind.GUEST, name, {"image": "tiny", "request": REQ, **spec})


async def join(state: ClusterState, name: str, ttl: int = 3600) -> int:
    lease = await state.store.grant(ttl)
    spec = HostSpec(capacity=CAPACITIES[1], labels={})
    await state.register_host(HostName(name), spec, lease=lease.id, driver="sim", agent_version="t")
    return lease.id


async def test_writes_between_the_revision_and_the_load_replay_idempotently(
    state: ClusterState,
) -> None:
    store = state.store
    await join(state, "h1")
    await join(state, "h2")
    await state.apply([guest("a"), guest("b"), guest("c", app="web"), guest("d")])
    await state.bind("a", "h1", expected_revision=0)
    await state.bind("b", "h1", expected_revision=0)
    revision = await store.revision()
    # after R, before the range reads: a delete, a re-create of the same key (new record,
    # new MAC), a rebind, a new binding of a deleted-and-recreated guest, a guest created
    # and deleted, two updates of one guest, a new host
    old_b = await state.get_record(Kind.GUEST, "b")
    await state.delete_object(Kind.GUEST, "b")
    await state.apply([guest("b", app="web")])
    _, rev = await state.get_binding("a")
    await state.bind("a", "h2", expected_revision=rev)
    await state.bind("b", "h2", expected_revision=0)
    await state.delete_object(Kind.GUEST, "d")
    await state.apply([guest("d")])
    await state.apply([guest("e")])  # made and gone after R: never in the range reads
    await state.delete_object(Kind.GUEST, "e")
    await state.apply([guest("c", app="web", priority=1)])  # two changes of one key
    await state.apply([guest("c", app="web", priority=2)])
    await join(state, "h3")
    cache = ClusterCache()
    await cache.load(state, revision)
    read_at = await store.revision()
    assert cache.revision == revision  # it serves R until the watch replays past the reads
    assert cache.host_guests["h2"] == {"a", "b"}  # what the range reads saw
    seen: list[Event] = []

    async def feed() -> None:
        async for change in store.watch(keys.ROOT, revision + 1):
            cache.apply(change)  # every one of them a change the range reads already saw
            if change.revision < read_at:  # and again, with every older one, newest first
                seen.append(change)
                for old in reversed(seen):
                    cache.apply(old)

    task = asyncio.create_task(feed())
    try:
        await assert_matches(state, cache)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(seen) > 10
    assert {e.type for e in seen} == {EventType.PUT, EventType.DELETE}
    assert old_b is not None
    record = cache.guest("b")
    assert record is not None and record[0]["uid"] != old_b["uid"]
    assert old_b["nics"][0]["mac"] not in cache.macs  # the deleted record's MAC went with it
    assert record[0]["nics"][0]["mac"] in cache.macs
    assert cache.host_guests["h2"] == {"a", "b"}
    assert not cache.host_guests["h1"]
    assert cache.allocated["h2"] == Resources.from_dict(REQ) + Resources.from_dict(REQ)
    assert cache.pending == {"c", "d"}
    assert not cache.has_guest("e")
    c = cache.guest("c")
    assert c is not None and c[0]["spec"]["priority"] == 2
    assert cache.app_hosts["web"] == Counter({"h2": 1})


async def test_writes_between_the_range_reads_of_a_load(state: ClusterState) -> None:
    """The guest range read sees a guest whose binding, read later, is already gone (and
    a re-created one): the replay settles every index."""
    await join(state, "h1")
    await state.apply([guest("a", app="web"), guest("b", app="web"), guest("c")])
    await state.bind("a", "h1", expected_revision=0)
    await state.bind("b", "h1", expected_revision=0)

    async def delete_a() -> None:  # after the guests are read, before the bindings
        await state.delete_object(Kind.GUEST, "a")

    async def recreate_a_and_bind_c() -> None:
        await state.apply([guest("a")])
        await state.bind("c", "h1", expected_revision=0)

    async def unbind_b() -> None:
        _, rev = await state.get_binding("b")
        await state.bind("b", None, expected_revision=rev)

    cache = ClusterCache()
    writes = [_noop, delete_a, recreate_a_and_bind_c, unbind_b]  # one per range read
    async with following(state, cache, during_load=writes, stale_replays=True):
        await assert_matches(state, cache)
        assert cache.pending == {"a", "b"}
        assert cache.host_guests["h1"] == {"c"}
        assert not cache.app_hosts["web"]
        await state.delete_object(Kind.GUEST, "c")
        await assert_matches(state, cache)
        assert cache.allocated["h1"] == Resources()


async def _noop() -> None:
    return None


async def test_a_load_after_compaction_starts_afresh(state: ClusterState) -> None:
    """The manager re-loads the same cache when the watch history was compacted: nothing
    of the first load's indexes may be counted twice or outlive its key."""
    await join(state, "h1")
    await join(state, "h2")
    await state.apply([guest("a", app="web"), guest("b", app="web"), guest("c")])
    cache = ClusterCache()
    async with following(state, cache):
        await state.bind("a", "h1", expected_revision=0)
        await state.bind("b", "h1", expected_revision=0)
        await assert_matches(state, cache)
    # while no watch runs: changes the cache never sees as events
    await state.delete_object(Kind.GUEST, "a")
    _, rev = await state.get_binding("b")
    await state.bind("b", "h2", expected_revision=rev)
    await state.bind("c", "h2", expected_revision=0)
    await state.store.compact(await state.store.revision())
    async with following(state, cache):
        await assert_matches(state, cache)
        assert cache.host_guests["h2"] == {"b", "c"} and not cache.host_guests["h1"]
        assert cache.app_hosts["web"] == Counter({"h2": 1})
        assert cache.allocated["h1"] == Resources()


async def test_a_reload_does_not_claim_a_revision_it_has_not_read(
    state: ClusterState,
) -> None:
    """A reload (after compaction) runs while the controllers' workers read the cache:
    until it is done, waiting for a revision must not report the cache caught up."""
    await join(state, "h1")
    await state.apply([guest("a")])
    await state.bind("a", "h1", expected_revision=0)
    cache = ClusterCache()
    revision = await state.store.revision()
    await cache.load(state, revision)
    assert cache.has_guest("a") and await cache.wait_for(revision, timeout=0)
    reading, gate = asyncio.Event(), asyncio.Event()

    async def held() -> None:  # every range read of the reload waits for the gate
        reading.set()
        await gate.wait()

    store = cast(MemoryStore, state.store)
    reload = asyncio.create_task(
        cache.load(ClusterState(cast(Store, HookedStore(store, held))), revision)
    )
    try:
        await asyncio.wait_for(reading.wait(), WAIT)
        caught = await cache.wait_for(revision, timeout=0.05)
        # a reader told "caught up" decides on what it sees: the guest and its room
        assert not caught or (cache.has_guest("a") and cache.host_guests["h1"] == {"a"})
    finally:
        gate.set()
        await asyncio.wait_for(reload, WAIT)
    assert await cache.wait_for(revision, timeout=0)
    assert cache.has_guest("a") and cache.host_guests["h1"] == {"a"}


async def test_a_migration_target_holds_the_guests_room(state: ClusterState) -> None:
    await join(state, "h1")
    await join(state, "h2")
    await state.apply([guest("a", app="web")])
    cache = ClusterCache()
    async with following(state, cache):
        binding = await state.bind("a", "h1", expected_revision=0)
        assert binding is not None
        await state.report_guest_status("h1", "a", binding.epoch, GuestState.RUNNING)
        migrations = Migrations(state)
        record = await migrations.request("a", "h2")
        assert (await migrations.start("a", record["id"], "h2")).accepted
        await assert_matches(state, cache)
        one = Resources.from_dict(REQ)
        assert cache.allocated["h1"] == one and cache.allocated["h2"] == one
        assert cache.host_guests["h2"] == set()
        assert cache.app_hosts["web"] == Counter({"h1": 1, "h2": 1})
        request, _ = cache.placement_request(frozenset(), {})
        row = request.hosts.index["h2"]
        assert request.hosts.allocated[row].tolist() == list(one.as_tuple())
        assert await migrations.fail("a", record["id"], "test")
        await assert_matches(state, cache)
        assert cache.allocated["h2"] == Resources()


async def test_placement_request_with_no_hosts(state: ClusterState) -> None:
    """Guests applied before any host joined: the scheduler gets an empty host table
    (and says why nothing is placed), as it does from a snapshot."""
    await state.apply([guest("a")])
    cache = ClusterCache()
    async with following(state, cache):
        snapshot = await read_snapshot(state)
        want, _ = placement_request(snapshot)
        assert len(want.hosts) == 0 and want.hosts.allocated.shape == (0, 4)
        await caught_up(state, cache)
        got, _ = cache.placement_request(frozenset(), {})
        assert [g.name for g in got.guests] == ["a"]
        assert got.hosts.allocated.shape == (0, 4)


# -- wait_for --------------------------------------------------------------------------------


def event_at(revision: int, key: str = keys.EVENTS + "x") -> Event:
    kv = KeyValue(key, b"{}", revision, revision, 1, 0)
    return Event(EventType.PUT, kv)


async def test_wait_for_returns_at_once_when_caught_up(state: ClusterState) -> None:
    await state.apply([guest("a")])
    cache = ClusterCache()
    revision = await state.store.revision()
    await cache.load(state, revision)
    started = time.monotonic()
    assert await cache.wait_for(revision, timeout=0.0)
    assert await cache.wait_for(revision - 1, timeout=0.0)
    assert time.monotonic() - started < 0.1


async def test_wait_for_times_out_when_the_revision_never_comes(state: ClusterState) -> None:
    cache = ClusterCache()
    revision = await state.store.revision()
    await cache.load(state, revision)
    started = time.monotonic()
    assert not await cache.wait_for(revision + 1, timeout=0.2)
    assert 0.19 <= time.monotonic() - started < 2.0
    assert not cache._waiters  # the timed-out waiter is forgotten


async def test_wait_for_an_unloaded_cache_waits(state: ClusterState) -> None:
    assert not await ClusterCache().wait_for(0, timeout=0.05)


async def test_a_waiter_is_woken_by_an_event_at_or_past_its_revision(
    state: ClusterState,
) -> None:
    cache = ClusterCache()
    revision = await state.store.revision()
    await cache.load(state, revision)
    exact = asyncio.create_task(cache.wait_for(revision + 1, timeout=WAIT))
    past = asyncio.create_task(cache.wait_for(revision + 2, timeout=WAIT))
    later = asyncio.create_task(cache.wait_for(revision + 10, timeout=WAIT))
    await asyncio.sleep(0)
    assert len(cache._waiters) == 3
    cache.apply(event_at(revision + 1))
    assert await asyncio.wait_for(exact, WAIT)
    assert not past.done()
    cache.apply(event_at(revision + 3))  # jumps past the second waiter's revision
    assert await asyncio.wait_for(past, WAIT)
    await asyncio.sleep(0.01)
    assert not later.done()
    cache.apply(event_at(revision + 10, keys.binding_key("nobody")))
    assert await asyncio.wait_for(later, WAIT)
    assert not cache._waiters
    assert cache.revision == revision + 10


async def test_a_waiter_is_woken_by_the_watch(state: ClusterState) -> None:
    cache = ClusterCache()
    async with following(state, cache):
        revision = (await state.apply([guest("a")])).revision
        assert await cache.wait_for(revision, timeout=WAIT)
        assert cache.has_guest("a") and cache.pending == {"a"}


# -- liveness_changes -------------------------------------------------------------------------


async def test_liveness_changes(state: ClusterState, clock: FakeClock) -> None:
    names = ("old", "fresh", "back", "stuck", "gone", "lost")
    leases = {name: await join(state, name) for name in names}
    await state.set_host_state("back", HostState.SUSPECT)
    await state.set_host_state("stuck", HostState.SUSPECT)
    await state.set_host_state("lost", HostState.LOST)
    clock.advance(30)
    await state.record_keepalive("fresh", leases["fresh"])
    await state.record_keepalive("back", leases["back"])
    # not live (liveness key and renewal gone with the lease): never listed, ready or lost
    await state.store.revoke(leases["gone"])
    await state.store.revoke(leases["lost"])
    cache = ClusterCache()
    async with following(state, cache):
        await caught_up(state, cache)
        now = clock.now + 1
        assert sorted(cache.liveness_changes(now, suspect_after=5)) == ["back", "old"]
        # a threshold no renewal age reaches: every suspect host counts as renewed
        assert sorted(cache.liveness_changes(now, suspect_after=3600)) == ["back", "stuck"]
        await state.set_host_state("back", HostState.READY)  # what the controller does
        await state.set_host_state("old", HostState.SUSPECT)
        await caught_up(state, cache)
        assert cache.liveness_changes(now, suspect_after=5) == []
        clock.advance(30)
        # renewals age: the ready ones go stale; the stale suspect ones stay as they are
        assert sorted(cache.liveness_changes(clock.now, suspect_after=5)) == ["back", "fresh"]


# -- host_table --------------------------------------------------------------------------------


async def test_host_table_is_rebuilt_only_when_a_host_changes(state: ClusterState) -> None:
    lease = await join(state, "h1")
    await join(state, "h2")
    await state.apply([guest("a"), guest("b")])
    cache = ClusterCache()
    async with following(state, cache):
        await caught_up(state, cache)
        table = cache.host_table()
        assert cache.host_table() is table
        assert table.names == ("h1", "h2") and table.ready.tolist() == [True, True]

        await state.bind("a", "h1", expected_revision=0)
        await state.record_keepalive("h1", lease)  # a renewal is no row change
        await state.note_unplaced("b", "no room")
        await caught_up(state, cache)
        assert cache.host_table() is table
        assert not table.allocated.any()
        request, _ = cache.placement_request(frozenset(), {})
        one = Resources.from_dict(REQ)
        assert request.hosts.allocated.tolist() == [list(one.as_tuple()), [0.0] * 4]
        assert [g.name for g in request.guests] == ["b"]
        assert not table.allocated.any()  # with_allocated left the cached table alone

        async def changed(write: Callable[[], Awaitable[object]]) -> Any:
            nonlocal table
            await write()
            await caught_up(state, cache)
            new = cache.host_table()
            assert new is not table
            assert cache.host_table() is new
            table = new
            return new

        t = await changed(lambda: state.set_cordoned("h2", True))
        assert t.cordoned.tolist() == [False, True]
        t = await changed(lambda: state.set_host_state("h1", HostState.SUSPECT))
        assert t.ready.tolist() == [False, True]
        t = await changed(lambda: state.store.revoke(lease))  # h1 no longer live
        assert t.ready.tolist() == [False, True]
        assert cache.host("h1") is not None and not cache.host("h1").live  # type: ignore[union-attr]
        t = await changed(lambda: join(state, "h3"))
        assert t.names == ("h1", "h2", "h3")
        t = await changed(lambda: state.delete_object(Kind.HOST, "h2"))
        assert t.names == ("h1", "h3")
        await state.bind("b", "h3", expected_revision=(await state.get_binding("b"))[1])
        await caught_up(state, cache)
        assert cache.host_table() is table
        request, _ = cache.placement_request(frozenset(), {})
        assert request.hosts.allocated.tolist() == [list(one.as_tuple())] * 2
        assert request.guests == []
