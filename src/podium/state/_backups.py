"""Backups of running guests: records, the request on the assignment, reports, restore.

::

    create_backup(guest, mode, target) ── one txn, guarded by the binding's mod revision ─┐
        put /podium/backups/<guest>/<id>   {state: pending, host, site, epoch, mode,       │
                                            target, parent_path, parent_volumes, ...}     │
        put /podium/assign/<host>/<guest>  + "backup": {id, mode, target, parent_path,     │
                                                        parent_volumes}                   ┘
    agent of that host ──report_backup(running | completed | failed)──> record updated
        (completed brings path and volumes; accepted only from the guest's bound host
         at the record's epoch; on completed/failed the "backup" entry leaves the
         assignment, same txn)
    sweeper (leader) ── stale_reason(): guest moved or deleted ──> failed
    restore_backup(id, as) ──> new Guest: the backup's spec, fresh NICs, restore_from
                                (= restore_spec(backup): {backup, path, volumes})

A backup covers every volume of the guest at one point in time: ``path`` is the root
volume's file, ``volumes`` maps each LUN volume id (``<profile>/<volume>``) to its file
(``parent_volumes`` likewise for the parent). Its *target* is ``local`` (the host's
backups folder) or ``replica`` (the host's replica folder: the other site's storage);
``site`` is the ``site`` label of the host that took it. Records written before targets
existed read as ``local`` (:func:`normal`).

Vocabulary: *in flight* = ``pending`` or ``running`` (at most one per guest, whatever
the target); the *chain* of a guest (by uid) and target is its completed backups to that
target, newest last: an incremental backup's ``parent`` is the newest completed one of
the same uid and target, whose files its images build on.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from podium.model import GuestState, Kind
from podium.state import _cluster, _ipam, _profiles, keys
from podium.store import Compare, Op, Put

JSON = dict[str, Any]

MODES = ("auto", "full", "incremental")
TARGETS = ("local", "replica")
IN_FLIGHT = ("pending", "running")
FINAL = ("completed", "failed")
RETRIES = 10


def new_backup_id(guest: str, now: float) -> str:
    """``<guest>-<UTC yyyymmddThhmmssZ>-<4 hex>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{guest}-{stamp}-{secrets.token_hex(2)}"


def guest_of_id(backup_id: str) -> str:
    """The guest a backup id names (ids are ``<guest>-<stamp>-<hex>``)."""
    parts = backup_id.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else ""


async def _get(state: _cluster.ClusterState, key: str) -> tuple[Any, int]:
    kv = await state.store.get(key)
    return (_cluster.loads(kv.value), kv.mod_revision) if kv else (None, 0)


def normal(record: JSON) -> JSON:
    """``record`` with the fields older records lack: ``target`` local, no LUN volumes."""
    return {
        "target": "local",
        "site": None,
        "volumes": {},
        "parent_volumes": {},
        **record,
    }


async def list_backups(
    state: _cluster.ClusterState, guest: str | None = None
) -> tuple[list[JSON], int]:
    """Backup records (of ``guest``, or all), oldest first, and the revision read at."""
    res = await state.store.range(keys.backup_prefix(guest) if guest else keys.BACKUPS)
    items = [normal(_cluster.loads(kv.value)) for kv in res.kvs]
    items.sort(key=lambda r: (r.get("created", 0.0), r["id"]))
    return items, res.revision


async def get_backup(state: _cluster.ClusterState, backup_id: str) -> JSON:
    """One backup record. Raises :class:`~podium.state.NotFound`."""
    record, _ = await _find(state, backup_id)
    return record


async def _find(state: _cluster.ClusterState, backup_id: str) -> tuple[JSON, int]:
    guest = guest_of_id(backup_id)
    if guest and "/" not in backup_id:
        record, rev = await _get(state, keys.backup_key(guest, backup_id))
        if record is not None:
            return normal(record), rev
    raise _cluster.NotFound(f"backup {backup_id!r} not found: list them with GET /api/v1/backups")


def _newest_completed(backups: list[JSON], uid: str, target: str) -> JSON | None:
    done = [
        b
        for b in backups
        if b.get("uid") == uid
        and b.get("state") == "completed"
        and (b.get("target") or "local") == target
    ]
    return max(done, key=lambda b: (b.get("finished") or 0.0, b["id"])) if done else None


async def newest_replica(
    state: _cluster.ClusterState, uid: str, *, guest: str | None = None
) -> JSON | None:
    """The newest completed ``replica`` backup of the guest with ``uid`` (``None``: none).

    Reads every backup record, or only ``guest``'s when its name is known (cheaper).
    """
    backups, _ = await list_backups(state, guest)
    return _newest_completed(backups, uid, "replica")


def restore_spec(backup: JSON) -> JSON:
    """The ``restore_from`` of a guest made from completed ``backup``: ``{"backup": ID,
    "path": ROOT_PATH, "volumes": {"<profile>/<volume>": PATH, ...}}``. Raises
    ``Conflict`` if the backup is not completed."""
    if backup.get("state") != "completed" or not backup.get("path"):
        raise _cluster.Conflict(
            f"backup {backup.get('id')} is {backup.get('state')}: only a completed backup "
            "can be restored"
        )
    volumes = backup.get("volumes") or {}
    return {"backup": backup["id"], "path": backup["path"], "volumes": dict(volumes)}


def _lun_volumes(spec: JSON) -> list[str]:
    """The LUN volume ids of an assignment's spec (a profile's realised HBAs)."""
    hbas = spec.get("hbas") or []
    return [str(lun["volume"]) for h in hbas for lun in h.get("luns") or [] if "volume" in lun]


async def _site(state: _cluster.ClusterState, host: str) -> str | None:
    record = await state.get_record(Kind.HOST, host)
    site = ((record or {}).get("spec") or {}).get("labels", {}).get("site")
    return str(site) if site is not None else None


async def create_backup(
    state: _cluster.ClusterState, guest: str, mode: str = "auto", *, target: str = "local"
) -> JSON:
    """Ask the guest's host for a backup of all its volumes to ``target``; return the new
    (pending) record.

    One transaction, guarded by the binding's and the assignment's mod revisions: the
    record, and ``backup`` on the guest's current assignment. An incremental builds on
    the newest completed backup of the same uid and target. Raises ``NotFound`` for an
    unknown guest; ``Conflict`` if it is not running, is migrating, already has a backup
    in flight, or ``incremental`` has nothing to build on.
    """
    if mode not in MODES:
        raise ValueError(f"unknown backup mode {mode!r}: expected one of {', '.join(MODES)}")
    if target not in TARGETS:
        raise ValueError(f"unknown backup target {target!r}: expected one of {', '.join(TARGETS)}")
    for _ in range(RETRIES):
        record = await state.get_record(Kind.GUEST, guest)
        if record is None:
            raise _cluster.NotFound(f"Guest {guest!r} not found")
        binding, brev = await _get(state, keys.binding_key(guest))
        report, _ = await _get(state, keys.guest_status_key(guest))
        host = binding.get("host") if binding else None
        epoch = int(binding["epoch"]) if binding else 0
        running = (
            host is not None
            and report is not None
            and report.get("host") == host
            and report.get("epoch") == epoch
            and report.get("state") == GuestState.RUNNING.value
        )
        if binding and binding.get("migration"):
            raise _cluster.Conflict(
                f"guest {guest!r} is being migrated: back it up once the migration is over"
            )
        if not running:
            now = report.get("state") if report and report.get("epoch") == epoch else "pending"
            raise _cluster.Conflict(
                f"guest {guest!r} is not running (state {now}): only a running guest "
                "can be backed up"
            )
        backups, _ = await list_backups(state, guest)
        busy = [b for b in backups if b.get("state") in IN_FLIGHT]
        if busy:
            raise _cluster.Conflict(
                f"backup {busy[0]['id']} of guest {guest!r} is still {busy[0]['state']}: "
                "wait for it to finish"
            )
        assert host is not None
        akey = keys.assign_key(host, guest)
        assignment, arev = await _get(state, akey)
        if assignment is None or assignment.get("epoch") != epoch:
            continue  # the binding is being written: read again
        parent = _newest_completed(backups, record["uid"], target)
        actual = mode
        if mode == "auto":
            actual = "incremental" if parent else "full"
        elif mode == "incremental" and parent is None:
            raise _cluster.Conflict(
                f"guest {guest!r} has no completed backup (target {target}) to build an "
                "incremental one on: take a full (or auto) backup first"
            )
        if actual == "full":
            parent = None
        luns = _lun_volumes(assignment.get("spec") or {})
        parent_volumes = {
            v: p for v, p in ((parent or {}).get("volumes") or {}).items() if v in luns
        }
        now = state._clock()
        backup_id = new_backup_id(guest, now)
        backup = {
            "id": backup_id,
            "guest": guest,
            "uid": record["uid"],
            "owner": record.get("owner"),
            "host": host,
            "site": await _site(state, host),
            "epoch": epoch,
            "mode": actual,
            "requested_mode": mode,
            "target": target,
            "parent": parent["id"] if parent else None,
            "parent_path": parent["path"] if parent else None,
            "parent_volumes": parent_volumes,
            "path": None,
            "volumes": {},
            "state": "pending",
            "created": now,
            "finished": None,
            "bytes": None,
            "progress": None,
            "message": "",
            "spec": record["spec"],
        }
        request = {
            "id": backup_id,
            "mode": actual,
            "target": target,
            "parent_path": backup["parent_path"],
            "parent_volumes": parent_volumes,
        }
        bkey = keys.backup_key(guest, backup_id)
        result = await state.store.txn(
            [
                Compare(keys.binding_key(guest), "mod", "=", brev),
                Compare(akey, "mod", "=", arev),
                Compare(bkey, "version", "=", 0),
            ],
            [
                Put(bkey, _cluster.dumps(backup)),
                Put(akey, _cluster.dumps({**assignment, "backup": request})),
            ],
        )
        if result.succeeded:
            await state.emit(
                "Guest",
                guest,
                "BackupCreated",
                f"backup {backup_id} of {guest} requested on {host} ({actual}, {target})",
            )
            return backup
    raise _cluster.Conflict(f"guest {guest!r} kept changing while requesting a backup; try again")


async def _drop_request(
    state: _cluster.ClusterState, record: JSON
) -> tuple[list[Compare], list[Op]]:
    """Compares and ops that take ``backup`` off the assignment, if it still asks for it."""
    akey = keys.assign_key(record["host"], record["guest"])
    assignment, arev = await _get(state, akey)
    if assignment is None or (assignment.get("backup") or {}).get("id") != record["id"]:
        return [], []
    rest = {k: v for k, v in assignment.items() if k != "backup"}
    return [Compare(akey, "mod", "=", arev)], [Put(akey, _cluster.dumps(rest))]


async def report_backup(state: _cluster.ClusterState, host: str, report: JSON) -> tuple[bool, str]:
    """Apply one agent report; return ``(accepted, reason)``.

    Accepted only from the guest's bound host at the record's epoch, for a backup still
    in flight. ``completed``/``failed`` also remove ``backup`` from the assignment.
    """
    guest, backup_id, new_state = report["guest"], report["id"], report["state"]
    for _ in range(RETRIES):
        record, rev = await _get(state, keys.backup_key(guest, backup_id))
        if record is None:
            return False, f"backup {backup_id} of guest {guest} does not exist"
        if record["state"] in FINAL:
            return False, f"backup {backup_id} is already {record['state']}"
        binding, brev = await _get(state, keys.binding_key(guest))
        bound = (binding or {}).get("host")
        epoch = int(binding["epoch"]) if binding else 0
        if record["host"] != host or bound != host or epoch != record["epoch"]:
            return False, (
                f"stale: backup {backup_id} was asked of {record['host']} at epoch "
                f"{record['epoch']}; guest {guest} is now bound to {bound} at epoch {epoch}"
            )
        updated = {**record, "state": new_state}
        for field in ("path", "volumes", "bytes", "progress", "message", "duration_ms"):
            if report.get(field) is not None:
                updated[field] = report[field]
        if report.get("mode") in ("full", "incremental"):
            updated["mode"] = report["mode"]
        compares = [
            Compare(keys.backup_key(guest, backup_id), "mod", "=", rev),
            Compare(keys.binding_key(guest), "mod", "=", brev),
        ]
        ops: list[Op] = []
        if new_state in FINAL:
            updated["finished"] = state._clock()
            more_compares, ops = await _drop_request(state, record)
            compares += more_compares
        ops.append(Put(keys.backup_key(guest, backup_id), _cluster.dumps(updated)))
        result = await state.store.txn(compares, ops)
        if not result.succeeded:
            continue
        if new_state == "completed":
            size = f", {updated['bytes']} bytes" if updated.get("bytes") is not None else ""
            await state.emit(
                "Guest",
                guest,
                "BackupCompleted",
                f"backup {backup_id} of {guest} completed ({updated['mode']}{size}): "
                f"{updated.get('path')}",
            )
        elif new_state == "failed":
            await _emit_failed(state, updated)
        return True, ""
    raise _cluster.Conflict(f"backup {backup_id}: too much contention; report again")


async def _emit_failed(state: _cluster.ClusterState, record: JSON) -> None:
    why = f": {record['message']}" if record.get("message") else ""
    await state.emit(
        "Guest",
        record["guest"],
        "BackupFailed",
        f"backup {record['id']} of {record['guest']} failed on {record['host']}{why}",
        warning=True,
    )


def stale_reason(backup: JSON, guest: JSON | None, binding: JSON | None) -> str | None:
    """Why an in-flight backup can no longer finish (``None``: it still can). Pure."""
    if backup.get("state") not in IN_FLIGHT:
        return None
    if guest is None or guest.get("uid") != backup.get("uid"):
        return f"guest {backup['guest']} was deleted during the backup"
    host = (binding or {}).get("host")
    epoch = int(binding["epoch"]) if binding else 0
    if host != backup["host"] or epoch != backup["epoch"]:
        return (
            f"guest {backup['guest']} moved from {backup['host']} (epoch {backup['epoch']}) "
            f"to {host or 'no host'} (epoch {epoch}) during the backup"
        )
    return None


async def fail_stale_backups(
    state: _cluster.ClusterState, guest: str, guard: list[Compare] | tuple[Compare, ...] = ()
) -> int:
    """Fail every in-flight backup of ``guest`` that :func:`stale_reason` condemns.

    Each write is guarded by the record's and the binding's mod revisions and
    ``guard`` (leadership). Returns how many were failed; raises ``Conflict`` if a
    guard failed (re-read and decide again).
    """
    backups, _ = await list_backups(state, guest)
    failed = 0
    for backup in backups:
        if backup.get("state") not in IN_FLIGHT:
            continue
        record = await state.get_record(Kind.GUEST, guest)
        binding, brev = await _get(state, keys.binding_key(guest))
        reason = stale_reason(backup, record, binding)
        if reason is None:
            continue
        bkey = keys.backup_key(guest, backup["id"])
        current, rev = await _get(state, bkey)
        if current is None or current.get("state") not in IN_FLIGHT:
            continue
        updated = {**current, "state": "failed", "message": reason, "finished": state._clock()}
        compares, ops = await _drop_request(state, current)
        compares += [
            Compare(bkey, "mod", "=", rev),
            Compare(keys.binding_key(guest), "mod", "=", brev),
            *guard,
        ]
        ops.append(Put(bkey, _cluster.dumps(updated)))
        result = await state.store.txn(compares, ops)
        if not result.succeeded:
            raise _cluster.Conflict(f"backup {backup['id']}: changed while failing it")
        await _emit_failed(state, updated)
        failed += 1
    return failed


async def restore_backup(
    state: _cluster.ClusterState, backup_id: str, as_name: str | None = None
) -> str:
    """Create Guest ``as_name`` (default: the original) from a completed backup.

    The new guest has the backup's spec with fresh NICs (fixed MACs and IPs dropped),
    or, if it wore a profile, that profile's identity (refused while another guest wears
    it), and ``restore_from``: :func:`restore_spec` (every volume). Returns its name.
    Raises ``NotFound``, or ``Conflict`` if the backup is not completed or the name is
    taken.
    """
    backup, _ = await _find(state, backup_id)
    restore_from = restore_spec(backup)
    name = as_name or backup["guest"]
    spec = {k: v for k, v in backup["spec"].items() if k not in ("app", "spread", "restore_from")}
    if not spec.get("profile"):
        spec["nics"] = [{} for _ in backup["spec"].get("nics", [{}])]
    spec["restore_from"] = restore_from
    key = keys.object_key(Kind.GUEST, name)
    for _ in range(RETRIES):
        if await state.store.get(key) is not None:
            raise _cluster.Conflict(f"guest {name!r} exists: delete it or restore --as NEW_NAME")
        record = state._new_record(Kind.GUEST, name, spec)
        compares: list[Compare] = [Compare(key, "version", "=", 0)]
        ops: list[Op] = []
        if spec.get("profile"):  # it wears its profile's identity again, if no one else does
            await _profiles.Realiser(state, []).wear(record, compares, ops)
        else:
            await _ipam.NicAllocator(state.store, state.guest_network).realise(
                record, compares, ops
            )
        ops.append(Put(key, _cluster.dumps(record)))
        result = await state.store.txn(compares, ops)
        if result.succeeded:
            await state.emit(
                "Guest", name, "GuestRestored", f"guest {name} restored from backup {backup_id}"
            )
            return name
    raise _cluster.Conflict(f"restoring {backup_id}: addresses kept changing; try again")
