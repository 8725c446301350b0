"""Backup records and console capture in the state layer, over the memory and SQLite stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podium.model import GuestState, Kind, Manifest
from podium.state import (
    ClusterState,
    Conflict,
    NotFound,
    StaleEpoch,
    create_backup,
    get_backup,
    get_console,
    keys,
    list_backups,
    loads,
    put_console,
    report_backup,
    restore_backup,
)
from podium.store import Store, open_store
from podium.store.memory import MemoryStore

SPEC = {"image": "tiny", "request": {"cpu": 1.0}, "running": True, "nics": [{}]}


@pytest.fixture(params=["memory", "sqlite"])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClusterState]:
    store: Store = (
        MemoryStore()
        if request.param == "memory"
        else open_store(f"sqlite:///{tmp_path}/podium.db")
    )
    yield ClusterState(store, clock=lambda: 1_700_000_000.0)
    await store.close()


async def run(state: ClusterState, name: str, host: str = "h1") -> int:
    await state.apply([Manifest(Kind.GUEST, name, SPEC)])
    bound = await state.bind(name, host, expected_revision=0)
    assert bound is not None
    await state.report_guest_status(host, name, bound.epoch, GuestState.RUNNING)
    return bound.epoch


async def assigned(state: ClusterState, host: str, guest: str) -> dict[str, Any]:
    kv = await state.store.get(keys.assign_key(host, guest))
    assert kv is not None
    value: dict[str, Any] = loads(kv.value)
    return value


async def test_backup_chain_and_restore(state: ClusterState) -> None:
    await run(state, "a")
    full = await create_backup(state, "a")
    assert full["id"].startswith("a-20231114T221320Z-") and full["mode"] == "full"
    assert (await assigned(state, "h1", "a"))["backup"]["id"] == full["id"]
    [assignment], _ = await state.assignments("h1")
    assert assignment.to_dict()["backup"] == {
        "id": full["id"],
        "mode": "full",
        "target": "local",
        "parent_path": None,
        "parent_volumes": {},
    }
    with pytest.raises(Conflict, match="still pending"):
        await create_backup(state, "a")
    done = {"guest": "a", "id": full["id"], "state": "completed", "path": "/b/1.qcow2"}
    assert await report_backup(state, "h1", done) == (True, "")
    assert "backup" not in await assigned(state, "h1", "a")

    inc = await create_backup(state, "a", "incremental")
    assert (inc["mode"], inc["parent"], inc["parent_path"]) == (
        "incremental",
        full["id"],
        "/b/1.qcow2",
    )
    assert (await assigned(state, "h1", "a"))["backup"]["parent_path"] == "/b/1.qcow2"
    completed = {**done, "id": inc["id"], "path": "/b/2.qcow2", "mode": "full", "bytes": 7}
    assert await report_backup(state, "h1", completed) == (True, "")
    record = await get_backup(state, inc["id"])
    assert (record["mode"], record["bytes"]) == ("full", 7)  # what the host actually did
    items, _ = await list_backups(state)
    assert [b["id"] for b in items] == sorted([full["id"], inc["id"]])  # same clock: by id

    assert await restore_backup(state, inc["id"], "b") == "b"
    restored = await state.get_record(Kind.GUEST, "b")
    assert restored is not None
    assert restored["spec"]["restore_from"] == {
        "backup": inc["id"],
        "path": "/b/2.qcow2",
        "volumes": {},
    }
    assert (
        restored["nics"][0]["mac"]
        != (await state.get_record(Kind.GUEST, "a") or {})["nics"][0]["mac"]
    )
    with pytest.raises(Conflict, match="guest 'a' exists: delete it or restore --as NEW_NAME"):
        await restore_backup(state, inc["id"])
    with pytest.raises(NotFound):
        await get_backup(state, "zz-1-2")


async def test_a_recreated_guest_starts_a_new_chain(state: ClusterState) -> None:
    await run(state, "a")
    first = await create_backup(state, "a")
    report = {"guest": "a", "id": first["id"], "state": "completed", "path": "/b/1.qcow2"}
    await report_backup(state, "h1", report)
    await state.delete_object(Kind.GUEST, "a")
    await run(state, "a")  # same name, new uid
    again = await create_backup(state, "a")
    assert (again["mode"], again["parent"]) == ("full", None)


async def test_console_is_kept_per_guest_from_its_host_only(state: ClusterState) -> None:
    await run(state, "a")
    with pytest.raises(NotFound, match="no console captured for guest 'a' yet"):
        await get_console(state, "a")
    assert await put_console(state, "h1", "a", "hello") == 5
    assert await get_console(state, "a") == {
        "guest": "a",
        "host": "h1",
        "text": "hello",
        "updated": 1_700_000_000.0,
    }
    with pytest.raises(StaleEpoch, match="bound to h1, not h2"):
        await put_console(state, "h2", "a", "forged")
    with pytest.raises(NotFound, match="'zz' not found"):
        await put_console(state, "h1", "zz", "?")
    await state.delete_object(Kind.GUEST, "a")
    assert await state.store.get(keys.console_key("a")) is None
