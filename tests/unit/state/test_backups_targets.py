"""Backup targets (local, replica) and volumes in the state layer: one chain per uid and
target, every LUN volume in the record and the request, the site that took it, and the
restore_from a completed backup gives (what site DR builds on)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podium.model import GuestState, HostName, HostSpec, Kind, Manifest, Resources
from podium.state import (
    ClusterState,
    Conflict,
    create_backup,
    dumps,
    get_backup,
    keys,
    list_backups,
    loads,
    newest_replica,
    report_backup,
    restore_backup,
    restore_spec,
)
from podium.store import Store, open_store
from podium.store.memory import MemoryStore

SPEC = {"image": "tiny", "request": {"cpu": 1.0}, "running": True, "nics": [{}]}
HBAS = [
    {
        "wwpn": "50:01:43:80:00:00:00:00",
        "wwnn": "50:01:43:80:00:00:00:01",
        "luns": [
            {"lun": 0, "volume": "db/data", "wwn": "50:01:43:80:00:00:00:02"},
            {"lun": 1, "volume": "db/logs", "wwn": "50:01:43:80:00:00:00:03"},
        ],
    }
]


@pytest.fixture(params=["memory", "sqlite"])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClusterState]:
    store: Store = (
        MemoryStore()
        if request.param == "memory"
        else open_store(f"sqlite:///{tmp_path}/podium.db")
    )
    ticks = itertools.count(1_700_000_000)  # each reading later: "newest" is well defined
    yield ClusterState(store, clock=lambda: float(next(ticks)))
    await store.close()


async def run_with_luns(state: ClusterState, name: str, host: str = "h1") -> None:
    """A running guest on ``host`` (site ``a``) whose assignment carries two LUNs, as a
    guest that wears a profile gets them."""
    lease = await state.store.grant(60)
    spec = HostSpec(Resources(8, 4096, 1000, 1000), {"site": "a"})
    await state.register_host(HostName(host), spec, lease=lease.id, driver="sim", agent_version="0")
    await state.apply([Manifest(Kind.GUEST, name, SPEC)])
    bound = await state.bind(name, host, expected_revision=0)
    assert bound is not None
    key = keys.assign_key(host, name)
    kv = await state.store.get(key)
    assert kv is not None
    assignment = loads(kv.value)
    assignment["spec"] = {**assignment["spec"], "hbas": HBAS}
    await state.store.put(key, dumps(assignment))
    await state.report_guest_status(host, name, bound.epoch, GuestState.RUNNING)


async def asked(state: ClusterState, host: str, guest: str) -> dict[str, Any]:
    kv = await state.store.get(keys.assign_key(host, guest))
    assert kv is not None
    request: dict[str, Any] = loads(kv.value)["backup"]
    return request


async def complete(state: ClusterState, record: dict[str, Any], base: str) -> None:
    """The host's report of ``record`` done, its files under ``base``."""
    bid = record["id"]
    report = {
        "guest": record["guest"],
        "id": bid,
        "state": "completed",
        "path": f"{base}/root/{bid}.qcow2",
        "volumes": {v: f"{base}/{v.replace('/', '+')}/{bid}.qcow2" for v in ("db/data", "db/logs")},
        "mode": record["mode"],
    }
    assert await report_backup(state, record["host"], report) == (True, "")


async def test_each_target_has_its_own_chain_over_every_volume(state: ClusterState) -> None:
    await run_with_luns(state, "db")
    r1 = await create_backup(state, "db", target="replica")
    assert (r1["target"], r1["mode"], r1["site"], r1["parent"]) == ("replica", "full", "a", None)
    assert (r1["volumes"], r1["parent_volumes"]) == ({}, {})
    assert await asked(state, "h1", "db") == {
        "id": r1["id"],
        "mode": "full",
        "target": "replica",
        "parent_path": None,
        "parent_volumes": {},
    }
    await complete(state, r1, "/r/db")
    done = await get_backup(state, r1["id"])
    assert done["volumes"] == {"db/data": "/r/db/db+data/" + r1["id"] + ".qcow2",
                               "db/logs": "/r/db/db+logs/" + r1["id"] + ".qcow2"}  # fmt: skip

    # a local backup does not build on the replica chain, nor the reverse
    with pytest.raises(Conflict, match=r"no completed backup \(target local\)"):
        await create_backup(state, "db", "incremental")
    l1 = await create_backup(state, "db")
    assert (l1["target"], l1["mode"], l1["parent"]) == ("local", "full", None)
    await complete(state, l1, "/b/db")

    r2 = await create_backup(state, "db", target="replica")
    assert (r2["mode"], r2["parent"], r2["parent_path"]) == (
        "incremental",
        r1["id"],
        done["path"],
    )
    assert r2["parent_volumes"] == done["volumes"]
    request = await asked(state, "h1", "db")
    assert (request["target"], request["parent_volumes"]) == ("replica", done["volumes"])
    await complete(state, r2, "/r/db")
    l2 = await create_backup(state, "db", "incremental")
    assert (l2["parent"], l2["parent_path"]) == (l1["id"], f"/b/db/root/{l1['id']}.qcow2")

    record = await state.get_record(Kind.GUEST, "db")
    assert record is not None
    newest = await newest_replica(state, record["uid"])
    assert newest is not None and newest["id"] == r2["id"]
    assert (await newest_replica(state, record["uid"], guest="db") or {}).get("id") == r2["id"]
    assert await newest_replica(state, "someone-else") is None
    with pytest.raises(ValueError, match="unknown backup target 'tape'"):
        await create_backup(state, "db", target="tape")


async def test_the_restore_spec_names_every_volume_and_restore_uses_it(
    state: ClusterState,
) -> None:
    await run_with_luns(state, "db")
    r1 = await create_backup(state, "db", target="replica")
    with pytest.raises(Conflict, match="is pending: only a completed backup"):
        restore_spec(r1)
    await complete(state, r1, "/r/db")
    backup = await get_backup(state, r1["id"])
    spec = restore_spec(backup)
    assert spec == {
        "backup": r1["id"],
        "path": f"/r/db/root/{r1['id']}.qcow2",
        "volumes": {
            "db/data": f"/r/db/db+data/{r1['id']}.qcow2",
            "db/logs": f"/r/db/db+logs/{r1['id']}.qcow2",
        },
    }
    assert await restore_backup(state, r1["id"], "db-copy") == "db-copy"
    copy = await state.get_record(Kind.GUEST, "db-copy")
    assert copy is not None and copy["spec"]["restore_from"] == spec


async def test_records_written_before_targets_read_as_local(state: ClusterState) -> None:
    await run_with_luns(state, "db")
    b1 = await create_backup(state, "db")
    await complete(state, b1, "/b/db")
    key = keys.backup_key("db", b1["id"])
    kv = await state.store.get(key)
    assert kv is not None
    old = {
        k: v
        for k, v in loads(kv.value).items()
        if k not in ("target", "site", "volumes", "parent_volumes")
    }
    await state.store.put(key, dumps(old))
    [listed], _ = await list_backups(state, "db")
    assert (listed["target"], listed["volumes"], listed["parent_volumes"]) == ("local", {}, {})
    assert (await get_backup(state, b1["id"]))["target"] == "local"
    b2 = await create_backup(state, "db")  # the old record still heads the local chain
    assert (b2["mode"], b2["parent"], b2["parent_volumes"]) == ("incremental", b1["id"], {})
    assert restore_spec(listed) == {"backup": b1["id"], "path": old["path"], "volumes": {}}
    record = await state.get_record(Kind.GUEST, "db")
    assert record is not None and await newest_replica(state, record["uid"]) is None
