"""Where a live migration goes: the scheduler over every host but the guest's own.

::

    host views + guest views (the API's shapes) ──> MigrationPlanner.from_views
        rows: ready = state "ready"; cordoned, draining, taints; allocated as shown
              (a migration's target already counts the guest coming to it)
    planner.choose(scheduler, guest)   ──> best host but its source, or "0/N hosts fit: ..."
    planner.problem(guest, target)     ──> why ``target`` cannot take it (one line), or None
    planner.reserve(guest, target)     ──> consume virtually (several starts in one pass)

Pure: reads the views it is given, writes nothing. The spread of the guest's app counts
every other replica where it runs and where it is migrating to, never the guest itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from podium.model import DIMENSIONS, Resources, Spread
from podium.scheduler._framework import Scheduler
from podium.scheduler._plugins import EPS, BatchState, SpreadFilter
from podium.scheduler._table import GuestRequest, HostRow, HostTable, PlacementRequest

JSON = dict[str, Any]
IN_FLIGHT = ("preparing", "transferring")


def guest_request_of(view: Mapping[str, Any]) -> GuestRequest:
    """The scheduler's request for a guest view (``spec.request``, app, spread, priority)."""
    spec = view.get("spec", {})
    spread = spec.get("spread")
    return GuestRequest(
        name=str(view["name"]),
        request=Resources.from_dict(spec.get("request", {})),
        app=spec.get("app") or view.get("owner"),
        spread=Spread(spread) if spread else None,
        priority=int(spec.get("priority", 0)),
        moving=True,
        near=tuple(spec.get("near", ())),
        tolerations=tuple(spec.get("tolerations", ())),
        site=spec.get("site"),
    )


def host_row_of(view: Mapping[str, Any]) -> HostRow:
    status = view.get("status", {})
    return HostRow(
        name=str(view["name"]),
        capacity=Resources.from_dict(status.get("capacity", {})),
        allocated=Resources.from_dict(status.get("allocated", {})),
        ready=status.get("state") == "ready",
        cordoned=bool(status.get("cordoned")),
        labels=dict(status.get("labels", {})),
        draining=bool(status.get("draining")),
        taints=dict(status.get("taints", {})),
    )


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass
class MigrationPlanner:
    """Hosts and replicas as the views show them, for choosing and checking targets."""

    hosts: dict[str, JSON]
    rows: dict[str, HostRow]
    guests: dict[str, JSON]
    where: dict[str, list[str]] = field(default_factory=dict)  # guest -> hosts it occupies

    @classmethod
    def from_views(
        cls, host_views: Iterable[JSON], guest_views: Iterable[JSON]
    ) -> MigrationPlanner:
        hosts = {str(h["name"]): h for h in host_views}
        guests = {str(g["name"]): g for g in guest_views}
        where: dict[str, list[str]] = {}
        for name, g in guests.items():
            status = g.get("status", {})
            places = [status["host"]] if status.get("host") else []
            migration = status.get("migration") or {}
            if migration.get("state") in IN_FLIGHT and migration.get("to"):
                places.append(str(migration["to"]))
            where[name] = places
        rows = {name: host_row_of(h) for name, h in hosts.items()}
        return cls(hosts, rows, guests, where)

    def source_of(self, guest: str) -> str | None:
        g = self.guests.get(guest)
        host = (g or {}).get("status", {}).get("host")
        return str(host) if host else None

    def _request(
        self, guest: str, source: str | None, avoid: Collection[str] = ()
    ) -> PlacementRequest:
        g = guest_request_of(self.guests[guest])
        placed: dict[str, list[str]] = defaultdict(list)
        for name, hosts in self.where.items():
            if name == guest:
                continue
            other = self.guests.get(name)
            app = other and (other.get("spec", {}).get("app") or other.get("owner"))
            if app:
                placed[str(app)] += hosts
        rows = [r for name, r in self.rows.items() if name != source and name not in avoid]
        return PlacementRequest(HostTable.build(rows), [g], dict(placed))

    def choose(
        self, scheduler: Scheduler, guest: str, *, avoid: Collection[str] = ()
    ) -> tuple[str | None, str]:
        """The best host for ``guest`` other than its own (and ``avoid``), or ``(None, why)``."""
        source = self.source_of(guest)
        request = self._request(guest, source, avoid)
        if len(request.hosts) == 0:
            return None, "no other host has joined the cluster"
        result = scheduler.place(request)
        host = result.placements.get(guest)
        if host is None:
            return None, result.unplaced.get(guest, "no host fits")
        return host, ""

    def problem(self, guest: str, target: str) -> str | None:
        """Why ``target`` cannot take ``guest`` now (one line), or None if it can."""
        source = self.source_of(guest)
        view = self.hosts.get(target)
        if view is None:
            known = ", ".join(sorted(self.hosts)) or "none"
            return f"unknown host {target!r} (hosts: {known})"
        if target == source:
            return f"guest {guest!r} already runs on {target}: pick another host"
        status = view.get("status", {})
        if status.get("state") != "ready":
            return f"host {target} is {status.get('state')}, not ready"
        if status.get("draining"):
            return f"host {target} is draining"
        if status.get("cordoned"):
            return f"host {target} is cordoned: uncordon it first, or pick another host"
        row = self.rows[target]
        g = guest_request_of(self.guests[guest])
        if g.site is not None and row.labels.get("site") != g.site:
            return (
                f"host {target} is in site {row.labels.get('site') or '(none)'}, and guest "
                f"{guest!r} is pinned to site {g.site}: pick a host there (podium dr moves "
                "guests between sites)"
            )
        free = np.array(row.capacity.as_tuple()) - np.array(row.allocated.as_tuple())
        need = np.array(g.request.as_tuple())
        for dim, have, want in zip(DIMENSIONS, free, need, strict=True):
            if want > have + EPS:
                return (
                    f"host {target} does not fit the guest: {dim} needs {_fmt(want)}, "
                    f"{_fmt(max(have, 0.0))} free"
                )
        if g.app is not None and g.spread is not None:
            request = self._request(guest, source)
            batch = BatchState.start(request)
            mask = SpreadFilter().filter(batch, g, need.astype(np.float64))
            if not mask[request.hosts.index[target]]:
                level = g.spread.value
                return (
                    f"host {target} would share a {level} with another replica of app "
                    f"{g.app} (spread {level})"
                )
        return None

    def reserve(self, guest: str, target: str) -> None:
        """Count ``guest`` on ``target`` for the rest of this pass."""
        g = guest_request_of(self.guests[guest])
        row = self.rows[target]
        self.rows[target] = replace(row, allocated=row.allocated + g.request)
        self.where.setdefault(guest, []).append(target)
