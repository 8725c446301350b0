"""A host's second line of self-fencing: a small process outside the agent.

The agent's watchdog thread kills its guests before the host lease can expire, but a
thread dies or stops with its process: ``kill -9`` or ``SIGSTOP`` of the agent (or a
frozen machine slice) would leave the QEMUs running while the server, seeing the lease
expire, restarts their guests elsewhere. This keeper runs in its own session, reads
the fencing deadline the agent writes to a file on every renewal, and SIGKILLs every
QEMU whose working folder lies under the host's state folder once the deadline passes.

::

    agent: keepalive ok ──> fence.arm(t) ──> write {"deadline": t, "agent": pid} (atomic)
    keeper, every 50 ms:  monotonic() >= deadline ──> SIGKILL QEMUs under STATE_DIR
                          agent gone and nothing left to guard ──> exit

Deadlines are ``time.monotonic()`` readings: CLOCK_MONOTONIC is one clock for every
process of the machine. Run as ``python -m podium.drivers.qemu.fence_keeper FILE DIR``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("podium.drivers.qemu.fence")
TICK = 0.05


def write_deadline(path: Path, deadline: float | None, agent_pid: int | None = None) -> None:
    """Tell the keeper by when the guests must be dead (``None``: no lease held)."""
    body = json.dumps({"deadline": deadline, "agent": agent_pid or os.getpid()})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body)
    tmp.replace(path)  # atomic: the keeper never reads half a file


def read_deadline(path: Path) -> tuple[float | None, int | None]:
    """The deadline and agent PID in the file (``None, None`` if absent or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    deadline = data.get("deadline")
    agent = data.get("agent")
    return (float(deadline) if deadline is not None else None), (int(agent) if agent else None)


def qemus_under(state_dir: Path) -> list[int]:
    """PIDs of live QEMU processes whose working folder is inside ``state_dir``."""
    root = str(state_dir.resolve()) + os.sep
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            if b"qemu-system" not in argv0:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cwd = str((entry / "cwd").readlink())
        except OSError:
            continue
        if (cwd + os.sep).startswith(root):
            found.append(int(entry.name))
    return found


def kill_qemus(state_dir: Path) -> list[int]:
    """SIGKILL every QEMU under ``state_dir``; return the PIDs signalled."""
    killed = []
    for pid in qemus_under(state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def keep(path: Path, state_dir: Path, agent_pid: int, *, max_seconds: float | None = None) -> int:
    """Enforce the deadline in ``path`` until the agent is gone and nothing is left to guard.

    Returns how many QEMUs it killed. ``max_seconds`` bounds the loop (tests).
    """
    started = time.monotonic()
    killed = 0
    while max_seconds is None or time.monotonic() - started < max_seconds:
        deadline, writer = read_deadline(path)
        expired = deadline is not None and time.monotonic() >= deadline
        if expired:
            pids = kill_qemus(state_dir)
            if pids:
                killed += len(pids)
                log.warning("fence: deadline passed; killed QEMU(s) %s", pids)
        # Our agent is gone and a newer one owns the file, or its deadline passed (its
        # guests are dead): nothing is left for this keeper to guard.
        handed_over = writer is not None and writer != agent_pid
        if not _alive(agent_pid) and (handed_over or deadline is None or expired):
            return killed
        time.sleep(TICK)
    return killed


def spawn_keeper(path: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    """Start a keeper for this agent, in its own session (signals to the agent's group
    do not reach it), logging to ``<path>.log``."""
    log_file = path.with_name(path.name + ".log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "podium.drivers.qemu.fence_keeper",
             str(path), str(state_dir), str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True,
        )  # fmt: skip
    finally:
        log_file.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fence-keeper: %(message)s")
    path, state_dir, agent_pid = Path(argv[0]), Path(argv[1]), int(argv[2])
    keep(path, state_dir, agent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
