"""Routing watch events by key prefix: the router itself, and the manager's use of it
(a controller is offered every event it reacts to, and no other)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from podium.controller._cache import ClusterCache
from podium.controller._controllers import CONTROLLERS, Context, Controller
from podium.controller._events import EventRecorder
from podium.controller._leader import Leadership
from podium.controller._manager import controller_router
from podium.controller._rebalance import RebalanceController
from podium.controller._routing import MAX_HEADS, PrefixRouter
from podium.controller._snapshot import BindingRow
from podium.model import Kind
from podium.scheduler import default_scheduler
from podium.state import ClusterState, dumps, keys, loads
from podium.store import Event, EventType, KeyValue
from tests.unit.controller.ctrl_support import FakeClock

# -- the router ------------------------------------------------------------------------------


def brute(routes: list[tuple[str, tuple[str, ...] | None]], key: str) -> tuple[str, ...]:
    return tuple(t for t, p in routes if p is None or key.startswith(p))


ROUTES: list[tuple[str, tuple[str, ...] | None]] = [
    ("guests", ("/p/objects/Guest/",)),
    ("objects", ("/p/objects/",)),
    ("everything", None),
    ("nested", ("/p/objects/Gu", "/p/objects/Guest/a")),
    ("short", ("/p/b",)),
    ("none", ()),
]


def test_routes_to_the_prefixes_a_key_starts_with_in_order() -> None:
    router = PrefixRouter(ROUTES)
    for _ in range(2):  # (the second time from the tables built the first)
        assert router.route("/p/objects/Guest/a1") == ("guests", "objects", "everything", "nested")
        assert router.route("/p/objects/Guest/b") == ("guests", "objects", "everything", "nested")
        assert router.route("/p/objects/Host/h") == ("objects", "everything")
        assert router.route("/p/bindings/g") == ("everything", "short")
        assert router.route("/p/assign/h/g") == ("everything",)
        assert router.route("/p/leader") == ("everything",)  # no third "/": a scan
        assert router.route("") == ("everything",)


def test_past_max_heads_keys_still_route_right() -> None:
    router = PrefixRouter([("a", ("/p/a/",)), ("x", ("/p/x",))])
    for i in range(MAX_HEADS + 10):
        assert router.route(f"/p/x{i}/k") == ("x",)
    assert router.route("/p/a/k") == ("a",)


SEGMENTS = st.sampled_from(["", "/", "p", "p/", "/p/", "a", "ab", "a/", "b/c"])
PREFIX = st.lists(SEGMENTS, max_size=4).map("".join)


@given(
    st.lists(st.one_of(st.none(), st.lists(PREFIX, max_size=3).map(tuple)), max_size=5),
    st.lists(st.lists(SEGMENTS, max_size=6).map("".join), max_size=20),
)
def test_routes_as_a_scan_of_every_prefix_would(
    prefixes: list[tuple[str, ...] | None], keys_: list[str]
) -> None:
    routes = [(f"t{i}", p) for i, p in enumerate(prefixes)]
    router = PrefixRouter(routes)
    for key in keys_ * 2:
        assert router.route(key) == brute(routes, key)


# -- the manager's routing --------------------------------------------------------------------

READY, DRAINING, GONE = "h-ready", "h-drain", "h-gone"  # (h-gone: a host the cache lacks)


def host_event(name: str, spec: dict[str, Any], revision: int) -> Event:
    record = dumps({"kind": "Host", "name": name, "spec": spec})
    return Event(
        EventType.PUT, KeyValue(keys.object_key(Kind.HOST, name), record, revision, revision, 1)
    )


def catalogue(revision: int) -> list[Event]:
    """A put, an update and a delete under every key prefix of the store's layout, their
    values naming each kind of host (ready, draining, unknown) where a value names one."""
    values = [
        {
            "host": host,
            "source": host,
            "state": state,
            "owner": "app",
            "target": "replica",
            "guest": "g",
            "id": "b1",
            "epoch": 1,
        }
        for host in (READY, DRAINING, GONE)
        for state in ("running", "pending", "failed")
    ]
    keyed = [
        *(keys.object_key(kind, "g") for kind in Kind),
        keys.host_status_key(READY),
        keys.host_live_key(READY),
        keys.host_beat_key(READY),
        keys.host_beat_key("h-suspect"),
        keys.binding_key("g"),
        keys.binding_key("flying"),
        keys.object_key(Kind.GUEST, "flying"),
        keys.assign_key(READY, "g"),
        keys.assign_key(DRAINING, "g"),
        keys.assign_key(GONE, "g"),
        keys.guest_status_key("g"),
        keys.EVENTS + "1-x",
        keys.token_key("t"),
        keys.host_tokens_prefix(READY) + "t",
        keys.LEADER,
        keys.mac_key("52:54:00:00:00:01"),
        keys.ip_key("10.0.0.1"),
        keys.wwn_key("w"),
        keys.pool_key("pool", "v"),
        keys.profile_use_key("p"),
        keys.backup_key("g", "b1"),
        keys.backup_key("flying", "b2"),
        keys.console_key("g"),
        keys.migration_key("g"),
        keys.traffic_key(READY),
        keys.dr_test_key("a", "b"),
    ]
    out = []
    for key, (before, after) in itertools.product(keyed, itertools.pairwise(values)):
        revision += 2
        prev = KeyValue(key, dumps(before), revision - 1, revision - 1, 1)
        now = KeyValue(key, dumps(after), revision - 1, revision, 2)
        gone = KeyValue(key, b"", revision - 1, revision, 0)
        out += [
            Event(EventType.PUT, KeyValue(key, dumps(after), revision, revision, 1)),
            Event(EventType.PUT, now, prev),
            Event(EventType.DELETE, gone, prev),
        ]
    return out


def controllers_for(ctx: Context) -> list[Controller]:
    made: list[Controller] = [f(ctx) for f in CONTROLLERS]
    made.append(RebalanceController(ctx, rebalancer=None, interval=5.0))  # type: ignore[arg-type]
    backups = next(c for c in made if c.name == "backup")
    flying = dumps({"state": "running", "guest": "flying", "id": "b2"})
    backups.keys_for(  # a backup in flight: its guest's bindings matter to the sweeper
        Event(EventType.PUT, KeyValue(keys.backup_key("flying", "b2"), flying, 2, 2, 1))
    )
    host = next(c for c in made if c.name == "host")
    host._suspect.add("h-suspect")  # type: ignore[attr-defined]  # renewals matter
    return made


def test_a_controller_is_offered_every_event_it_reacts_to(state: ClusterState) -> None:
    ctx = Context(
        state, Leadership("t", 0, 1), EventRecorder(state), default_scheduler(), 10, FakeClock()
    )
    ctx.cache.apply(host_event(READY, {}, 10))
    ctx.cache.apply(host_event(DRAINING, {"draining": True}, 11))
    routed, offered_all = controllers_for(ctx), controllers_for(ctx)
    router = controller_router(routed)
    reacted: dict[str, int] = {c.name: 0 for c in routed}
    for event in catalogue(100):
        ctx.cache.apply(event)
        names = {c.name for c in router.route(event.kv.key)}
        for c in offered_all:  # as the manager did before: every controller, every event
            made = list(c.keys_for(event))
            if made:
                reacted[c.name] += 1
                assert c.name in names, (c.name, event)
        for c in routed:
            if c.name in names:
                list(c.keys_for(event))  # (keeps the routed ones' own state alike)
    # the catalogue did exercise each controller (but the periodic rebalancer)
    assert [n for n, count in reacted.items() if not count] == ["rebalance"]


def test_the_events_of_a_placement_reach_only_who_cares(state: ClusterState) -> None:
    """Per guest a placement makes four events: most controllers must not see them."""
    ctx = Context(
        state, Leadership("t", 0, 1), EventRecorder(state), default_scheduler(), 10, FakeClock()
    )
    router = controller_router(controllers_for(ctx))

    def names(key: str) -> list[str]:
        return [c.name for c in router.route(key)]

    assert names(keys.object_key(Kind.GUEST, "g")) == ["app", "placement", "backup"]
    assert names(keys.mac_key("52:54:00:00:00:01")) == []
    assert names(keys.binding_key("g")) == ["placement", "backup", "migration", "drain"]
    assert names(keys.assign_key(READY, "g")) == ["drain"]
    assert names(keys.EVENTS + "1-x") == []
    assert names(keys.object_key(Kind.HOST, READY)) == ["host", "placement", "migration", "drain"]


def test_a_controller_declaring_no_prefixes_sees_every_event() -> None:
    class Old:
        name = "old"

    router = controller_router([Old()])  # type: ignore[list-item]
    assert [c.name for c in router.route(keys.mac_key("m"))] == ["old"]


# -- the cache's parsed values ----------------------------------------------------------------


def test_value_of_reuses_what_apply_parsed_and_equals_loads() -> None:
    cache = ClusterCache()
    key = keys.binding_key("g")
    first = Event(EventType.PUT, KeyValue(key, dumps({"host": "h1", "epoch": 1}), 5, 5, 1))
    cache.apply(first)
    kept = cache.binding("g")
    assert kept is not None and kept.host == "h1"
    assert cache.value_of(first) is cache._bindings.items["g"][0]  # no second parse
    assert cache.prev_value_of(first) is None
    moved = Event(
        EventType.PUT,
        KeyValue(key, dumps({"host": "h2", "epoch": 2}), 5, 6, 2),
        first.kv,
    )
    cache.apply(moved)
    assert cache.value_of(moved) == {"host": "h2", "epoch": 2}
    assert cache.prev_value_of(moved) == {"host": "h1", "epoch": 1}
    # an event apply did not keep (stale here): parsed from its own bytes
    stale = Event(EventType.PUT, KeyValue(key, dumps({"host": "h9", "epoch": 9}), 5, 4, 1))
    cache.apply(stale)
    assert cache.value_of(stale) == {"host": "h9", "epoch": 9}
    assert cache.binding("g") == BindingRow("h2", 2, 6)
    # a delete: no value; the value before, as the store sent it
    gone = Event(EventType.DELETE, KeyValue(key, b"", 5, 7, 0), moved.kv)
    cache.apply(gone)
    assert cache.value_of(gone) is None
    assert cache.prev_value_of(gone) == loads(moved.kv.value)
    # a key the cache does not keep
    mac = Event(EventType.PUT, KeyValue(keys.mac_key("m"), dumps({"guest": "g"}), 8, 8, 1))
    cache.apply(mac)
    assert cache.value_of(mac) == {"guest": "g"}


# -- liveness, kept as the hosts change --------------------------------------------------------


def scanned_liveness(cache: ClusterCache, now: float, suspect_after: float) -> set[str]:
    """What liveness_changes said when it read every live host's status and renewal."""
    out = set()
    for name in cache._host_live.items:
        status = cache._host_status.items.get(name)
        state = status[0].get("state") if status is not None else None
        if state not in ("ready", "suspect"):
            continue
        beat = cache._host_beat.items.get(name)
        at = beat[0].get("at") if beat is not None else None
        if (at is not None and now - float(at) > suspect_after) != (state == "suspect"):
            out.add(name)
    return out


HOST_KEYS = st.sampled_from([keys.host_status_key, keys.host_live_key, keys.host_beat_key])
VALUES = st.sampled_from(
    [
        {"state": "ready"},
        {"state": "suspect"},
        {"state": "lost"},
        {},
        {"at": 100.0},
        {"at": 190.0},
        {"at": None},
    ]
)


@given(
    st.lists(
        st.tuples(HOST_KEYS, st.sampled_from(["h1", "h2"]), st.booleans(), VALUES),
        max_size=40,
    )
)
@example(  # ready and late; then suspect, renewed; then not live
    [
        (keys.host_live_key, "h1", True, {}),
        (keys.host_status_key, "h1", True, {"state": "ready"}),
        (keys.host_beat_key, "h1", True, {"at": 100.0}),
        (keys.host_status_key, "h1", True, {"state": "suspect"}),
        (keys.host_beat_key, "h1", True, {"at": 190.0}),
        (keys.host_live_key, "h1", False, {}),
    ]
)
def test_liveness_changes_follow_every_host_change(
    changes: list[tuple[Any, str, bool, dict[str, Any]]],
) -> None:
    cache = ClusterCache()
    for revision, (key_of, host, put, value) in enumerate(changes, start=1):
        key = key_of(host)
        if put:
            cache.apply(Event(EventType.PUT, KeyValue(key, dumps(value), revision, revision, 1)))
        else:
            cache.apply(Event(EventType.DELETE, KeyValue(key, b"", revision, revision, 0)))
        for now, after in ((200.0, 5.0), (200.0, 50.0), (200.0, 500.0)):
            got = cache.liveness_changes(now, after)
            assert len(got) == len(set(got))
            assert set(got) == scanned_liveness(cache, now, after)
