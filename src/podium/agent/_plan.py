"""The agent's pure decisions: which operations to run per guest, and what to report.

Per guest, one list of steps at a time (the agent runs it as one task)::

    assignment                  here (driver)                      steps
    none                        anything                           stop + destroy
    other epoch or uid          anything                           stop + destroy, then below
    "incoming" {id}             absent, stopped, failed, incoming  prepare_incoming (once per id)
    no "incoming"               incoming                           activate
    "migrate" {id} not handled  migrated away (agent restarted)    migrate_out: same result
    any                         migrated away at this epoch        nothing, never a start
    "migrate" {id}              running                            migrate_out (once per id)
    "migrate" {id, cancel}      migrate_out in flight / not begun  cancel / report it cancelled
    "backup" {id}               running                            backup (once per id)
    spec.running false          active                             stop
    otherwise                   absent, defined, stopped, failed   create + start

A guest *migrated away* is one whose ``migrate_out`` succeeded: the driver shows it
stopped at the assignment's epoch while the destination may already run it, so it must
never start here again at that epoch, only go away with its assignment.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from podium.drivers import DriverGuestState, GuestInfo
from podium.model import GuestState

JSON = dict[str, Any]
D = DriverGuestState

#: The driver's message on a guest whose outgoing live migration completed.
MIGRATED_PREFIX = "migrated to "


@dataclass(frozen=True, slots=True)
class StartGuest:
    """Define the guest at this epoch (if needed) and start it."""

    guest: str
    uid: str
    epoch: int
    spec: JSON = field(hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class StopGuest:
    """Stop the guest (gracefully); ``destroy``: forget it on this host afterwards."""

    guest: str
    destroy: bool
    reason: str


@dataclass(frozen=True, slots=True)
class PrepareIncoming:
    """Start the guest as the destination of live migration ``migration`` (paused)."""

    guest: str
    uid: str
    epoch: int
    migration: str
    source: str
    spec: JSON = field(hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Activate:
    """Resume an incoming guest: its migration completed and the binding is ours now."""

    guest: str
    epoch: int


@dataclass(frozen=True, slots=True)
class MigrateOut:
    """Live-migrate the running guest to host ``to`` at ``uri``."""

    guest: str
    uid: str
    epoch: int
    migration: str
    to: str
    uri: str


@dataclass(frozen=True, slots=True)
class CancelMigration:
    """Cancel outgoing migration ``migration`` (or report it cancelled if it never began)."""

    guest: str
    migration: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunBackup:
    """Back up the running guest's volumes (backup ``backup``) to ``target``."""

    guest: str
    epoch: int
    backup: str
    mode: str
    parent_path: str | None = None  # the root volume's previous backup
    target: str = "local"  # "local" | "replica"
    parent_volumes: tuple[tuple[str, str], ...] = ()  # (LUN volume id, its previous backup)


LocalAction = (
    StartGuest | StopGuest | PrepareIncoming | Activate | MigrateOut | CancelMigration | RunBackup
)


def migrated_away(info: GuestInfo, migrated: Mapping[str, tuple[str, int]] = {}) -> bool:
    """Whether ``info`` is the stopped source of a completed live migration.

    Known from the agent's memory (``migrated``: guest -> (uid, epoch)) or, after an
    agent restart, from the driver's message.
    """
    if migrated.get(info.name) == (info.uid, info.epoch):
        return True
    return info.state is D.STOPPED and info.message.startswith(MIGRATED_PREFIX)


def _cancel_reason(assignment: JSON | None, migration: str) -> str:
    """Why an outgoing migration in flight must stop, or ``""`` if it is still wanted."""
    migrate = assignment.get("migrate") if assignment is not None else None
    if not migrate or str(migrate.get("id")) != migration:
        return "the control plane no longer asks for it"
    if migrate.get("cancel"):
        return "cancelled by the control plane"
    return ""


def plan_local(
    desired: Mapping[str, JSON],
    observed: Mapping[str, GuestInfo],
    *,
    rejected: Mapping[str, int] = {},
    busy: Set[str] = frozenset(),
    retry_at: Mapping[str, float] = {},
    now: float = 0.0,
    handled: Set[str] = frozenset(),
    migrating: Mapping[str, str] = {},
    migrated: Mapping[str, tuple[str, int]] = {},
) -> dict[str, list[LocalAction]]:
    """Per guest, the steps that converge this host toward its assignments (module table).

    ``busy``: guests with an operation in flight, left alone, except that an outgoing
    migration in flight (``migrating``: guest -> migration id) the assignment no longer
    asks for gets a :class:`CancelMigration`. ``handled``: migration and backup ids
    already run or refused here (each runs at most once). ``migrated``: guests migrated
    away, guest -> (uid, epoch). A guest whose assignment was rejected at epoch ``e`` is
    treated as unassigned until an epoch above ``e``; ``retry_at`` delays every step but
    stops and cancels after a failure (backoff).
    """
    plan: dict[str, list[LocalAction]] = {}
    for name in sorted(set(desired) | set(observed)):
        assignment = desired.get(name)
        if assignment is not None and int(assignment["epoch"]) <= rejected.get(name, -1):
            assignment = None
        if name in busy:
            migration = migrating.get(name)
            if migration is not None and (why := _cancel_reason(assignment, migration)):
                plan[name] = [CancelMigration(name, migration, why)]
            continue
        info = observed.get(name)
        if assignment is None:
            if info is not None:
                plan[name] = [StopGuest(name, destroy=True, reason="no longer assigned here")]
            continue
        steps: list[LocalAction] = []
        epoch = int(assignment["epoch"])
        if info is not None and (info.epoch != epoch or info.uid != str(assignment["uid"])):
            why = f"epoch {info.epoch} superseded by epoch {epoch}"
            steps.append(StopGuest(name, destroy=True, reason=why))
            info = None
        may_act = now >= retry_at.get(name, 0.0)  # a failed step waits out its backoff
        step = _special_step(name, assignment, info, handled, migrated)
        if not may_act and not isinstance(step, _Wait | CancelMigration | None):
            step = _WAIT
        if step is None:
            step = _lifecycle_step(name, assignment, info, may_start=may_act)
        if step is not None and not isinstance(step, _Wait):
            steps.append(step)
        if steps:
            plan[name] = steps
    return plan


class _Wait:
    """Sentinel: nothing to do for this guest now, and the lifecycle rules must not run."""


_WAIT = _Wait()


def _special_step(
    name: str,
    assignment: JSON,
    info: GuestInfo | None,
    handled: Set[str],
    migrated: Mapping[str, tuple[str, int]],
) -> LocalAction | _Wait | None:
    """The migration or backup step due for a guest held at its assignment's epoch.

    ``None``: none is due, the plain lifecycle rules apply; ``_WAIT``: none is due and
    the guest must not be started either.
    """
    uid, epoch = str(assignment["uid"]), int(assignment["epoch"])
    spec = dict(assignment.get("spec", {}))
    incoming = assignment.get("incoming")
    if incoming:
        # The binding is still the source's: never start, only prepare (again after an
        # agent restart: prepare_incoming is idempotent and gives the URI back).
        mid = str(incoming["id"])
        waiting = (D.DEFINED, D.STOPPED, D.FAILED, D.INCOMING)
        if mid not in handled and (info is None or info.state in waiting):
            return PrepareIncoming(name, uid, epoch, mid, str(incoming.get("source", "")), spec)
        return _WAIT
    if info is not None and info.state is D.INCOMING:
        return Activate(name, epoch)
    migrate = assignment.get("migrate")
    if info is not None and migrated_away(info, migrated):
        # The destination may run it now: never start it, wait for the assignment to go.
        # An agent restarted after the switch-over asks the driver (which answers with
        # the same result) so that the completion still gets reported.
        if migrate and _resumable(migrate, info, handled):
            to, uri = str(migrate.get("to", "")), str(migrate["uri"])
            return MigrateOut(name, uid, epoch, str(migrate["id"]), to, uri)
        return _WAIT
    if migrate and str(migrate["id"]) not in handled:
        mid = str(migrate["id"])
        if migrate.get("cancel"):
            return CancelMigration(name, mid, "cancelled before it began")
        if info is not None and info.state is D.RUNNING:
            return MigrateOut(
                name, uid, epoch, mid, str(migrate.get("to", "")), str(migrate["uri"])
            )
    backup = assignment.get("backup")
    if backup and str(backup["id"]) not in handled and info is not None and info.state is D.RUNNING:
        mode, parent = str(backup.get("mode", "full")), backup.get("parent_path")
        target = str(backup.get("target") or "local")
        parents = tuple(
            sorted((str(k), str(v)) for k, v in (backup.get("parent_volumes") or {}).items())
        )
        return RunBackup(name, epoch, str(backup["id"]), mode, parent, target, parents)
    return None


def _resumable(migrate: JSON, info: GuestInfo, handled: Set[str]) -> bool:
    """Whether the migrated-away ``info`` went by this (unreported) ``migrate``."""
    return (
        str(migrate["id"]) not in handled
        and not migrate.get("cancel")
        and info.message == MIGRATED_PREFIX + str(migrate.get("uri"))
    )


def _lifecycle_step(
    name: str, assignment: JSON, info: GuestInfo | None, *, may_start: bool
) -> LocalAction | None:
    """Start or stop a guest held at its assignment's epoch toward ``spec.running``."""
    uid, epoch = str(assignment["uid"]), int(assignment["epoch"])
    spec = dict(assignment.get("spec", {}))
    if not spec.get("running", True):
        if info is not None and info.state.active:
            return StopGuest(name, destroy=False, reason="desired state is stopped")
        return None
    if (info is None or info.state in (D.DEFINED, D.STOPPED, D.FAILED)) and may_start:
        return StartGuest(name, uid, epoch, spec)
    return None


_REPORTED = {
    D.STARTING: GuestState.STARTING,
    D.RUNNING: GuestState.RUNNING,
    D.STOPPING: GuestState.RUNNING,
    D.STOPPED: GuestState.STOPPED,
    D.FAILED: GuestState.FAILED,
}


def reports(
    desired: Mapping[str, JSON],
    observed: Mapping[str, GuestInfo],
    last: Mapping[str, tuple[int, str, str]],
    *,
    rejected: Mapping[str, int] = {},
    migrating: Mapping[str, str] = {},
    migrated: Mapping[str, tuple[str, int]] = {},
) -> list[JSON]:
    """Status reports for assigned guests whose (epoch, state, message) changed since ``last``.

    Only guests this host holds at their assigned epoch are reported; a guest defined
    but not started yet reads ``starting`` (or ``stopped`` if desired stopped); one with
    an outgoing migration in flight (``migrating``) reads ``migrating``. Not reported: an
    assignment with ``incoming`` (the binding is still the source's), an incoming guest
    not activated yet, and a guest migrated away (it runs elsewhere now).
    """
    out: list[JSON] = []
    for name in sorted(desired):
        assignment = desired[name]
        epoch = int(assignment["epoch"])
        info = observed.get(name)
        if info is None or info.epoch != epoch or epoch <= rejected.get(name, -1):
            continue
        if info.uid != assignment["uid"] or assignment.get("incoming"):
            continue
        if info.state is D.INCOMING or migrated_away(info, migrated):
            continue
        message = "" if info.state is D.RUNNING else info.message
        if name in migrating and info.state is D.RUNNING:
            state = GuestState.MIGRATING
            to = (assignment.get("migrate") or {}).get("to")
            message = f"live migration to {to}" if to else "live migration"
        elif info.state is D.DEFINED:
            running = assignment.get("spec", {}).get("running", True)
            state = GuestState.STARTING if running else GuestState.STOPPED
        else:
            state = _REPORTED[info.state]
        if last.get(name) != (epoch, state.value, message):
            out.append({"guest": name, "epoch": epoch, "state": state.value, "message": message})
    return out
