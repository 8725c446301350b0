"""Site disaster recovery: fail a site's protected guests over to another site, and back.

::

    failover(A -> B, map)   refused while a host of A lives (a guest must never run twice)
      per protected profile worn by a guest of site A, one transaction:
        profile re-homed by the map (NIC networks, VLAN/IP/gateway; MACs, WWNs kept)
        guest re-created (same name and spec, new uid): site B, restore_from = its newest
        completed replica; binding, status, assignment of the lost host dropped
    failback_sync(B -> A)   a final replica of each protected guest of site B (their ids)
    failback_stop(B -> A, ids)  once those completed: each of their guests stopped on B
    failback(B -> A, ids)   each guest, once stopped on B, re-created on A from its final
                            replica (the map read backwards: networks and ips return where
                            failover sent them); one still running on B is not moved, so it
                            never runs on both sites
    report: {operation, from, to, at, guests: [...], recovered, not_recovered, already,
             max_loss_s}   (loss_s = at - the replica's point, its ``created``)

Vocabulary: a guest *of site S* is pinned there (``spec.site``), bound to a host whose
``site`` label is S, or unbound and last reported by such a host. A *protected* profile
has ``protection: {rpo_s}``; its *wearer* is the guest at ``/podium/profileuse/<name>``.
A recovered guest's record carries ``dr: {operation, from, to, at, backup}``, so a second
run reports it as already recovered instead of recovering it twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podium.model import GuestState, HostState, Kind, PoolType, parse_value
from podium.state import _backups, _cluster, _drain, _migrations, _profiles, keys
from podium.state._dr_map import DrMapModel, check_map, check_site, inverse
from podium.state._pools import PoolAllocator
from podium.store import Compare, Delete, Op, Put

JSON = dict[str, Any]
RETRIES = 10  # per guest: transactions lost to a concurrent write, re-read and retried


@dataclass(slots=True)
class Member:
    """A guest of the site, and the protected profile it wears (if any)."""

    guest: JSON
    profile: JSON | None  # its profile's record, when protected
    site: str  # the site it is of


@dataclass(slots=True)
class Site:
    """What one read of the cluster says about a site's hosts and guests."""

    hosts: list[str]
    live: list[str]  # hosts whose lease lives (ready or suspect)
    members: list[Member] = field(default_factory=list)
    recovered: list[JSON] = field(default_factory=list)  # guests an earlier run recovered


async def read_site(state: _cluster.ClusterState, site: str, *, recovered_to: str = "") -> Site:
    """The site's hosts and guests (one range read per prefix); ``recovered_to``: also the
    guests an earlier failover of this site recovered there."""
    hosts, _ = await state.list_records(Kind.HOST)
    labels = {h["name"]: (h["spec"].get("labels") or {}).get("site") for h in hosts}
    mine = sorted(n for n, s in labels.items() if s == site)
    live_keys = await state._map(keys.HOST_LIVE)
    statuses = await state._map(keys.HOST_STATUS)
    live = [
        h
        for h in mine
        if h in live_keys and (statuses.get(h) or {}).get("state") != HostState.LOST.value
    ]
    bindings = await state._map(keys.BINDINGS)
    reports = await state._map(keys.GUEST_STATUS)
    profiles = {p["name"]: p for p in (await state.list_records(Kind.PROFILE))[0]}
    out = Site(mine, live)
    for guest in sorted((await state.list_records(Kind.GUEST))[0], key=lambda g: g["name"]):
        done = guest.get("dr") or {}
        if recovered_to and done.get("from") == site and guest["spec"].get("site") == recovered_to:
            out.recovered.append(guest)
            continue
        host = (bindings.get(guest["name"]) or {}).get("host")
        last = (reports.get(guest["name"]) or {}).get("host") if host is None else host
        pinned = guest["spec"].get("site")
        if pinned != site and (pinned is not None or labels.get(last or "") != site):
            continue
        profile = profiles.get(guest["spec"].get("profile") or "")
        protected = profile is not None and profile["spec"].get("protection")
        out.members.append(Member(guest, profile if protected else None, site))
    return out


def entry(
    guest: str,
    profile: str | None,
    *,
    at: float,
    rpo_s: int | None = None,
    backup: JSON | None = None,
    reason: str = "",
    recovered: bool = False,
    changes: _profiles.Rehomed | None = None,
) -> JSON:
    """One guest's line of a report."""
    point = float(backup["created"]) if backup else None
    loss = None if point is None else round(max(0.0, at - point), 3)
    return {
        "guest": guest,
        "profile": profile,
        "recovered": recovered,
        "reason": reason,
        "backup": backup["id"] if backup else None,
        "point": point,
        "loss_s": loss,
        "rpo_s": rpo_s,
        "within_rpo": None if loss is None or rpo_s is None else loss <= rpo_s,
        "networks": dict(changes.networks) if changes else {},
        "ips": dict(changes.ips) if changes else {},
    }


def report(operation: str, from_site: str, to_site: str, at: float, guests: list[JSON]) -> JSON:
    """The report of one operation (counts and the worst loss window of those recovered)."""
    done = [g for g in guests if g["recovered"] and not g.get("already")]
    losses = [g["loss_s"] for g in done if g["loss_s"] is not None]
    return {
        "operation": operation,
        "from": from_site,
        "to": to_site,
        "at": at,
        "guests": guests,
        "recovered": len(done),
        "already": sum(1 for g in guests if g.get("already")),
        "not_recovered": sum(1 for g in guests if not g["recovered"]),
        "max_loss_s": max(losses, default=None),
    }


def _rpo(profile: JSON | None) -> int | None:
    protection = (profile or {}).get("spec", {}).get("protection")
    return int(protection["rpo_s"]) if protection else None


def _unprotected(member: Member, at: float) -> JSON:
    guest = member.guest
    name = guest["spec"].get("profile")
    why = (
        f"not protected: Profile {name!r} has no protection (add protection: {{rpo_s: N}})"
        if name
        else "not protected: it wears no profile (only protected profiles are replicated)"
    )
    return entry(guest["name"], name, at=at, reason=why)


def _already(guest: JSON, at: float, rpo_s: int | None) -> JSON:
    done = guest.get("dr") or {}
    backup = {"id": done.get("backup"), "created": done.get("point")} if done.get("point") else None
    line = entry(
        guest["name"],
        guest["spec"].get("profile"),
        at=float(done.get("at", at)),
        rpo_s=rpo_s,
        backup=backup,
        recovered=True,
        reason=f"already recovered by {done.get('operation', 'an earlier run')}",
    )
    return {**line, "already": True}


def _fixed_ips(ips: Mapping[str, str]) -> list[tuple[PoolType, int]]:
    """The map's new addresses, so no take hands one out before its NIC claims it."""
    out = []
    for new in ips.values():
        kind = PoolType.IPV6 if ":" in new else PoolType.IPV4
        out.append((kind, parse_value(kind, new)))
    return out


@dataclass(frozen=True, slots=True)
class Move:
    """One guest re-created elsewhere: how, from which backup, guarded by what."""

    operation: str
    from_site: str
    to_site: str
    at: float
    networks: Mapping[str, str]
    ips: Mapping[str, str]
    guard_host_gone: bool  # failover: the old host's liveness key must stay absent


async def recreate(
    state: _cluster.ClusterState, move: Move, guest_name: str, backup: JSON, profile_name: str
) -> _profiles.Rehomed:
    """Re-home ``profile_name`` and re-create ``guest_name`` on ``move.to_site`` from
    ``backup``, in one transaction. Raises ``Conflict`` (the reason, for the report)."""
    restore_from = _backups.restore_spec(backup)
    for attempt in range(RETRIES):
        gkey, pkey = (
            keys.object_key(Kind.GUEST, guest_name),
            keys.object_key(Kind.PROFILE, profile_name),
        )
        ukey, bkey = keys.profile_use_key(profile_name), keys.binding_key(guest_name)
        guest, gkv = await state._get_json(gkey)
        profile, pkv = await state._get_json(pkey)
        use, ukv = await state._get_json(ukey)
        binding, bkv = await state._get_json(bkey)
        if gkv is None or pkv is None or ukv is None or use.get("guest") != guest_name:
            raise _cluster.Conflict(
                f"Guest {guest_name!r} no longer wears Profile {profile_name!r}: nothing to move"
            )
        if guest["uid"] != backup.get("uid"):
            raise _cluster.Conflict(f"backup {backup['id']} is of another guest {guest_name!r}")
        host = (binding or {}).get("host")
        skey = keys.guest_status_key(guest_name)
        status, skv = await state._get_json(skey)
        if host and not move.guard_host_gone and not _stopped(status, binding):
            now = (status or {}).get("state", "pending")
            raise _cluster.Conflict(
                f"Guest {guest_name!r} is {now} on host {host}, not stopped: it would run on "
                "both sites (podium dr failback stops it after its final replica)"
            )
        compares = [
            Compare(skey, "mod", "=", skv.mod_revision if skv else 0),
            Compare(gkey, "mod", "=", gkv.mod_revision),
            Compare(pkey, "mod", "=", pkv.mod_revision),
            Compare(ukey, "mod", "=", ukv.mod_revision),
            Compare(bkey, "mod", "=", bkv.mod_revision if bkv else 0),
        ]
        if move.guard_host_gone and host:
            compares.append(Compare(keys.host_live_key(host), "version", "=", 0))
        ops: list[Op] = []
        realiser = _profiles.Realiser(state, [], attempt=attempt)
        realiser.alloc = PoolAllocator(
            state.store, spread=0 if attempt == 0 else 8 << attempt, fixed=_fixed_ips(move.ips)
        )
        rehomed = await realiser.rehome(profile, move.networks, move.ips, compares, ops)
        spec = {k: v for k, v in guest["spec"].items() if k != "restore_from"}
        spec.update(site=move.to_site, restore_from=restore_from)
        new = state._new_record(Kind.GUEST, guest_name, spec, owner=guest.get("owner"))
        identity = rehomed.record["identity"]
        new.update(nics=identity["nics"], hbas=identity["hbas"], boot=identity["boot"])
        new["dr"] = {
            "operation": move.operation,
            "from": move.from_site,
            "to": move.to_site,
            "at": move.at,
            "backup": backup["id"],
            "point": backup["created"],
        }
        ops += [
            Put(pkey, _cluster.dumps(rehomed.record)),
            Put(gkey, _cluster.dumps(new)),
            Put(ukey, _cluster.dumps({"guest": guest_name, "uid": new["uid"]})),
            Delete(bkey),
            Delete(keys.guest_status_key(guest_name)),
            Delete(keys.console_key(guest_name)),
            *_migrations.Migrations.delete_ops(guest_name, binding),
        ]
        if host:
            ops.append(Delete(keys.assign_key(host, guest_name)))
        result = await state.store.txn(compares, ops)
        if result.succeeded:
            return rehomed
        if move.guard_host_gone and host and await state.store.get(keys.host_live_key(host)):
            raise _cluster.Conflict(
                f"host {host} (site {move.from_site}) came back during the failover: "
                f"Guest {guest_name!r} stays there"
            )
    raise _cluster.Conflict(f"Guest {guest_name!r} kept changing during the {move.operation}")


def _stopped(status: JSON | None, binding: JSON | None) -> bool:
    """Whether the bound host reported the guest stopped at the binding's epoch."""
    return (
        status is not None
        and binding is not None
        and status.get("host") == binding.get("host")
        and status.get("epoch") == binding.get("epoch")
        and status.get("state") == GuestState.STOPPED.value
    )


async def _recover_all(
    state: _cluster.ClusterState, move: Move, members: Sequence[Member], finals: Mapping[str, JSON]
) -> list[JSON]:
    """Move every protected member (``finals``: uid -> the backup to use; else the newest
    completed replica); a report line each."""
    lines = []
    for member in members:
        guest, profile = member.guest, member.profile
        if profile is None:
            lines.append(_unprotected(member, move.at))
            continue
        rpo = _rpo(profile)
        if move.operation == "failback":
            backup = finals.get(guest["uid"])
            if backup is None or backup.get("state") != "completed":
                why = _final_missing(guest["name"], backup)
                lines.append(
                    entry(guest["name"], profile["name"], at=move.at, rpo_s=rpo, reason=why)
                )
                continue
        else:
            backup = await _backups.newest_replica(state, guest["uid"], guest=guest["name"])
            if backup is None:
                why = (
                    f"no completed replica of Guest {guest['name']!r}: it was never replicated "
                    "to the other site (is its guest running? see podium events: ReplicaFailed)"
                )
                lines.append(
                    entry(guest["name"], profile["name"], at=move.at, rpo_s=rpo, reason=why)
                )
                continue
        try:
            changes = await recreate(state, move, guest["name"], backup, profile["name"])
        except _cluster.Conflict as err:
            lines.append(
                entry(
                    guest["name"],
                    profile["name"],
                    at=move.at,
                    rpo_s=rpo,
                    backup=backup,
                    reason=str(err),
                )
            )
            await state.emit("Guest", guest["name"], "GuestNotRecovered", str(err), warning=True)
            continue
        line = entry(
            guest["name"], profile["name"], at=move.at, rpo_s=rpo, backup=backup, recovered=True,
            changes=changes,
        )  # fmt: skip
        lines.append(line)
        await state.emit(
            "Guest",
            guest["name"],
            "GuestRecovered",
            f"{move.operation} {move.from_site} -> {move.to_site}: {guest['name']} re-created "
            f"from {backup['id']} (loss window {line['loss_s']:.0f} s, RPO {rpo} s)",
        )
    return lines


def _final_missing(guest: str, backup: JSON | None) -> str:
    if backup is None:
        return (
            f"no final replica of Guest {guest!r} was given: run podium dr failback again "
            "(its sync asks for one)"
        )
    if backup.get("state") == "failed":
        return f"final replica {backup['id']} failed: {backup.get('message') or 'no reason'}"
    return f"final replica {backup['id']} is still {backup.get('state')}: wait for it"


async def failover(
    state: _cluster.ClusterState, from_site: str, to_site: str, dr_map: DrMapModel
) -> JSON:
    """Recover site ``from_site``'s protected guests on ``to_site``; return the report.

    Raises ``Conflict`` while a host of ``from_site`` lives, or for a bad map.
    """
    await check_sites(state, from_site, to_site)
    await check_map(state, dr_map, test=False)
    site = await read_site(state, from_site, recovered_to=to_site)
    if site.live:
        raise _cluster.Conflict(
            f"site {from_site} still has live hosts ({', '.join(site.live)}): failing over "
            "now could run a guest twice. Stop them (or wait for their leases to expire); "
            f"to drill without touching production, run podium dr test --from {from_site} "
            f"--to {to_site}"
        )
    at = state.now()
    await state.emit(
        "Site", from_site, "DrFailover", f"failover {from_site} -> {to_site} started", warning=True
    )
    move = Move("failover", from_site, to_site, at, dr_map.networks, dr_map.ips, True)
    lines = [_already(g, at, None) for g in site.recovered]
    lines += await _recover_all(state, move, site.members, {})
    out = report("failover", from_site, to_site, at, lines)
    await state.emit("Site", from_site, "DrFailover", _summary(out))
    return out


async def failback_sync(state: _cluster.ClusterState, from_site: str, to_site: str) -> JSON:
    """Ask for a final replica of every protected guest of ``from_site``: ``{"operation":
    "failback-sync", "from", "to", "at", "backups": [{"guest", "backup", "state"}],
    "skipped": [{"guest", "reason"}]}`` (a replica already in flight counts)."""
    await check_sites(state, from_site, to_site)
    site = await read_site(state, from_site)
    backups: list[JSON] = []
    skipped: list[JSON] = []
    for member in site.members:
        name = member.guest["name"]
        if member.profile is None:
            continue
        flying = [
            b
            for b in (await _backups.list_backups(state, name))[0]
            if b.get("uid") == member.guest["uid"]
            and b.get("state") in _backups.IN_FLIGHT
            and b.get("target") == "replica"
        ]
        try:
            record = (
                flying[-1]
                if flying
                else await _backups.create_backup(state, name, "auto", target="replica")
            )
        except _cluster.StateError as err:
            skipped.append({"guest": name, "reason": str(err)})
            continue
        backups.append({"guest": name, "backup": record["id"], "state": record["state"]})
    return {
        "operation": "failback-sync",
        "from": from_site,
        "to": to_site,
        "at": state.now(),
        "backups": backups,
        "skipped": skipped,
    }


async def failback_stop(
    state: _cluster.ClusterState, from_site: str, to_site: str, backups: Sequence[str]
) -> JSON:
    """Stop, at its current epoch, the guest of each final replica in ``backups`` (each
    must be completed): ``{"operation": "failback-stop", "from", "to", "at", "stopping":
    [guest], "skipped": [{"guest", "reason"}]}``. The agent stops it for good; then
    :func:`failback` moves it. Writes after the final replica's point are what is lost."""
    await check_sites(state, from_site, to_site)
    at = state.now()
    stopping: list[str] = []
    skipped: list[JSON] = []
    for backup_id in backups:
        record = await _backups.get_backup(state, backup_id)
        name = str(record["guest"])
        if record.get("state") != "completed":
            skipped.append({"guest": name, "reason": _final_missing(name, record)})
            continue
        guest = await state.get_record(Kind.GUEST, name)
        binding, _ = await state._get_json(keys.binding_key(name))
        host = (binding or {}).get("host")
        if guest is None or guest["uid"] != record.get("uid") or not host:
            skipped.append({"guest": name, "reason": "not placed at its final replica's uid"})
            continue
        if await _drain.stop_for_drain(state, name, host, at, (), stamp="dr_stop"):
            stopping.append(name)
        else:
            skipped.append({"guest": name, "reason": "its binding changed: run failback again"})
    return {
        "operation": "failback-stop",
        "from": from_site,
        "to": to_site,
        "at": at,
        "stopping": stopping,
        "skipped": skipped,
    }


async def failback(
    state: _cluster.ClusterState,
    from_site: str,
    to_site: str,
    dr_map: DrMapModel,
    backups: Sequence[str],
) -> JSON:
    """Re-create each protected guest of ``from_site`` on ``to_site`` from its final
    replica (one of ``backups``), the map read backwards; return the report."""
    await check_sites(state, from_site, to_site)
    networks, ips = inverse(dr_map.networks, "networks"), inverse(dr_map.ips, "ips")
    for old, new in sorted(networks.items()):
        if await state.get_record(Kind.NETWORK, new) is None:
            raise _cluster.Conflict(
                f"DR map networks: {new!r} (where {old!r} returns to) does not exist: apply it"
            )
    finals: dict[str, JSON] = {}
    for backup_id in backups:
        record = await _backups.get_backup(state, backup_id)
        if record.get("target") != "replica":
            raise _cluster.Conflict(f"backup {backup_id} is not a replica: run the sync step")
        finals[str(record["uid"])] = record
    site = await read_site(state, from_site)
    at = state.now()
    move = Move("failback", from_site, to_site, at, networks, ips, False)
    await state.emit("Site", from_site, "DrFailback", f"failback {from_site} -> {to_site} started")
    out = report(
        "failback", from_site, to_site, at, await _recover_all(state, move, site.members, finals)
    )
    await state.emit("Site", from_site, "DrFailback", _summary(out))
    return out


async def check_sites(state: _cluster.ClusterState, from_site: str, to_site: str) -> None:
    """Two distinct site names, and a host labelled with ``to_site``. Raises ``Conflict``."""
    check_site(from_site, "from")
    check_site(to_site, "to")
    if from_site == to_site:
        raise _cluster.Conflict(f"from and to are both {from_site!r}: name two sites")
    hosts, _ = await state.list_records(Kind.HOST)
    if not any((h["spec"].get("labels") or {}).get("site") == to_site for h in hosts):
        raise _cluster.Conflict(
            f"no host has the label site={to_site}: join hosts there (podium agent --label "
            f"site={to_site}) before moving guests to it"
        )


def _summary(out: JSON) -> str:
    loss = out["max_loss_s"]
    worst = f", worst loss window {loss:.0f} s" if loss is not None else ""
    return (
        f"{out['operation']} {out['from']} -> {out['to']}: {out['recovered']} recovered, "
        f"{out['not_recovered']} not recovered, {out['already']} already{worst}"
    )
