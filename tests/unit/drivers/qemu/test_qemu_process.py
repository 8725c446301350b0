"""Processes by PID *and* -uuid: a reused PID or another guest's QEMU is never touched."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.drivers import GuestConfig
from podium.drivers.qemu import _process as proc
from podium.drivers.qemu._record import Record, load_record, save_record, tail

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def pids() -> Iterator[list[int]]:
    started: list[int] = []
    yield started
    for pid in started:
        proc.sigkill(pid, "u-1")
        proc.sigkill(pid, "u-2")


def gone(pid: int, uuid: str) -> bool:
    deadline = time.monotonic() + 5
    while proc.is_running(pid, uuid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not proc.is_running(pid, uuid)


def test_a_spawned_child_is_known_by_pid_and_uuid(tmp_path: Path, pids: list[int]) -> None:
    pid = proc.spawn([*SLEEPER, "-uuid", "u-1"], cwd=tmp_path, log=tmp_path / "log")
    pids.append(pid)
    assert proc.is_running(pid, "u-1")  # right after spawn (cmdline may still be empty)
    assert not proc.is_running(pid, "u-2")
    assert not proc.sigkill(pid, "u-2")  # not that guest's QEMU: left alone
    assert proc.is_running(pid, "u-1")
    assert proc.sigkill(pid, "u-1")
    assert gone(pid, "u-1")
    assert not proc.sigkill(pid, "u-1")  # idempotent


def test_a_process_of_another_parent_is_checked_through_proc(tmp_path: Path) -> None:
    other = subprocess.Popen([*SLEEPER, "-uuid", "u-2"])  # not in the spawn registry
    try:
        deadline = time.monotonic() + 5
        while not proc.is_running(other.pid, "u-2") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.is_running(other.pid, "u-2")
        assert not proc.is_running(other.pid, "u-1")
        assert proc.sigkill(other.pid, "u-2")
        other.wait(5)
        assert not proc.is_running(other.pid, "u-2")
    finally:
        other.kill()
        other.wait()


def test_nothing_runs_without_a_pid() -> None:
    assert not proc.is_running(None, "u-1")
    assert not proc.sigkill(None, "u-1")


def test_record_round_trips(tmp_path: Path) -> None:
    config = GuestConfig("web-1", "uid-1", 4, {"request": {"cpu": 1}, "nics": [{}]})
    record = Record(config, "uuid-1", tmp_path / "v.qcow2", 1234, True, ("pd1-0",), None)
    save_record(tmp_path / "web-1", record)
    assert load_record(tmp_path / "web-1") == record
    assert load_record(tmp_path / "missing") is None
    (tmp_path / "web-1" / "guest.json").write_text("{not json")
    assert load_record(tmp_path / "web-1") is None


def test_tail_drops_terminal_escapes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\nline two\n\nline three\n")
    assert tail(log, 2) == "line two / line three"
    assert tail(tmp_path / "none") == ""
