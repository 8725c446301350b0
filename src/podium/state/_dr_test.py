"""DR drills: a site's protected guests brought up on the other site as copies, on
isolated networks, without writing one production key.

::

    test(A -> B, map)   per protected profile P worn by guest G of site A (A may be up):
                          Profile P-drtest  clone of P's spec (fresh MACs/WWNs from the same
                                            pools), NICs on map.test_networks, no protection
                          Guest   G-drtest  G's spec, profile P-drtest, site B,
                                            restore_from = G's newest completed replica
                                            (its LUN volumes renamed to P-drtest's)
                          /podium/dr/tests/A/B  += {name, uid} of each (same transaction)
    test_cleanup(A, B)  deletes exactly what that record names (by uid), then the record

Production keys are only read (each read a compare), so their mod revisions never move.
"""

from __future__ import annotations

from typing import Any

from podium.model import Kind, ManifestError, validate_document
from podium.state import _backups, _clone, _cluster, _profiles, keys
from podium.state._dr import Member, check_sites, entry, read_site, report
from podium.state._dr_map import DrMapModel, check_map
from podium.store import Compare, Delete, Op, Put

JSON = dict[str, Any]
SUFFIX = "-drtest"
RETRIES = 10


async def _drill(state: _cluster.ClusterState, key: str) -> tuple[JSON, int]:
    record, kv = await state._get_json(key)
    return (record or {"profiles": [], "guests": []}), (kv.mod_revision if kv else 0)


def _copy_spec(profile: JSON, test_networks: dict[str, str]) -> JSON:
    """The drill copy's profile spec: pooled addresses only, NICs on the test networks."""
    spec = _clone.clone_spec(profile["name"], profile["spec"])
    spec.pop("protection", None)  # a drill copy is not replicated
    nics = []
    for i, nic in enumerate(spec.get("nics", [])):
        net = nic["network"]
        if net not in test_networks:
            raise _cluster.Conflict(
                f"Profile {profile['name']!r} nics[{i}] is on Network {net!r}, which the map's "
                f"test_networks does not map: add {net}: <an isolated network>, or the drill "
                "copy would meet production"
            )
        nics.append({**nic, "network": test_networks[net]})
    if "nics" in spec:
        spec["nics"] = nics
    return spec


def _restore_from(backup: JSON, source: str, copy: str) -> JSON:
    spec = _backups.restore_spec(backup)
    spec["volumes"] = {
        f"{copy}/{volume.partition('/')[2]}" if volume.startswith(source + "/") else volume: path
        for volume, path in spec["volumes"].items()
    }
    return spec


async def _copy(
    state: _cluster.ClusterState, member: Member, backup: JSON, dr_map: DrMapModel, to_site: str
) -> None:
    """Create the drill copy of ``member`` (profile and guest) in one transaction."""
    guest, profile = member.guest, member.profile
    assert profile is not None
    pname, gname = profile["name"] + SUFFIX, guest["name"] + SUFFIX
    spec = _copy_spec(profile, dr_map.test_networks)
    try:
        manifest = validate_document({"kind": "Profile", "name": pname, "spec": spec})
    except ManifestError as err:
        raise _cluster.Conflict(f"cannot copy Profile {profile['name']!r}: {err}") from err
    gspec = {k: v for k, v in guest["spec"].items() if k not in ("restore_from", "app", "spread")}
    gspec.update(profile=pname, site=to_site)
    gspec["restore_from"] = _restore_from(backup, profile["name"], pname)
    key = keys.dr_test_key(member.site, to_site)
    for attempt in range(RETRIES):
        drill, drev = await _drill(state, key)
        pkey, gkey = keys.object_key(Kind.PROFILE, pname), keys.object_key(Kind.GUEST, gname)
        compares = [
            Compare(pkey, "version", "=", 0),
            Compare(gkey, "version", "=", 0),
            Compare(key, "mod", "=", drev),
        ]
        ops: list[Op] = []
        realiser = _profiles.Realiser(state, [manifest], attempt=attempt)
        record = state._new_record(Kind.PROFILE, pname, manifest.spec)
        await realiser.realise(record, compares, ops)
        realiser.note(record)
        grecord = state._new_record(Kind.GUEST, gname, gspec)
        await realiser.wear(grecord, compares, ops)
        drill = {
            **drill,
            "profiles": [*drill["profiles"], {"name": pname, "uid": record["uid"]}],
            "guests": [*drill["guests"], {"name": gname, "uid": grecord["uid"]}],
        }
        ops += [
            Put(pkey, _cluster.dumps(record)),
            Put(gkey, _cluster.dumps(grecord)),
            Put(key, _cluster.dumps(drill)),
        ]
        result = await state.store.txn(compares, ops)
        if result.succeeded:
            return
        for kind, name in ((Kind.PROFILE, pname), (Kind.GUEST, gname)):
            if await state.get_record(kind, name) is not None:
                raise _cluster.Conflict(
                    f"{kind.value} {name!r} exists and is not this drill's: delete or rename it"
                )
    raise _cluster.Conflict(f"drill copy of {guest['name']!r}: kept racing; try again")


async def drill(
    state: _cluster.ClusterState, from_site: str, to_site: str, dr_map: DrMapModel
) -> JSON:
    """Bring copies of ``from_site``'s protected guests up on ``to_site``, isolated; the
    report (each line's ``copy`` names the drill guest). Production is only read."""
    await check_sites(state, from_site, to_site)
    await check_map(state, dr_map, test=True)
    await _check_isolated(state, dr_map)
    key = keys.dr_test_key(from_site, to_site)
    at = state.now()
    site = await read_site(state, from_site)
    drill, _ = await _drill(state, key)
    made = {g["name"] for g in drill["guests"]}
    await state.emit("Site", from_site, "DrTest", f"drill {from_site} -> {to_site} started")
    lines: list[JSON] = []
    for member in site.members:
        guest, profile = member.guest, member.profile
        if guest["name"].endswith(SUFFIX) or guest["name"] in made:
            continue  # a copy of an earlier drill on a shared site: not production
        copy = guest["name"] + SUFFIX
        if profile is None:
            continue  # only protected guests are drilled
        rpo = int(profile["spec"]["protection"]["rpo_s"])
        base = {"guest": guest["name"], "profile": profile["name"], "at": at, "rpo_s": rpo}
        if copy in made:
            line = entry(**base, recovered=True, reason="already in this drill")
            lines.append({**line, "copy": copy, "already": True})
            continue
        backup = await _backups.newest_replica(state, guest["uid"], guest=guest["name"])
        if backup is None:
            why = f"no completed replica of Guest {guest['name']!r} to test from"
            lines.append({**entry(**base, reason=why), "copy": None})
            continue
        try:
            await _copy(state, member, backup, dr_map, to_site)
        except _cluster.Conflict as err:
            lines.append({**entry(**base, backup=backup, reason=str(err)), "copy": None})
            continue
        networks = {
            n["network"]: dr_map.test_networks[n["network"]]
            for n in profile["spec"].get("nics", [])
        }
        line = entry(**base, backup=backup, recovered=True)
        lines.append({**line, "copy": copy, "networks": networks})
    out = report("test", from_site, to_site, at, lines)
    await state.emit(
        "Site",
        from_site,
        "DrTest",
        f"drill {from_site} -> {to_site}: {out['recovered']} copies up, {out['not_recovered']} not",
    )
    return out


async def _check_isolated(state: _cluster.ClusterState, dr_map: DrMapModel) -> None:
    """A test network no production profile uses (else the drill meets production)."""
    tests = set(dr_map.test_networks.values())
    for profile in (await state.list_records(Kind.PROFILE))[0]:
        if profile["name"].endswith(SUFFIX):
            continue
        for nic in profile["spec"].get("nics", []):
            if nic.get("network") in tests:
                raise _cluster.Conflict(
                    f"test_networks names Network {nic['network']!r}, which production Profile "
                    f"{profile['name']!r} uses: a drill there is not isolated; give drills "
                    "their own networks"
                )


async def drill_cleanup(state: _cluster.ClusterState, from_site: str, to_site: str) -> JSON:
    """Delete what the drill ``from_site`` -> ``to_site`` made (and only that):
    ``{"operation": "test-cleanup", "from", "to", "at", "deleted": [...], "kept": [...]}``."""
    key = keys.dr_test_key(from_site, to_site)
    drill, rev = await _drill(state, key)
    if rev == 0:
        raise _cluster.NotFound(f"no drill {from_site} -> {to_site} to clean up")
    deleted: list[str] = []
    kept: list[JSON] = []
    for kind, items in ((Kind.GUEST, drill["guests"]), (Kind.PROFILE, drill["profiles"])):
        for item in items:
            current = await state.get_record(kind, item["name"])
            label = f"{kind.value}/{item['name']}"
            if current is None:
                continue
            if current["uid"] != item["uid"]:
                kept.append({"name": label, "reason": "re-created since the drill: not its own"})
                continue
            try:
                await state.delete_object(kind, item["name"])
            except _cluster.StateError as err:
                kept.append({"name": label, "reason": str(err)})
                continue
            deleted.append(label)
    if not kept:
        await state.store.txn([Compare(key, "mod", "=", rev)], [Delete(key)])
    await state.emit(
        "Site",
        from_site,
        "DrTestCleanup",
        f"drill {from_site} -> {to_site}: deleted {len(deleted)}",
    )
    return {"operation": "test-cleanup", "from": from_site, "to": to_site, "at": state.now(),
            "deleted": deleted, "kept": kept}  # fmt: skip
