"""The fence keeper: kills the host's QEMUs at the deadline, from outside the agent."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.drivers.qemu.fence_keeper import keep, qemus_under, read_deadline, write_deadline


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process whose argv[0] says qemu-system, running in a guest folder of a host."""
    binary = tmp_path / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir()
    binary.symlink_to("/bin/sleep")
    state = tmp_path / "host"
    (state / "g1").mkdir(parents=True)
    proc = subprocess.Popen([str(binary), "30"], cwd=state / "g1")
    try:
        # until the child has exec'd, /proc shows the forking Python's argv (busy hosts)
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 5
        while b"qemu-system" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        yield state, proc
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_the_deadline_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "fence.json"
    assert read_deadline(path) == (None, None)
    write_deadline(path, 12.5, 4242)
    assert read_deadline(path) == (12.5, 4242)
    write_deadline(path, None, 4242)
    assert read_deadline(path) == (None, 4242)


def test_before_the_deadline_nothing_is_killed(
    tmp_path: Path, fake_qemu: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    state, proc = fake_qemu
    assert qemus_under(state) == [proc.pid]
    path = tmp_path / "fence.json"
    write_deadline(path, time.monotonic() + 30)
    assert keep(path, state, os.getpid(), max_seconds=0.3) == 0
    assert proc.poll() is None


def test_past_the_deadline_the_qemus_under_the_host_die_and_no_others(
    tmp_path: Path, fake_qemu: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    state, proc = fake_qemu
    other = subprocess.Popen([str(tmp_path / "bin" / "qemu-system-x86_64"), "30"], cwd=tmp_path)
    try:
        path = tmp_path / "fence.json"
        write_deadline(path, time.monotonic() + 0.2)  # the agent stops renewing here
        started = time.monotonic()
        assert keep(path, state, os.getpid(), max_seconds=1.0) == 1
        assert proc.wait(timeout=5) == -9
        assert time.monotonic() - started >= 0.2
        assert other.poll() is None  # another host's QEMU (not under this state dir)
    finally:
        other.kill()
        other.wait(timeout=5)


def test_a_keeper_whose_agent_is_gone_hands_over_to_the_new_agent(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=5)
    path = tmp_path / "fence.json"
    write_deadline(path, time.monotonic() + 30, agent_pid=os.getpid())  # a newer agent
    started = time.monotonic()
    assert keep(path, tmp_path, gone.pid, max_seconds=5) == 0
    assert time.monotonic() - started < 1.0
