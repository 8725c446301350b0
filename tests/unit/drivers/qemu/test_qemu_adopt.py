"""Re-adoption of migration ends by a fresh driver (an agent restart), with stand-in
processes that carry a guest's ``-uuid``: a destination is adopted as incoming, a source
whose migration completed is never adopted as running."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.drivers import DriverGuestState, GuestConfig, MigrationResult
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._guest import adopt
from podium.drivers.qemu._record import Record, load_record, save_record

S = DriverGuestState
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
RESULT = MigrationResult("tcp:10.0.0.2:4444", 620.0, 4.0, 94_000_000)


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[dict[str, int]]:
    """``start(uuid)``: a process that passes for that guest's QEMU; killed at the end."""
    started: dict[str, int] = {}
    yield started
    for uuid, pid in started.items():
        proc.sigkill(pid, uuid)


def stand_in(tmp_path: Path, uuid: str, sleepers: dict[str, int]) -> int:
    pid = proc.spawn([*SLEEPER, "-uuid", uuid], cwd=tmp_path, log=tmp_path / f"{uuid}.log")
    sleepers[uuid] = pid
    return pid


def record(
    state_dir: Path,
    name: str,
    pid: int | None,
    *,
    incoming: str | None = None,
    migrated: MigrationResult | None = None,
) -> Record:
    config = GuestConfig(name, f"u-{name}", 2, {"request": {"memory_mib": 128}})
    volume = state_dir / f"{name}.qcow2"
    rec = Record(config, f"uuid-{name}", volume, pid, True, incoming=incoming, migrated=migrated)
    save_record(state_dir / name, rec)
    return rec


def test_records_keep_the_incoming_uri_and_the_migration_result(tmp_path: Path) -> None:
    for incoming, migrated in (("", None), ("tcp:10.0.0.2:4444", None), (None, RESULT)):
        rec = record(tmp_path, "vm", 42, incoming=incoming, migrated=migrated)
        assert load_record(tmp_path / "vm") == rec


def test_a_waiting_destination_is_adopted_as_incoming(
    tmp_path: Path, sleepers: dict[str, int]
) -> None:
    pid = stand_in(tmp_path, "uuid-dst", sleepers)
    record(tmp_path, "dst", pid, incoming="tcp:10.0.0.2:4444")
    guest = adopt(tmp_path, time.time)["dst"]
    assert (guest.state, guest.incoming) == (S.INCOMING, "tcp:10.0.0.2:4444")
    assert guest.state.active  # holds capacity, can be stopped or killed


def test_a_source_left_after_its_migration_completed_is_killed_not_adopted(
    tmp_path: Path, sleepers: dict[str, int]
) -> None:
    pid = stand_in(tmp_path, "uuid-src", sleepers)
    record(tmp_path, "src", pid, migrated=RESULT)
    record(tmp_path, "gone", None, migrated=RESULT)
    guests = adopt(tmp_path, time.time)
    for name in ("src", "gone"):
        g = guests[name]
        assert (g.state, g.message, g.migrated) == (S.STOPPED, f"migrated to {RESULT.uri}", RESULT)
    deadline = time.monotonic() + 5
    while proc.is_running(pid, "uuid-src") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not proc.is_running(pid, "uuid-src")  # a `cont` on it would run the guest twice
