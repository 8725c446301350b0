"""Pure decisions for live migrations and host drains (no I/O).

::

    plan_migrations(view, scheduler, limits, now)
        in flight: binding lost it / host lost / preparing > prepare_timeout ──> FailMigration
        pending (oldest first): guest moved or stopped, drain ended ──> FailMigration
                                over --max-migrations / --max-migrations-per-host, or no
                                host fits ──> NoteMigration(why it waits)
                                else ──> StartMigration(target)   (capacity consumed virtually)
    plan_drain(host, guests, now, limits)
        running ──> RequestMigration (reason drain)   stopped/failed/unreported ──> StopGuest,
        then Unbind once the agent confirmed (or the grace passed)   none left ──> Drained
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podium.controller._snapshot import HostRecord
from podium.model import GuestState, HostState
from podium.scheduler import MigrationPlanner, Scheduler

JSON = dict[str, Any]
PENDING, PREPARING, TRANSFERRING = "pending", "preparing", "transferring"
IN_FLIGHT = (PREPARING, TRANSFERRING)


@dataclass(frozen=True, slots=True)
class MigrationLimits:
    """Server settings for migrations (``--max-migrations``, ``--max-migrations-per-host``)."""

    max_migrations: int = 2  # in flight at once, cluster-wide
    max_per_host: int = 1  # in flight at once per host (as source or target)
    prepare_timeout: float = 60.0  # seconds a target may take to get ready
    drain_stop_grace: float = 5.0  # an unreported guest asked to stop is rebound after this
    drain_retry: float = 10.0  # a drain retries a failed migration after this


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartMigration:
    guest: str
    id: str
    target: str


@dataclass(frozen=True, slots=True)
class FailMigration:
    guest: str
    id: str
    why: str


@dataclass(frozen=True, slots=True)
class NoteMigration:
    """A pending migration waits; ``message`` says why."""

    guest: str
    id: str
    message: str


@dataclass(frozen=True, slots=True)
class RequestMigration:
    """Drain: ask for a migration of a running guest (target picked when it starts)."""

    guest: str
    host: str


@dataclass(frozen=True, slots=True)
class StopForDrain:
    guest: str
    host: str


@dataclass(frozen=True, slots=True)
class UnbindForDrain:
    guest: str
    host: str
    revision: int


@dataclass(frozen=True, slots=True)
class Drained:
    host: str


@dataclass(frozen=True, slots=True)
class LookAgain:
    """Nothing to do yet; reconcile again after ``delay`` seconds."""

    delay: float
    reason: str


MigrationAction = StartMigration | FailMigration | NoteMigration | LookAgain
DrainAction = RequestMigration | StopForDrain | UnbindForDrain | Drained | LookAgain


# -- migrations --------------------------------------------------------------------------------


@dataclass
class MigrationView:
    """What the migration controller decides on (read at one moment)."""

    records: dict[str, JSON]  # guest -> its latest migration record
    bindings: dict[str, JSON]  # guest -> binding as stored
    statuses: dict[str, JSON]  # guest -> last accepted status report
    hosts: dict[str, HostRecord]
    planner: MigrationPlanner
    guests: frozenset[str] = field(default_factory=frozenset)


def reported_state(binding: JSON | None, status: JSON | None) -> str | None:
    """The guest's state as its current binding's host reported it (None: no such report)."""
    if not binding or not status or not binding.get("host"):
        return None
    if status.get("host") != binding["host"] or status.get("epoch") != binding.get("epoch"):
        return None
    return str(status.get("state"))


def _lost(hosts: Mapping[str, HostRecord], name: str | None) -> bool:
    host = hosts.get(name or "")
    return host is None or host.state == HostState.LOST.value


def plan_migrations(
    view: MigrationView, scheduler: Scheduler, limits: MigrationLimits, now: float
) -> list[MigrationAction]:
    """Fail what cannot finish, start pending migrations within the limits, say why others wait."""
    actions: list[MigrationAction] = []
    busy: Counter[str] = Counter()
    in_flight = 0
    next_deadline: float | None = None
    for guest, r in sorted(view.records.items()):
        if r.get("state") not in IN_FLIGHT:
            continue
        binding = view.bindings.get(guest) or {}
        why = None
        if (binding.get("migration") or {}).get("id") != r["id"]:
            why = "the guest's binding no longer carries it"
        elif _lost(view.hosts, r.get("target")):
            why = f"target host {r.get('target')} was lost"
        elif _lost(view.hosts, r.get("source")):
            why = f"source host {r.get('source')} was lost"
        elif r["state"] == PREPARING:
            started = r.get("started")
            deadline = (now if started is None else float(started)) + limits.prepare_timeout
            if now >= deadline:
                why = (
                    f"target {r.get('target')} did not get ready within "
                    f"{limits.prepare_timeout:g} s"
                )
            else:
                next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
        if why is not None:
            actions.append(FailMigration(guest, r["id"], why))
            continue
        in_flight += 1
        busy[r["source"]] += 1
        busy[r["target"]] += 1
    pending = sorted(
        (r for r in view.records.values() if r.get("state") == PENDING),
        key=lambda r: (float(r.get("created") or 0.0), r["guest"]),
    )
    for r in pending:
        guest, mid = r["guest"], r["id"]
        if guest not in view.guests:
            continue  # deleted: its record goes with it
        binding = view.bindings.get(guest) or {}
        if binding.get("host") != r["source"] or int(binding.get("epoch", -1)) != int(r["epoch"]):
            actions.append(
                FailMigration(guest, mid, "the guest moved before the migration started")
            )
            continue
        if binding.get("migration"):
            continue
        home = view.hosts.get(r["source"])
        if r.get("reason") == "drain" and not (home and home.spec.get("draining")):
            actions.append(FailMigration(guest, mid, f"the drain of {r['source']} ended"))
            continue
        state = reported_state(binding, view.statuses.get(guest))
        if state not in (GuestState.RUNNING.value, GuestState.MIGRATING.value):
            actions.append(
                FailMigration(guest, mid, f"the guest is {state or 'pending'}, not running")
            )
            continue
        wait = _wait_reason(r, in_flight, busy, limits)
        target = None
        if wait is None:
            target, wait = _target(view.planner, scheduler, r, busy, limits)
        if target is None:
            message = f"waiting: {wait}"
            if wait is not None and wait.startswith("failed: "):
                actions.append(FailMigration(guest, mid, wait.removeprefix("failed: ")))
            elif r.get("message") != message:
                actions.append(NoteMigration(guest, mid, message))
            continue
        actions.append(StartMigration(guest, mid, target))
        deadline = now + limits.prepare_timeout
        next_deadline = deadline if next_deadline is None else min(next_deadline, deadline)
        view.planner.reserve(guest, target)
        in_flight += 1
        busy[r["source"]] += 1
        busy[target] += 1
    if next_deadline is not None:
        actions.append(LookAgain(max(0.05, next_deadline - now), "a target is preparing"))
    return actions


def _wait_reason(
    r: JSON, in_flight: int, busy: Counter[str], limits: MigrationLimits
) -> str | None:
    if in_flight >= limits.max_migrations:
        return (
            f"{in_flight} migration(s) in flight, the cluster's limit "
            f"(--max-migrations {limits.max_migrations})"
        )
    if busy[r["source"]] >= limits.max_per_host:
        return (
            f"source {r['source']} takes part in {busy[r['source']]} migration(s) already "
            f"(--max-migrations-per-host {limits.max_per_host})"
        )
    return None


def _target(
    planner: MigrationPlanner,
    scheduler: Scheduler,
    r: JSON,
    busy: Counter[str],
    limits: MigrationLimits,
) -> tuple[str | None, str | None]:
    """``(target, None)``, or ``(None, why it waits)``; ``"failed: ..."`` gives it up."""
    guest, wanted = r["guest"], r.get("target")
    if wanted and not r.get("auto"):
        problem = planner.problem(guest, wanted)
        if problem is not None:
            return None, f"failed: {problem}"
        if busy[wanted] >= limits.max_per_host:
            return None, (
                f"target {wanted} takes part in {busy[wanted]} migration(s) already "
                f"(--max-migrations-per-host {limits.max_per_host})"
            )
        return wanted, None
    full = {h for h, n in busy.items() if n >= limits.max_per_host}
    if wanted and wanted not in full and planner.problem(guest, wanted) is None:
        return wanted, None
    host, why = planner.choose(scheduler, guest, avoid=full)
    if host is not None:
        return host, None
    if full and planner.choose(scheduler, guest)[0] is not None:
        return None, (
            "every host that fits takes part in a migration already "
            f"(--max-migrations-per-host {limits.max_per_host})"
        )
    return None, f"no host can take it: {why}"


# -- drain ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrainGuest:
    """A guest bound to a draining host, as the drain controller sees it."""

    name: str
    binding: JSON
    revision: int  # the binding's mod revision
    status: JSON | None
    assignment: JSON | None
    migration: JSON | None


def plan_drain(
    host: str, guests: list[DrainGuest], now: float, limits: MigrationLimits
) -> list[DrainAction]:
    """Move every guest off ``host``: migrate the running, stop-then-rebind the others."""
    actions: list[DrainAction] = []
    later: list[float] = []
    for g in guests:
        m = g.migration
        if m is not None and m.get("state") in (PENDING, *IN_FLIGHT):
            continue  # on its way
        state = reported_state(g.binding, g.status)
        stop = (g.assignment or {}).get("drain_stop")
        if stop is None and state in (GuestState.RUNNING.value, GuestState.MIGRATING.value):
            if (
                m is not None
                and m.get("state") == "failed"
                and m.get("epoch") == g.binding.get("epoch")
            ):
                retry_at = float(m.get("finished") or now) + limits.drain_retry
                if now < retry_at:
                    later.append(retry_at - now)
                    continue
            actions.append(RequestMigration(g.name, host))
            continue
        if stop is None:
            if state in (GuestState.STARTING.value,):
                later.append(1.0)  # let it come up, then migrate it live
                continue
            actions.append(StopForDrain(g.name, host))
            later.append(limits.drain_stop_grace)
            continue
        # rebind only once the agent cannot be running it: it reported it stopped (or
        # failed) after the stop was asked for, or said nothing newer within the grace
        down = state in (None, GuestState.STOPPED.value, GuestState.FAILED.value)
        fresh = state is not None and float((g.status or {}).get("since", 0.0)) >= float(stop)
        grace_end = float(stop) + limits.drain_stop_grace
        if down and (fresh or now >= grace_end):
            actions.append(UnbindForDrain(g.name, host, g.revision))
        else:
            later.append(max(0.05, grace_end - now) if down else 1.0)
    if not guests:
        actions.append(Drained(host))
    elif later:
        actions.append(LookAgain(min(later), f"guests of draining host {host} are settling"))
    return actions
