"""The agent's pure decisions: what to start and stop, and what to report."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from podium.drivers import DriverGuestState, GuestInfo
from podium.model import GuestState

JSON = dict[str, Any]
D = DriverGuestState


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


LocalAction = StartGuest | StopGuest


def plan_local(
    desired: Mapping[str, JSON],
    observed: Mapping[str, GuestInfo],
    *,
    rejected: Mapping[str, int] = {},
    busy: Set[str] = frozenset(),
    retry_at: Mapping[str, float] = {},
    now: float = 0.0,
) -> dict[str, list[LocalAction]]:
    """Per guest, the steps that converge this host toward its assignments.

    - assigned, not here (or stopped/failed), desired running  -> start (after ``retry_at``)
    - here at another epoch or uid than assigned               -> stop + destroy, then start
    - here, not assigned (moved away, deleted), or rejected    -> stop + destroy
    - assigned with ``spec.running`` false, active here        -> stop
    Guests in ``busy`` (an operation in flight) are left alone. A guest whose assignment
    was rejected at epoch ``e`` is treated as unassigned until an epoch above ``e``.
    """
    plan: dict[str, list[LocalAction]] = {}
    for name in sorted(set(desired) | set(observed)):
        if name in busy:
            continue
        assignment = desired.get(name)
        if assignment is not None and int(assignment["epoch"]) <= rejected.get(name, -1):
            assignment = None
        info = observed.get(name)
        if assignment is None:
            if info is not None:
                plan[name] = [StopGuest(name, destroy=True, reason="no longer assigned here")]
            continue
        epoch, uid = int(assignment["epoch"]), str(assignment["uid"])
        steps: list[LocalAction] = []
        if info is not None and (info.epoch != epoch or info.uid != uid):
            why = f"epoch {info.epoch} superseded by epoch {epoch}"
            steps.append(StopGuest(name, destroy=True, reason=why))
            info = None
        if not assignment.get("spec", {}).get("running", True):
            if info is not None and info.state.active:
                steps.append(StopGuest(name, destroy=False, reason="desired state is stopped"))
        elif (
            info is None or info.state in (D.DEFINED, D.STOPPED, D.FAILED)
        ) and now >= retry_at.get(name, 0.0):
            steps.append(StartGuest(name, uid, epoch, dict(assignment.get("spec", {}))))
        if steps:
            plan[name] = steps
    return plan


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
) -> list[JSON]:
    """Status reports for assigned guests whose (epoch, state, message) changed since ``last``.

    Only guests this host holds at their assigned epoch are reported; a guest defined
    but not started yet reads ``starting`` (or ``stopped`` if desired stopped).
    """
    out: list[JSON] = []
    for name in sorted(desired):
        assignment = desired[name]
        epoch = int(assignment["epoch"])
        info = observed.get(name)
        if info is None or info.epoch != epoch or epoch <= rejected.get(name, -1):
            continue
        if info.uid != assignment["uid"]:
            continue
        if info.state is D.DEFINED:
            running = assignment.get("spec", {}).get("running", True)
            state = GuestState.STARTING if running else GuestState.STOPPED
        else:
            state = _REPORTED[info.state]
        message = "" if info.state is D.RUNNING else info.message
        if last.get(name) != (epoch, state.value, message):
            out.append({"guest": name, "epoch": epoch, "state": state.value, "message": message})
    return out
