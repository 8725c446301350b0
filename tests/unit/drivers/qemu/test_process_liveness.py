"""Regression: a killed QEMU passed for running while another thread waited on it.

``Popen.poll()`` answers ``None`` whenever another thread holds the Popen's waitpid
lock (a thread blocked in ``wait()``), so the driver saw a dead guest as running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from podium.drivers.qemu import _process as proc

UUID = "0b9c3f7e-1111-4222-8333-944455556666"


def test_a_dead_child_is_not_running_while_another_thread_waits_on_it() -> None:
    argv = ["sleep", "30", "-uuid", UUID]  # what the driver recorded: the uuid marks it
    popen = subprocess.Popen(["sleep", "30"])
    with proc._children_lock:
        proc._children[popen.pid] = (popen, argv)
    try:
        assert proc.is_running(popen.pid, UUID)
        with popen._waitpid_lock:  # type: ignore[attr-defined]  # what wait() holds
            os.kill(popen.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not proc._exited(popen.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert popen.poll() is None  # the trap: poll() cannot tell
            assert not proc.is_running(popen.pid, UUID)
    finally:
        popen.kill()
        popen.wait()
        with proc._children_lock:
            proc._children.pop(popen.pid, None)
