"""The replication controller: protected profiles' volumes shipped to the other site on
a schedule, so a site failover loses at most the profile's RPO.

::

    one key, ~replication, every `interval` s (sooner when a replica is due), and on
    Profile / profileuse / replica changes:
      per protected profile (up to max_checks a pass, round robin):
        wearer running, not migrating, nothing in flight, newest replica's point older
        than rpo_s / 2  ──> create_backup(wearer, auto, target=replica)   (max_requests)
        newest point older than rpo_s  ──> ReplicaLate (once per lapse)
      replica records that turned failed, and refused requests ──> ReplicaFailed

Asking at half the RPO leaves the other half for the copy to finish and for the next to
be asked: the loss window (now - the newest completed replica's ``created``) stays under
the RPO while replicas complete. Decisions are :func:`plan_replica` (pure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podium.model import GuestState, Kind
from podium.state import Conflict, NotFound, create_backup, keys, list_backups, loads
from podium.store import Event

if TYPE_CHECKING:
    from podium.controller._controllers import Context

JSON = dict[str, Any]
SWEEP = "~replication"  # the controller's one key (no profile name has a "~")
IN_FLIGHT = ("pending", "running")


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    """What to do about one protected profile now."""

    request: bool  # ask for a replica now
    late: bool  # the newest replica is older than the RPO
    lag_s: float  # now - the newest replica's point (or the guest's creation)
    due_in: float  # seconds until a replica is due (0: due now)


def plan_replica(
    now: float,
    rpo_s: int,
    guest: JSON,
    *,
    binding: JSON | None,
    status: JSON | None,
    backups: list[JSON],
) -> ReplicaPlan:
    """Decide for one wearer: ``backups`` are its backup records (any target)."""
    uid = guest["uid"]
    points = [
        float(b["created"])
        for b in backups
        if b.get("uid") == uid and b.get("target") == "replica" and b.get("state") == "completed"
    ]
    point = max(points) if points else None
    lag = max(0.0, now - (point if point is not None else float(guest["created"])))
    host = (binding or {}).get("host")
    epoch = (binding or {}).get("epoch")
    running = (
        host is not None
        and status is not None
        and (status.get("host"), status.get("epoch"), status.get("state"))
        == (host, epoch, GuestState.RUNNING.value)
    )
    busy = bool((binding or {}).get("migration")) or any(
        b.get("state") in IN_FLIGHT for b in backups
    )
    due_in = 0.0 if point is None else max(0.0, point + rpo_s / 2 - now)
    wanted = guest["spec"].get("running", True) is not False
    return ReplicaPlan(
        request=running and not busy and due_in == 0.0,
        late=wanted and lag > rpo_s,
        lag_s=lag,
        due_in=due_in,
    )


class ReplicationController:
    """Keeps every protected profile's newest replica within its RPO (see the module)."""

    name = "replication"
    workers = 1
    debounce = 0.2

    def __init__(
        self,
        ctx: Context,
        *,
        interval: float = 5.0,
        min_interval: float = 0.5,
        max_checks: int = 512,
        max_requests: int = 32,
    ) -> None:
        self.ctx = ctx
        self.interval = interval
        self.min_interval = min_interval
        self.max_checks = max_checks
        self.max_requests = max_requests
        self._profiles = keys.object_prefix(Kind.PROFILE)
        self.prefixes: tuple[str, ...] = (self._profiles, keys.PROFILE_USE, keys.BACKUPS)
        self._cursor = ""  # round robin: the last profile checked
        self._late: set[str] = set()  # profiles warned late in this lapse
        self._refused: dict[str, str] = {}  # profile -> the last refusal warned
        self._failed: set[tuple[str, str]] = set()  # (guest, backup id) turned failed

    def keys_for(self, event: Event) -> Iterable[str]:
        key = event.kv.key
        if key.startswith((self._profiles, keys.PROFILE_USE)):
            return [SWEEP]
        if not key.startswith(keys.BACKUPS) or not event.kv.value:
            return []
        record = _json(event.kv.value)
        if record.get("target") != "replica":
            return []
        before = _json(event.prev_kv.value) if event.prev_kv and event.prev_kv.value else {}
        if record.get("state") == "failed" and before.get("state") != "failed":
            self._failed.add((str(record.get("guest")), str(record.get("id"))))
        return [SWEEP]

    async def all_keys(self) -> Iterable[str]:
        return [SWEEP]

    async def reconcile(self, key: str) -> float | None:
        if key != SWEEP:
            return None
        if not await self._leading():
            return None  # deposed: the manager stops soon; ask for nothing
        await self._report_failures()
        return await self._pass()

    async def _leading(self) -> bool:
        kv = await self.ctx.state.store.get(keys.LEADER)
        return kv is not None and kv.mod_revision == self.ctx.leadership.revision

    async def _pass(self) -> float:
        state = self.ctx.state
        records, _ = await state.list_records(Kind.PROFILE)
        protected = sorted(
            (r for r in records if r["spec"].get("protection")), key=lambda r: r["name"]
        )
        names = {r["name"] for r in protected}
        self._late &= names
        self._refused = {k: v for k, v in self._refused.items() if k in names}
        # round robin: start after the last profile checked, wrap around
        order = [r for r in protected if r["name"] > self._cursor]
        order += [r for r in protected if r["name"] <= self._cursor]
        delay = self.interval
        requests = 0
        for profile in order[: self.max_checks]:
            self._cursor = profile["name"]
            due = await self._check(profile, requests < self.max_requests)
            if due is None:
                continue
            requested, due_in = due
            requests += requested
            delay = min(delay, due_in if due_in > 0 else self.interval)
        if len(order) > self.max_checks or requests >= self.max_requests:
            delay = self.min_interval  # more to do: come back soon
        return max(self.min_interval, delay)

    async def _check(self, profile: JSON, may_request: bool) -> tuple[int, float] | None:
        """Plan and act for one profile; ``(requested, due_in)``, or ``None`` (no wearer)."""
        ctx, state = self.ctx, self.ctx.state
        name, rpo = profile["name"], int(profile["spec"]["protection"]["rpo_s"])
        use = await state.store.get(keys.profile_use_key(name))
        guest = await state.get_record(Kind.GUEST, loads(use.value)["guest"]) if use else None
        if guest is None:
            self._late.discard(name)
            return None
        gname = guest["name"]
        binding = await state.store.get(keys.binding_key(gname))
        status = await state.store.get(keys.guest_status_key(gname))
        backups, _ = await list_backups(state, gname)
        plan = plan_replica(
            ctx.clock(),
            rpo,
            guest,
            binding=loads(binding.value) if binding else None,
            status=loads(status.value) if status else None,
            backups=backups,
        )
        if plan.late and name not in self._late:
            self._late.add(name)
            ctx.events.record(
                "Profile", name, "ReplicaLate",
                f"newest replica of {gname} is {plan.lag_s:.0f} s old, over its RPO of {rpo} s",
                warning=True,
            )  # fmt: skip
        elif not plan.late:
            self._late.discard(name)
        if not plan.request or not may_request:
            return 0, plan.due_in
        try:
            await create_backup(state, gname, "auto", target="replica")
        except (Conflict, NotFound) as err:  # raced a stop, a migration, a manual backup
            if self._refused.get(name) != str(err):
                self._refused[name] = str(err)
                ctx.events.record(
                    "Profile", name, "ReplicaFailed",
                    f"could not ask for a replica of {gname}: {err}", warning=True,
                )  # fmt: skip
            return 0, 0.0
        self._refused.pop(name, None)
        return 1, rpo / 2

    async def _report_failures(self) -> None:
        failed, self._failed = self._failed, set()
        for guest, backup_id in sorted(failed):
            kv = await self.ctx.state.store.get(keys.backup_key(guest, backup_id))
            record = _json(kv.value) if kv else {}
            if record.get("state") != "failed":
                continue  # level-based: only what the store still says
            spec = record.get("spec") or {}
            why = record.get("message") or "no reason given"
            self.ctx.events.record(
                "Profile", str(spec.get("profile") or guest), "ReplicaFailed",
                f"replica {backup_id} of {guest} failed: {why}", warning=True,
            )  # fmt: skip


def _json(raw: bytes) -> JSON:
    try:
        value = loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
