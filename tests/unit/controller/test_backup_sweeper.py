"""The backup sweeper fails in-flight backups whose guest moved or was deleted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from podium.controller import BackupSweeper, ControllerManager
from podium.model import GuestState, Kind, Manifest
from podium.scheduler import default_scheduler
from podium.state import (
    ClusterState,
    create_backup,
    get_backup,
    keys,
    loads,
    report_backup,
    stale_reason,
)
from tests.support.tasks import running
from tests.unit.controller.ctrl_support import FakeClock, eventually, join, lead_by_fiat

SPEC = {"image": "tiny", "request": {"cpu": 1, "memory_mib": 128}, "running": True}


@contextlib.asynccontextmanager
async def sweeping(state: ClusterState, clock: FakeClock) -> AsyncIterator[None]:
    manager = ControllerManager(
        state, default_scheduler(), clock=clock, controllers=(BackupSweeper,)
    )
    async with running(manager.run(await lead_by_fiat(state))):
        yield


async def running_guest(state: ClusterState, name: str, host: str) -> None:
    await state.apply([Manifest(Kind.GUEST, name, SPEC)])
    bound = await state.bind(name, host, expected_revision=0)
    assert bound is not None
    await state.report_guest_status(host, name, bound.epoch, GuestState.RUNNING)


async def state_of(state: ClusterState, backup_id: str) -> str:
    return str((await get_backup(state, backup_id))["state"])


def test_stale_reason_is_pure_and_says_why() -> None:
    backup = {"guest": "a", "uid": "u1", "host": "h1", "epoch": 3, "state": "running"}
    guest = {"uid": "u1"}
    assert stale_reason(backup, guest, {"host": "h1", "epoch": 3}) is None
    assert stale_reason({**backup, "state": "completed"}, None, None) is None
    assert stale_reason(backup, None, None) == "guest a was deleted during the backup"
    assert stale_reason(backup, {"uid": "u2"}, {"host": "h1", "epoch": 1}) is not None
    assert stale_reason(backup, guest, {"host": "h2", "epoch": 4}) == (
        "guest a moved from h1 (epoch 3) to h2 (epoch 4) during the backup"
    )
    assert "to no host (epoch 4)" in str(stale_reason(backup, guest, {"host": None, "epoch": 4}))


async def test_backups_of_moved_or_deleted_guests_fail(
    state: ClusterState, clock: FakeClock
) -> None:
    for host in ("h1", "h2"):
        await join(state, host)
    await running_guest(state, "a", "h1")
    await running_guest(state, "b", "h1")
    await running_guest(state, "c", "h1")
    moved = await create_backup(state, "a")
    deleted = await create_backup(state, "b")
    healthy = await create_backup(state, "c")
    running = {"guest": "a", "id": moved["id"], "state": "running"}
    assert await report_backup(state, "h1", running) == (True, "")
    async with sweeping(state, clock):
        _, rev = await state.get_binding("a")
        await state.bind("a", "h2", expected_revision=rev)
        await state.delete_object(Kind.GUEST, "b")

        async def swept() -> bool:
            return (await state_of(state, moved["id"]), await state_of(state, deleted["id"])) == (
                "failed",
                "failed",
            )

        await eventually(swept)
        await asyncio.sleep(0.1)
        assert await state_of(state, healthy["id"]) == "pending"
    record = await get_backup(state, moved["id"])
    assert record["message"] == "guest a moved from h1 (epoch 1) to h2 (epoch 2) during the backup"
    assert record["finished"] >= clock.now
    assert (await get_backup(state, deleted["id"]))["message"].endswith("deleted during the backup")
    kv = await state.store.get(keys.assign_key("h1", "c"))
    assert kv is not None and loads(kv.value)["backup"]["id"] == healthy["id"]
    events, _ = await state.list_events()
    assert sorted(e["name"] for e in events if e["reason"] == "BackupFailed") == ["a", "b"]


async def test_the_sweeper_finds_stale_backups_left_before_it_started(
    state: ClusterState, clock: FakeClock
) -> None:
    await join(state, "h1")
    await running_guest(state, "a", "h1")
    backup = await create_backup(state, "a")
    _, rev = await state.get_binding("a")
    await state.bind("a", None, expected_revision=rev)  # unbound while no leader ran
    async with sweeping(state, clock):
        await eventually(lambda: _is(state, backup["id"], "failed"))


async def _is(state: ClusterState, backup_id: str, wanted: str) -> bool:
    return await state_of(state, backup_id) == wanted
