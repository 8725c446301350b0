"""Live migrations in the store: one record per guest, every step one guarded transaction.

::

    step (who)                 state         what the transaction writes
    request (API, drain)       pending       the record (no other key)
    start (leader)             preparing     binding.migration = {id, to, epoch: t};
                                             target assignment at t with "incoming"
    ready (target agent)       transferring  uri; source assignment gets "migrate"
    progress (source agent)    transferring  record.progress only
    completed (source agent)   completed     binding {host: target, epoch: t}; source
                                             assignment deleted; target's loses "incoming";
                                             guest status "migrating" at t
    failed (agent, controller) failed        target assignment deleted; "migrate" removed;
                                             binding keeps epoch_floor >= t
    bind() while in flight     failed        the same cleanup, inside bind's transaction

Every step compares the record's mod revision and, when it touches the binding or an
assignment, their mod revisions too: a step that lost a race re-reads and decides again.

``result`` of a completed migration: ``downtime_ms``, ``transferred`` (and ``qemu_total_ms``)
as the source's QEMU measured them; ``total_ms`` from podium's start (the prepare phase
included) to the commit; ``switchover_ms`` from the completion report's arrival to the
commit that tells the target to resume (podium's share of the pause).

Epochs are never reused (DESIGN.md invariant 1): ``t = next_epoch(binding)`` counts the
binding's epoch, its ``epoch_floor`` (left by failed migrations) and an in-flight
migration's epoch, and :meth:`ClusterState.bind` starts from the same number. The target
runs nothing before the flip: its assignment carries ``incoming`` (QEMU ``-incoming``,
vCPUs stopped), and its status reports at ``t`` are rejected until the binding names it.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from podium.model import GuestState, Kind
from podium.state import _cluster, keys
from podium.store import Compare, Delete, KeyValue, Op, Put, StoreError

log = logging.getLogger(__name__)

JSON = dict[str, Any]
RETRIES = 20


class MigrationState(enum.StrEnum):
    """Where a live migration stands."""

    PENDING = "pending"  # requested; waits for the controller (limits, a target that fits)
    PREPARING = "preparing"  # target assignment written; the target starts QEMU -incoming
    TRANSFERRING = "transferring"  # the target listens; the source copies memory to it
    COMPLETED = "completed"  # the binding names the target (epoch + 1)
    FAILED = "failed"  # given up; the guest stays where its binding says
    CANCELLED = "cancelled"  # withdrawn before it finished


PENDING, PREPARING, TRANSFERRING = (
    MigrationState.PENDING.value,
    MigrationState.PREPARING.value,
    MigrationState.TRANSFERRING.value,
)
COMPLETED, FAILED = MigrationState.COMPLETED.value, MigrationState.FAILED.value
ACTIVE = frozenset({PENDING, PREPARING, TRANSFERRING})
IN_FLIGHT = frozenset({PREPARING, TRANSFERRING})
BACKUP_BUSY = frozenset({"pending", "running"})


@dataclass(frozen=True, slots=True)
class MigrationOutcome:
    """The answer to one step: done (or already done), or why not (stale: drop it)."""

    accepted: bool
    reason: str = ""
    record: JSON | None = None


@dataclass(slots=True)
class Release:
    """What :meth:`ClusterState.bind` adds to its transaction for a migration in flight."""

    compares: list[Compare] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    failed: JSON | None = None  # the record as marked failed (for the event)


def next_epoch(binding: JSON | None) -> int:
    """The epoch the next binding or migration target gets: above every epoch handed out."""
    if not binding:
        return 1
    floor = max(int(binding.get("epoch", 0)), int(binding.get("epoch_floor", 0)))
    migration = binding.get("migration")
    if migration:
        floor = max(floor, int(migration.get("epoch", 0)))
    return floor + 1


def new_id() -> str:
    return f"mig-{secrets.token_hex(5)}"


def is_active(record: JSON | None) -> bool:
    return record is not None and record.get("state") in ACTIVE


def view_of(record: JSON | None) -> JSON | None:
    """``{"id", "to", "state"}`` for the guest view while a migration is active."""
    if not is_active(record):
        return None
    assert record is not None
    return {"id": record["id"], "to": record.get("target"), "state": record["state"]}


def _without(data: JSON, *names: str) -> JSON:
    return {k: v for k, v in data.items() if k not in names}


class Migrations:
    """Migration records and their transitions over a :class:`ClusterState`.

    Every method re-reads what it decides on; none trusts a caller's copy. Events
    (``MigrationStarted``, ``MigrationCompleted``, ``MigrationFailed``) are written after
    the transaction that makes them true, best effort.
    """

    def __init__(self, state: _cluster.ClusterState) -> None:
        self.state = state
        self.store = state.store

    def _now(self) -> float:
        return self.state._clock()

    async def _get(self, key: str) -> tuple[Any, KeyValue | None]:
        kv = await self.store.get(key)
        return (_cluster.loads(kv.value) if kv else None), kv

    # -- reads -------------------------------------------------------------------------

    async def get(self, guest: str) -> JSON | None:
        """The guest's latest migration record, or ``None``."""
        record, _ = await self._get(keys.migration_key(guest))
        return record  # type: ignore[no-any-return]

    async def list_records(self) -> tuple[list[JSON], int]:
        """Every migration record (one per guest: its latest) and the revision read at."""
        res = await self.store.range(keys.MIGRATIONS)
        return [_cluster.loads(kv.value) for kv in res.kvs], res.revision

    # -- request -----------------------------------------------------------------------

    async def request(
        self,
        guest: str,
        target: str | None,
        *,
        reason: str = "operator",
        auto: bool = False,
        message: str = "",
    ) -> JSON:
        """Record a pending migration of a running guest to ``target``.

        ``target`` None (``auto``): the controller picks when it starts it. Raises
        :class:`~podium.state.NotFound` (no such guest) or :class:`~podium.state.Conflict`
        (not placed, not running, already migrating, a backup in flight, target is its
        host). The caller validates the target itself (capacity, readiness).
        """
        for _ in range(RETRIES):
            record, gkv = await self._get(keys.object_key(Kind.GUEST, guest))
            if gkv is None:
                raise _cluster.NotFound(f"Guest {guest!r} not found")
            binding, bkv = await self._get(keys.binding_key(guest))
            source = binding.get("host") if binding else None
            if not source or bkv is None:
                raise _cluster.Conflict(
                    f"guest {guest!r} is not placed on any host: only a running guest can "
                    "be live-migrated"
                )
            epoch = int(binding["epoch"])
            status, _ = await self._get(keys.guest_status_key(guest))
            state = GuestState.PENDING.value
            if status and status.get("host") == source and status.get("epoch") == epoch:
                state = str(status.get("state"))
            if state != GuestState.RUNNING.value:
                raise _cluster.Conflict(
                    f"guest {guest!r} is {state}, not running: only a running guest can be "
                    "live-migrated (start it, or wait until it runs)"
                )
            current, mkv = await self._get(keys.migration_key(guest))
            if is_active(current):
                raise _cluster.Conflict(
                    f"guest {guest!r} is already migrating ({current['id']}, "
                    f"{current['state']}, to {current.get('target') or 'a host to be picked'})"
                    ": wait for it to finish (GET /api/v1/migrations/" + guest + ")"
                )
            if binding.get("migration"):
                raise _cluster.Conflict(f"guest {guest!r} is still switching hosts; try again")
            await self._check_no_backup(guest)
            if target == source:
                raise _cluster.Conflict(f"guest {guest!r} already runs on {source}")
            now = self._now()
            new: JSON = {
                "id": new_id(),
                "guest": guest,
                "uid": record["uid"],
                "source": source,
                "target": target,
                "auto": auto,
                "epoch": epoch,
                "target_epoch": None,
                "state": PENDING,
                "message": message or "waiting for the controller to start it",
                "uri": None,
                "reason": reason,
                "created": now,
                "started": None,
                "finished": None,
                "progress": None,
                "result": None,
            }
            compares = [
                Compare(keys.migration_key(guest), "mod", "=", mkv.mod_revision if mkv else 0),
                Compare(keys.binding_key(guest), "mod", "=", bkv.mod_revision),
            ]
            put = Put(keys.migration_key(guest), _cluster.dumps(new))
            if (await self.store.txn(compares, [put])).succeeded:
                return new
        raise _cluster.Conflict(f"guest {guest!r} kept changing; try the migration again")

    async def _check_no_backup(self, guest: str) -> None:
        res = await self.store.range(keys.backup_prefix(guest))
        for kv in res.kvs:
            backup = _cluster.loads(kv.value)
            if backup.get("state") in BACKUP_BUSY:
                raise _cluster.Conflict(
                    f"guest {guest!r} has backup {backup.get('id')} in flight: migrate it "
                    "once the backup finished"
                )

    # -- start (leader) ----------------------------------------------------------------

    async def start(
        self, guest: str, migration_id: str, target: str, *, guard: Sequence[Compare] = ()
    ) -> MigrationOutcome:
        """pending -> preparing: reserve epoch t on ``target`` with an ``incoming`` assignment.

        Not accepted (and nothing written) if the record is no longer that pending
        migration, the guest moved since it was requested (the caller fails it), the
        target's liveness key is gone, or a guard failed (re-read and decide again).
        """
        record, rkv = await self._get(keys.migration_key(guest))
        if rkv is None or record["id"] != migration_id or record["state"] != PENDING:
            return MigrationOutcome(
                False, f"migration {migration_id} of {guest} is no longer pending"
            )
        binding, bkv = await self._get(keys.binding_key(guest))
        source = record["source"]
        if (
            bkv is None
            or binding.get("host") != source
            or int(binding["epoch"]) != int(record["epoch"])
            or binding.get("migration")
        ):
            return MigrationOutcome(False, "moved")
        assignment, akv = await self._get(keys.assign_key(source, guest))
        if akv is None:
            return MigrationOutcome(False, "moved")
        epoch = next_epoch(binding)
        incoming = {
            **_without(assignment, "migrate", "backup"),
            "epoch": epoch,
            "incoming": {"id": migration_id, "source": source},
        }
        now = self._now()
        started = {
            **record,
            "target": target,
            "target_epoch": epoch,
            "state": PREPARING,
            "started": now,
            "message": f"preparing {target} to receive the guest (epoch {epoch})",
        }
        migrating = {**binding, "migration": {"id": migration_id, "to": target, "epoch": epoch}}
        compares = [
            Compare(keys.migration_key(guest), "mod", "=", rkv.mod_revision),
            Compare(keys.binding_key(guest), "mod", "=", bkv.mod_revision),
            Compare(keys.assign_key(source, guest), "mod", "=", akv.mod_revision),
            Compare(keys.host_live_key(target), "version", ">", 0),
            *guard,
        ]
        ops: list[Op] = [
            Put(keys.migration_key(guest), _cluster.dumps(started)),
            Put(keys.binding_key(guest), _cluster.dumps(migrating)),
            Put(keys.assign_key(target, guest), _cluster.dumps(incoming)),
        ]
        if not (await self.store.txn(compares, ops)).succeeded:
            return MigrationOutcome(False, "changed meanwhile")
        await self._emit(
            guest,
            "MigrationStarted",
            f"live migration {migration_id} of {guest}: {source} -> {target} "
            f"(epoch {record['epoch']} -> {epoch}, {record.get('reason', 'operator')})",
        )
        return MigrationOutcome(True, "started", started)

    async def note(self, guest: str, migration_id: str, message: str) -> bool:
        """Set a pending migration's ``message`` (why it waits); False if it changed."""
        record, rkv = await self._get(keys.migration_key(guest))
        if rkv is None or record["id"] != migration_id or record["state"] != PENDING:
            return False
        if record.get("message") == message:
            return True
        new = {**record, "message": message}
        result = await self.store.txn(
            [Compare(keys.migration_key(guest), "mod", "=", rkv.mod_revision)],
            [Put(keys.migration_key(guest), _cluster.dumps(new))],
        )
        return result.succeeded

    # -- agent reports -----------------------------------------------------------------

    async def report(self, host: str, report: JSON) -> MigrationOutcome:
        """One step reported by ``host``'s agent (``POST /api/v1/agent/{host}/migrations``).

        ``report``: ``{"guest", "id", "role", "state", "uri"?, "progress"?, "result"?,
        "message"?}``. Not accepted: stale or not this host's part (the agent drops it).
        """
        guest, mid, role, step = report["guest"], report["id"], report["role"], report["state"]
        for _ in range(RETRIES):
            record, rkv = await self._get(keys.migration_key(guest))
            if rkv is None or record.get("id") != mid:
                current = f"current: {record['id']}" if record else "none recorded"
                return MigrationOutcome(
                    False, f"migration {mid} of {guest} is not current ({current})"
                )
            holder = record.get("source") if role == "source" else record.get("target")
            if holder != host:
                return MigrationOutcome(
                    False, f"{host} is not the {role} of migration {mid} (that is {holder})"
                )
            if step == "ready" and role == "target":
                outcome = await self._ready(record, rkv, str(report.get("uri") or ""))
            elif step == "progress" and role == "source":
                outcome = await self._progress(record, rkv, report.get("progress") or {})
            elif step == "completed" and role == "source":
                outcome = await self._completed(record, rkv, report.get("result") or {})
            elif step == "failed":
                why = str(report.get("message") or "no reason given")
                outcome = await self._failed_report(record, rkv, f"{role} {host}: {why}")
            else:
                return MigrationOutcome(False, f"a {role} does not report {step!r}")
            if outcome is not None:
                return outcome
        raise _cluster.Conflict(f"migration {mid} of {guest}: too much contention; report again")

    async def _ready(self, record: JSON, rkv: KeyValue, uri: str) -> MigrationOutcome | None:
        guest, mid = record["guest"], record["id"]
        if record["state"] == TRANSFERRING and record.get("uri") == uri:
            return MigrationOutcome(True, "already transferring", record)
        if record["state"] != PREPARING:
            return MigrationOutcome(False, f"migration {mid} is {record['state']}, not preparing")
        if not uri:
            return MigrationOutcome(False, "a ready report needs the uri the target listens on")
        binding, bkv = await self._get(keys.binding_key(guest))
        source = record["source"]
        assignment, akv = await self._get(keys.assign_key(source, guest))
        if bkv is None or (binding.get("migration") or {}).get("id") != mid or akv is None:
            return MigrationOutcome(False, f"migration {mid} is no longer in flight")
        migrate = {"id": mid, "to": record["target"], "uri": uri}
        new = {
            **record,
            "state": TRANSFERRING,
            "uri": uri,
            "ready": self._now(),
            "message": f"copying memory from {source} to {record['target']}",
        }
        result = await self.store.txn(
            [
                Compare(keys.migration_key(guest), "mod", "=", rkv.mod_revision),
                Compare(keys.binding_key(guest), "mod", "=", bkv.mod_revision),
                Compare(keys.assign_key(source, guest), "mod", "=", akv.mod_revision),
            ],
            [
                Put(keys.migration_key(guest), _cluster.dumps(new)),
                Put(
                    keys.assign_key(source, guest),
                    _cluster.dumps({**assignment, "migrate": migrate}),
                ),
            ],
        )
        return MigrationOutcome(True, "transferring", new) if result.succeeded else None

    async def _progress(
        self, record: JSON, rkv: KeyValue, progress: JSON
    ) -> MigrationOutcome | None:
        if record["state"] != TRANSFERRING:
            return MigrationOutcome(
                False, f"migration {record['id']} is {record['state']}, not transferring"
            )
        new = {**record, "progress": progress}
        result = await self.store.txn(
            [Compare(keys.migration_key(record["guest"]), "mod", "=", rkv.mod_revision)],
            [Put(keys.migration_key(record["guest"]), _cluster.dumps(new))],
        )
        return MigrationOutcome(True, "recorded", new) if result.succeeded else None

    async def _completed(
        self, record: JSON, rkv: KeyValue, result: JSON
    ) -> MigrationOutcome | None:
        guest, mid = record["guest"], record["id"]
        if record["state"] == COMPLETED:
            return MigrationOutcome(True, "already completed", record)
        if record["state"] != TRANSFERRING:
            if record["state"] == FAILED:
                return await self._late_completion(record)
            return MigrationOutcome(
                False, f"migration {mid} is {record['state']}, not transferring"
            )
        arrived = self._now()
        source, target, epoch = record["source"], record["target"], int(record["target_epoch"])
        binding, bkv = await self._get(keys.binding_key(guest))
        incoming, tkv = await self._get(keys.assign_key(target, guest))
        if bkv is None or (binding.get("migration") or {}).get("id") != mid or tkv is None:
            return MigrationOutcome(False, f"migration {mid} is no longer in flight")
        flipped: JSON = {"host": target, "epoch": epoch}
        if int(binding.get("epoch_floor", 0)) > epoch:
            flipped["epoch_floor"] = int(binding["epoch_floor"])
        now = self._now()
        downtime = float(result.get("downtime_ms") or 0.0)
        outcome = {
            "total_ms": round((now - float(record.get("started") or now)) * 1000.0, 3),
            "downtime_ms": downtime,
            "switchover_ms": round((now - arrived) * 1000.0, 3),
            "transferred": int(result.get("transferred") or 0),
            "qemu_total_ms": float(result.get("total_ms") or 0.0),
        }
        done = {
            **record,
            "state": COMPLETED,
            "finished": now,
            "result": outcome,
            "message": f"completed: now on {target} at epoch {epoch} "
            f"(downtime {downtime:.0f} ms, total {outcome['total_ms']:.0f} ms)",
        }
        status = {
            "state": GuestState.MIGRATING.value,
            "host": target,
            "epoch": epoch,
            "message": f"switching over from {source}",
            "since": now,
        }
        txn = await self.store.txn(
            [
                Compare(keys.migration_key(guest), "mod", "=", rkv.mod_revision),
                Compare(keys.binding_key(guest), "mod", "=", bkv.mod_revision),
                Compare(keys.assign_key(target, guest), "mod", "=", tkv.mod_revision),
            ],
            [
                Put(keys.binding_key(guest), _cluster.dumps(flipped)),
                Delete(keys.assign_key(source, guest)),
                Put(keys.assign_key(target, guest), _cluster.dumps(_without(incoming, "incoming"))),
                Put(keys.migration_key(guest), _cluster.dumps(done)),
                Put(keys.guest_status_key(guest), _cluster.dumps(status)),
            ],
        )
        if not txn.succeeded:
            return None
        await self._emit(
            guest,
            "MigrationCompleted",
            f"live migration {mid} of {guest}: {source} -> {target} completed "
            f"(downtime {downtime:.0f} ms, switchover {outcome['switchover_ms']:.0f} ms, "
            f"total {outcome['total_ms']:.0f} ms)",
        )
        return MigrationOutcome(True, "completed", done)

    async def _late_completion(self, record: JSON) -> MigrationOutcome:
        """The source finished a migration podium had already failed: its guest is gone.

        The target's assignment was dropped with the failure, so nobody runs the guest:
        unbind it (a fresh epoch) so placement starts it again from its disk.
        """
        guest, mid = record["guest"], record["id"]
        _, bkv = await self._get(keys.binding_key(guest))
        binding, rev = await self.state.get_binding(guest)
        if bkv is None or binding.host != record["source"] or binding.epoch != record["epoch"]:
            return MigrationOutcome(False, f"migration {mid} had failed and the guest moved since")
        bound = await self.state.bind(guest, None, expected_revision=rev)
        if bound is None:
            return MigrationOutcome(
                False, f"migration {mid}: the guest's binding changed; report again"
            )
        await self._emit(
            guest,
            "MigrationFailed",
            f"live migration {mid} of {guest} completed on {record['source']} after it had "
            "failed; the guest is restarted by placement",
            warning=True,
        )
        return MigrationOutcome(True, "the migration had failed; the guest will be restarted")

    async def _failed_report(
        self, record: JSON, rkv: KeyValue, why: str
    ) -> MigrationOutcome | None:
        if record["state"] == FAILED:
            return MigrationOutcome(True, "already failed", record)
        if record["state"] not in IN_FLIGHT:
            return MigrationOutcome(False, f"migration {record['id']} is {record['state']}")
        failed = await self._fail(record, rkv, why, ())
        return MigrationOutcome(True, "failed", failed) if failed is not None else None

    # -- failure ---------------------------------------------------------------------------

    async def fail(
        self, guest: str, migration_id: str, why: str, *, guard: Sequence[Compare] = ()
    ) -> bool:
        """Fail an active migration (controller: timeout, host lost, guest moved).

        False if it is no longer active, or a guard failed (re-read and decide again).
        """
        for _ in range(RETRIES):
            record, rkv = await self._get(keys.migration_key(guest))
            if rkv is None or record["id"] != migration_id or record["state"] not in ACTIVE:
                return False
            if await self._fail(record, rkv, why, guard) is not None:
                return True
            if guard:
                return False
        return False

    async def _fail(
        self, record: JSON, rkv: KeyValue, why: str, guard: Sequence[Compare]
    ) -> JSON | None:
        guest, mid = record["guest"], record["id"]
        failed = {**record, "state": FAILED, "finished": self._now(), "message": f"failed: {why}"}
        compares = [Compare(keys.migration_key(guest), "mod", "=", rkv.mod_revision), *guard]
        ops: list[Op] = [Put(keys.migration_key(guest), _cluster.dumps(failed))]
        binding, bkv = await self._get(keys.binding_key(guest))
        in_binding = (binding or {}).get("migration") or {}
        if bkv is not None and in_binding.get("id") == mid:
            compares.append(Compare(keys.binding_key(guest), "mod", "=", bkv.mod_revision))
            kept = _without(binding, "migration")
            kept["epoch_floor"] = max(int(kept.get("epoch_floor", 0)), int(in_binding["epoch"]))
            ops.append(Put(keys.binding_key(guest), _cluster.dumps(kept)))
            if in_binding.get("to") != binding.get("host"):
                ops.append(Delete(keys.assign_key(in_binding["to"], guest)))
            source = binding.get("host")
            if source:
                assignment, akv = await self._get(keys.assign_key(source, guest))
                if akv is not None and (assignment.get("migrate") or {}).get("id") == mid:
                    compares.append(
                        Compare(keys.assign_key(source, guest), "mod", "=", akv.mod_revision)
                    )
                    ops.append(
                        Put(
                            keys.assign_key(source, guest),
                            _cluster.dumps(_without(assignment, "migrate")),
                        )
                    )
        if not (await self.store.txn(compares, ops)).succeeded:
            return None
        await self._emit(
            guest,
            "MigrationFailed",
            f"live migration {mid} of {guest} ({record['source']} -> "
            f"{record.get('target') or '?'}) failed: {why}",
            warning=True,
        )
        return failed

    # -- bind() and delete() hooks -----------------------------------------------------------

    async def release_for_bind(
        self, guest: str, binding: JSON | None, host: str | None, epoch: int
    ) -> Release:
        """Compares and ops that end a migration in flight inside ``bind``'s transaction.

        The target's ``incoming`` assignment goes (unless the new binding puts the guest
        on that very host: its assignment is then overwritten at ``epoch``), and the
        record is marked failed. Nothing to do when no migration is in flight.
        """
        migration = (binding or {}).get("migration")
        if not migration:
            return Release()
        record, rkv = await self._get(keys.migration_key(guest))
        release = Release(
            compares=[
                Compare(keys.migration_key(guest), "mod", "=", rkv.mod_revision if rkv else 0)
            ]
        )
        if migration.get("to") != host:
            release.ops.append(Delete(keys.assign_key(migration["to"], guest)))
        if record and record.get("id") == migration.get("id") and record["state"] in ACTIVE:
            release.failed = {
                **record,
                "state": FAILED,
                "finished": self._now(),
                "message": f"failed: interrupted: the guest was rebound to {host or 'no host'} "
                f"at epoch {epoch} (its host was lost or it was moved)",
            }
            release.ops.append(Put(keys.migration_key(guest), _cluster.dumps(release.failed)))
        return release

    async def released(self, release: Release) -> None:
        """After ``bind`` committed a :class:`Release`: the event."""
        if release.failed is not None:
            r = release.failed
            await self._emit(
                r["guest"],
                "MigrationFailed",
                f"live migration {r['id']} of {r['guest']} ({r['source']} -> {r.get('target')}) "
                f"{r['message']}",
                warning=True,
            )

    @staticmethod
    def delete_ops(guest: str, binding: JSON | None) -> list[Op]:
        """Deletes that go with the guest's own delete: its record, the target's assignment."""
        ops: list[Op] = [Delete(keys.migration_key(guest))]
        migration = (binding or {}).get("migration")
        if migration and migration.get("to") != (binding or {}).get("host"):
            ops.append(Delete(keys.assign_key(migration["to"], guest)))
        return ops

    async def _emit(self, guest: str, reason: str, message: str, *, warning: bool = False) -> None:
        try:
            await self.state.emit("Guest", guest, reason, message, warning=warning)
        except StoreError as err:  # the step is committed; the event is best effort
            log.warning("could not record %s for %s: %s", reason, guest, err)
