"""Pure decisions: ``plan_*(desired, observed) -> actions``. No I/O, fully unit-testable.

The appliers in :mod:`podium.controller._controllers` execute these actions.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podium.controller._snapshot import HostRecord, Snapshot
from podium.model import HostState, Resources, Spread
from podium.scheduler import (
    GuestRequest,
    HostRow,
    HostTable,
    PlacementRequest,
    PlacementResult,
    Scheduler,
)

JSON = dict[str, Any]

# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """Record a cluster event."""

    kind: str
    name: str
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class CreateGuests:
    """Create replicas ``(name, spec)`` owned by ``app``."""

    app: str
    guests: tuple[tuple[str, JSON], ...]


@dataclass(frozen=True, slots=True)
class DeleteGuests:
    """Delete replicas (their bindings and assignments go with them)."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetHostState:
    host: str
    state: HostState


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Nothing to do yet; look again after ``delay`` seconds."""

    reason: str
    delay: float


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind ``guest`` to ``host`` (epoch + 1), guarded by the binding's ``revision``.

    ``moved_from`` is the lost host it leaves (then the bind also requires that host's
    liveness key to be absent), or ``None`` for a first placement.
    """

    guest: str
    host: str
    revision: int
    moved_from: str | None = None


@dataclass(frozen=True, slots=True)
class Unbind:
    """Take ``guest`` off lost host ``moved_from`` when no other host can take it."""

    guest: str
    revision: int
    moved_from: str
    reason: str


@dataclass(frozen=True, slots=True)
class NoteUnplaced:
    """Record why an unbound guest waits."""

    guest: str
    reason: str


AppAction = CreateGuests | DeleteGuests | Emit
HostAction = SetHostState | Emit | RetryLater
PlacementAction = Bind | Unbind | NoteUnplaced

# -- app: replicas -> owned guests ---------------------------------------------------------

_INDEX = re.compile(r"-(\d+)$")


def replica_index(app: str, name: str) -> int | None:
    """``n`` of a replica named ``<app>-<n>``, else ``None``."""
    if not name.startswith(app + "-"):
        return None
    m = _INDEX.search(name)
    return int(m.group(1)) if m and m.start() == len(app) else None


def replica_spec(app: str, spec: Mapping[str, Any]) -> JSON:
    """The guest spec of one replica of an App spec."""
    return {
        "image": spec.get("image", "tiny"),
        "request": dict(spec["request"]),
        "priority": int(spec.get("priority", 0)),
        "running": True,
        "app": app,
        "spread": spec.get("spread"),
        "nics": [{} for _ in spec.get("nics", [{}])],
        "disk_gib": spec.get("disk_gib", 1.0),
        "workload": spec.get("workload", "idle"),
        **{k: spec[k] for k in ("qos", "near", "talks_to", "tolerations", "site") if spec.get(k)},
    }


def plan_app(
    app: str,
    record: JSON | None,
    guests: Sequence[JSON],
    *,
    taken: Callable[[str], bool] | None = None,
) -> list[AppAction]:
    """Converge ``app``'s owned guests to its replica count.

    ``guests``: the app's owned guests, and any other guest whose name starts with
    ``<app>-``; ``taken`` (default: a name of ``guests``) says a name is in use. New
    replicas take the lowest free indices (from 1); scale-down removes the highest.
    A deleted App (``record`` None) loses all its guests. Spec changes apply to new
    replicas only (rolling updates are later work).
    """
    owned = [g for g in guests if g.get("owner") == app]

    def order(g: JSON) -> tuple[int, str]:
        index = replica_index(app, g["name"])
        return (index if index is not None else 1 << 62, g["name"])

    if record is None:
        doomed = tuple(g["name"] for g in sorted(owned, key=order, reverse=True))
        if not doomed:
            return []
        return [
            DeleteGuests(doomed),
            Emit("App", app, "AppDeleted", f"deleted {len(doomed)} guests of deleted app {app}"),
        ]
    replicas = int(record["spec"]["replicas"])
    if len(owned) > replicas:
        doomed = tuple(
            g["name"] for g in sorted(owned, key=order, reverse=True)[: len(owned) - replicas]
        )
        return [
            DeleteGuests(doomed),
            Emit("App", app, "ScaledDown", f"deleted {_names(doomed)} ({replicas} replicas)"),
        ]
    if len(owned) < replicas:
        if taken is None:
            names = {g["name"] for g in guests}
            taken = names.__contains__
        spec = replica_spec(app, record["spec"])
        new: list[tuple[str, JSON]] = []
        n = 0
        while len(new) < replicas - len(owned):
            n += 1
            if not taken(f"{app}-{n}"):
                new.append((f"{app}-{n}", spec))
        return [
            CreateGuests(app, tuple(new)),
            Emit(
                "App",
                app,
                "ScaledUp",
                f"created {_names([n for n, _ in new])} ({replicas} replicas)",
            ),
        ]
    return []


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- hosts: liveness ----------------------------------------------------------------------------


def beat_age(host: HostRecord, now: float | None) -> float | None:
    """Seconds since the host's last recorded renewal (``None``: unknown)."""
    return None if host.beat is None or now is None else now - host.beat


def is_stale(host: HostRecord, now: float | None, suspect_after: float | None) -> bool:
    """Whether a live host missed renewals: no keepalive for more than ``suspect_after``."""
    age = beat_age(host, now)
    return suspect_after is not None and age is not None and age > suspect_after


def plan_host(
    host: HostRecord | None,
    *,
    lease_alive: bool,
    was_live: bool | None,
    retry: float,
    now: float | None = None,
    suspect_after: float | None = None,
) -> list[HostAction]:
    """Judge a host's liveness from its liveness key, which lives on its lease, and from
    the age of its last renewal (``now - host.beat``, server time).

    - live, ready, no renewal for more than ``suspect_after`` -> suspect (``HostSuspect``);
      its guests stay where they are, nothing new is placed there
    - live, suspect, renewed since    -> ready (``HostRecovered``)
    - live, not marked ready          -> ready (``HostReady``)
    - live again after we saw it gone -> ``HostReady`` (registration already marked it)
    - key gone, lease still alive     -> wait (never declare lost before the lease expired)
    - key gone, lease expired         -> lost (``HostLost``); placement then moves its guests
    """
    if host is None or host.state == HostState.LEFT.value:
        return []
    if host.live:
        age = beat_age(host, now)
        if is_stale(host, now, suspect_after) and host.state in (
            HostState.READY.value,
            HostState.SUSPECT.value,
        ):
            if host.state == HostState.SUSPECT.value:
                return []
            return [
                SetHostState(host.name, HostState.SUSPECT),
                Emit(
                    "Host",
                    host.name,
                    "HostSuspect",
                    f"host {host.name} is suspect: no renewal for {age:.1f} s (more than "
                    f"{suspect_after:g} s); its guests stay put unless its lease expires",
                    warning=True,
                ),
            ]
        if host.state == HostState.SUSPECT.value:
            return [
                SetHostState(host.name, HostState.READY),
                Emit("Host", host.name, "HostRecovered", f"host {host.name} renews again"),
            ]
        if host.state != HostState.READY.value:
            return [
                SetHostState(host.name, HostState.READY),
                Emit("Host", host.name, "HostReady", f"host {host.name} is ready"),
            ]
        if was_live is False:
            return [Emit("Host", host.name, "HostReady", f"host {host.name} is ready again")]
        return []
    if host.state == HostState.LOST.value:
        return []
    if lease_alive:
        return [RetryLater(f"host {host.name}: liveness key gone but lease alive", retry)]
    return [
        SetHostState(host.name, HostState.LOST),
        Emit(
            "Host",
            host.name,
            "HostLost",
            f"host {host.name} lost: its lease expired; moving its guests",
            warning=True,
        ),
    ]


# -- placement: unbound guests, and guests of lost hosts -------------------------------------


def guest_request(record: JSON, *, moving: bool = False) -> GuestRequest:
    spec = record["spec"]
    spread = spec.get("spread")
    return GuestRequest(
        name=record["name"],
        request=Resources.from_dict(spec.get("request", {})),
        app=spec.get("app") or record.get("owner"),
        spread=Spread(spread) if spread else None,
        priority=int(spec.get("priority", 0)),
        moving=moving,
        near=tuple(spec.get("near", ())),
        talks_to=tuple(spec.get("talks_to", ())),
        tolerations=tuple(spec.get("tolerations", ())),
        site=spec.get("site"),
    )


@dataclass(frozen=True)
class PlacementPlan:
    """The scheduler's input, which guests leave a lost host, and the resulting actions."""

    request: PlacementRequest
    moving: dict[str, str]  # guest -> lost host it leaves
    actions: list[PlacementAction]


def host_row(host: HostRecord, allocated: Resources) -> HostRow:
    """The scheduler's view of a host: room, readiness, cordon, drain, labels, taints."""
    spec = host.spec
    return HostRow(
        name=host.name,
        capacity=Resources.from_dict(spec.get("capacity", {})),
        allocated=allocated,
        ready=host.live and host.state == HostState.READY.value,
        cordoned=bool(spec.get("cordoned")),
        labels=spec.get("labels", {}),
        draining=bool(spec.get("draining")) and not spec.get("drained"),
        taints=spec.get("taints", {}),
    )


def placement_request(snapshot: Snapshot) -> tuple[PlacementRequest, dict[str, str]]:
    """Guests to place (unbound, or bound to a host whose lease expired) on a host table."""
    moving = {
        g: b.host
        for g, b in snapshot.bindings.items()
        if b.host and b.host in snapshot.expired and g in snapshot.guests
    }
    todo = [
        guest_request(rec, moving=name in moving)
        for name, rec in snapshot.guests.items()
        if name in moving or name not in snapshot.bindings or snapshot.bindings[name].host is None
    ]
    allocated: dict[str, Resources] = defaultdict(Resources)
    placed: dict[str, list[str]] = defaultdict(list)
    for name, b in snapshot.bindings.items():
        rec = snapshot.guests.get(name)
        if b.host is None or rec is None or name in moving:
            continue
        g = guest_request(rec)
        allocated[b.host] = allocated[b.host] + g.request
        if g.app is not None:
            placed[g.app].append(b.host)
        if b.migrating_to is not None:  # a live migration's target holds its room as well
            allocated[b.migrating_to] = allocated[b.migrating_to] + g.request
            if g.app is not None:
                placed[g.app].append(b.migrating_to)
    rows = [host_row(h, allocated[h.name]) for h in snapshot.hosts.values()]
    guest_hosts = {
        name: b.host for name, b in snapshot.bindings.items() if b.host and name not in moving
    }
    guest_apps = {
        name: app
        for name, rec in snapshot.guests.items()
        if (app := rec["spec"].get("app") or rec.get("owner"))
    }
    request = PlacementRequest(
        HostTable.build(rows),
        todo,
        dict(placed),
        traffic=snapshot.traffic,
        guest_hosts=guest_hosts,
        guest_apps=guest_apps,
    )
    return request, moving


def plan_placement(snapshot: Snapshot, scheduler: Scheduler) -> PlacementPlan:
    """Place what is unbound and move what sits on lost hosts, in priority order."""
    request, moving = placement_request(snapshot)
    result = scheduler.place(request)
    actions = placement_actions(
        result,
        moving,
        lambda g: snapshot.bindings[g].revision if g in snapshot.bindings else 0,
        lambda g: snapshot.statuses.get(g, {}).get("message"),
    )
    return PlacementPlan(request, moving, actions)


def placement_actions(
    result: PlacementResult,
    moving: Mapping[str, str],
    revision_of: Callable[[str], int],
    message_of: Callable[[str], str | None],
) -> list[PlacementAction]:
    """Binds for what the scheduler placed; for the rest, an unbind off a lost host or a
    note of why it waits (unless its status already says so). ``revision_of``: the
    guest's binding mod revision (0: never bound); ``message_of``: its status message."""
    actions: list[PlacementAction] = []
    for guest, host in result.placements.items():
        actions.append(Bind(guest, host, revision_of(guest), moving.get(guest)))
    for guest, reason in result.unplaced.items():
        if guest in moving:
            actions.append(Unbind(guest, revision_of(guest), moving[guest], reason))
        elif message_of(guest) != reason:
            actions.append(NoteUnplaced(guest, reason))
    return actions
