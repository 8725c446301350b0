"""The QMP side of live migration, against a scripted monitor: URIs, progress, the
pre-copy loop's ends (completed, failed, stalled, cancelled) and following a migration
already in flight. Real QEMU runs in tests/integration/qemu/test_qemu_migration.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from podium.drivers import MigrationError, MigrationProgress
from podium.drivers.qemu import _migration
from podium.drivers.qemu._migration import (
    incoming_uri,
    listen_uri,
    migrate,
    progress,
    result,
)

# query-migrate replies as QEMU 7.2 sent them (a 128 MiB guest over loopback).
ACTIVE = {
    "status": "active",
    "total-time": 243,
    "expected-downtime": 300,
    "ram": {"transferred": 40272988, "remaining": 90000000, "total": 134750208,
            "dirty-pages-rate": 25, "page-size": 4096},
}  # fmt: skip
COMPLETED = {
    "status": "completed",
    "total-time": 550,
    "downtime": 50,
    "ram": {"transferred": 93883559, "remaining": 0, "total": 134750208,
            "dirty-pages-rate": 0, "page-size": 4096},
}  # fmt: skip
REFUSED = {
    "status": "failed",
    "error-desc": "Failed to connect to '127.0.0.1:1': Connection refused",
}


class ScriptedQmp:
    """Answers ``query-migrate`` from a script (the last answer repeats); records commands."""

    name = "vm"

    def __init__(self, *replies: Mapping[str, Any], status: str = "running") -> None:
        self.replies = list(replies)
        self.status = status
        self.commands: list[str] = []

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        self.commands.append(command)
        if command == "query-migrate":
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if command == "migrate_cancel":
            self.replies = [{"status": "cancelled"}]
        if command == "cont":
            self.status = "running"
        return {}

    async def query_status(self) -> str:
        return self.status


def test_listen_and_incoming_uris() -> None:
    assert listen_uri("10.0.0.2") == "tcp:10.0.0.2:0"
    assert listen_uri("fd00::2") == "tcp:[fd00::2]:0"
    with pytest.raises(MigrationError, match="not an IP address"):
        listen_uri("host-b")
    sock = {"port": "46383", "ipv4": True, "host": "10.0.0.2", "type": "inet"}
    reply = {"socket-address": [sock]}
    assert incoming_uri("10.0.0.2", reply) == "tcp:10.0.0.2:46383"
    assert incoming_uri("fd00::2", reply) == "tcp:[fd00::2]:46383"
    with pytest.raises(MigrationError, match="no port"):
        incoming_uri("10.0.0.2", {})


def test_progress_and_result_read_qemus_figures() -> None:
    assert progress(ACTIVE) == MigrationProgress(
        status="active",
        transferred=40272988,
        remaining=90000000,
        total=134750208,
        dirty_rate=25 * 4096,
        expected_downtime_ms=300,
        elapsed_ms=243,
    )
    done = result("tcp:10.0.0.2:1", COMPLETED)
    assert (done.total_ms, done.downtime_ms, done.transferred) == (550, 50, 93883559)
    assert progress({}).status == "none"


async def test_a_migration_runs_to_completion_reporting_progress() -> None:
    qmp = ScriptedQmp({}, ACTIVE, COMPLETED)
    seen: list[MigrationProgress] = []
    done = await migrate(qmp, "tcp:10.0.0.2:1", on_progress=seen.append, stall_timeout=5, poll=0)
    assert done.uri == "tcp:10.0.0.2:1" and done.downtime_ms == 50
    assert [s.status for s in seen] == ["active", "completed"]
    assert qmp.commands[:3] == ["query-migrate", "migrate-set-capabilities", "migrate"]


async def test_a_failed_migration_raises_qemus_reason_and_the_source_runs() -> None:
    qmp = ScriptedQmp({}, {"status": "setup"}, REFUSED)
    with pytest.raises(MigrationError, match="Connection refused"):
        await migrate(qmp, "tcp:127.0.0.1:1", on_progress=None, stall_timeout=5, poll=0)
    assert "migrate_cancel" not in qmp.commands and "cont" not in qmp.commands


async def test_a_source_left_paused_by_a_failed_migration_is_resumed() -> None:
    qmp = ScriptedQmp({}, REFUSED)

    async def paused_after_migrate(
        command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        if command == "migrate":
            qmp.status = "paused"
        return await ScriptedQmp.execute(qmp, command, arguments, timeout=timeout)

    qmp.execute = paused_after_migrate  # type: ignore[method-assign]
    with pytest.raises(MigrationError):
        await migrate(qmp, "tcp:127.0.0.1:1", on_progress=None, stall_timeout=5, poll=0)
    assert qmp.commands[-1] == "cont" and qmp.status == "running"


async def test_a_stalled_migration_is_cancelled() -> None:
    qmp = ScriptedQmp({}, {"status": "setup"})
    with pytest.raises(MigrationError, match=r"moved no bytes for 0\.05 s \(setup\): cancelled"):
        await migrate(qmp, "tcp:10.9.9.9:1", on_progress=None, stall_timeout=0.05, poll=0.01)
    assert "migrate_cancel" in qmp.commands


async def test_a_migration_that_completes_as_it_is_cancelled_counts_as_completed() -> None:
    qmp = ScriptedQmp({}, {"status": "setup"})

    async def completes_on_cancel(
        command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        qmp.commands.append(command)
        if command == "migrate_cancel":
            qmp.replies, qmp.status = [COMPLETED], "postmigrate"
            return {}
        if command == "query-migrate":
            return qmp.replies.pop(0) if len(qmp.replies) > 1 else qmp.replies[0]
        return {}

    qmp.execute = completes_on_cancel  # type: ignore[method-assign]
    done = await migrate(qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=0.05, poll=0.01)
    assert done.transferred == 93883559
    assert "cont" not in qmp.commands  # never resume a source whose guest moved


async def test_a_migration_in_flight_is_followed_not_restarted() -> None:
    qmp = ScriptedQmp(ACTIVE, ACTIVE | {"ram": {"transferred": 50_000_000}}, COMPLETED)
    done = await migrate(
        qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=5, poll=0, resume=True
    )
    assert done.total_ms == 550
    assert "migrate" not in qmp.commands
    qmp = ScriptedQmp(COMPLETED, status="postmigrate")
    again = await migrate(qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=5, resume=True)
    assert again.total_ms == 550
    assert qmp.commands == ["query-migrate"]


async def test_a_guest_that_arrived_by_migration_migrates_again() -> None:
    """Regression: a QEMU started with -incoming reports its *incoming* migration as
    completed; taking that for this outgoing one quit the only running copy."""
    qmp = ScriptedQmp(COMPLETED, ACTIVE, COMPLETED, status="running")
    await migrate(qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=5, poll=0)
    assert "migrate" in qmp.commands


async def test_cancelling_the_caller_cancels_the_migration() -> None:
    qmp = ScriptedQmp({}, ACTIVE)
    task = asyncio.create_task(
        migrate(qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=60, poll=0.01)
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "migrate_cancel" in qmp.commands


async def test_incoming_done_needs_qemu_to_say_completed() -> None:
    waiting = ScriptedQmp({"status": "active"}, status="inmigrate")
    assert await _migration.incoming_done(waiting) == (
        False,
        "QEMU is inmigrate, migration active",
    )
    arrived = ScriptedQmp({"status": "completed"}, status="paused")
    assert (await _migration.incoming_done(arrived))[0]


async def test_a_cancel_that_lands_after_completion_returns_the_result() -> None:
    qmp = ScriptedQmp({}, ACTIVE)

    async def completes_on_cancel(
        command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float = 10.0
    ) -> Any:
        qmp.commands.append(command)
        if command == "migrate_cancel":  # too late: QEMU had finished
            qmp.replies, qmp.status = [COMPLETED], "postmigrate"
        elif command == "query-migrate":
            return qmp.replies.pop(0) if len(qmp.replies) > 1 else qmp.replies[0]
        return {}

    qmp.execute = completes_on_cancel  # type: ignore[method-assign]
    task = asyncio.create_task(
        migrate(qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=60, poll=0.01)
    )
    await asyncio.sleep(0.05)
    task.cancel()
    done = await task  # the destination holds the guest: a "cancelled" would lose it
    assert done.total_ms == 550 and not task.cancelled()
    assert "cont" not in qmp.commands


async def test_a_completed_reply_without_figures_is_asked_again() -> None:
    """QEMU says "completed" a moment before it fills in total-time and downtime."""
    qmp = ScriptedQmp(ACTIVE, {"status": "completed"}, COMPLETED)
    done = await migrate(qmp, "tcp:10.0.0.2:1", on_progress=None, stall_timeout=5, poll=0)
    assert done.total_ms == 550
