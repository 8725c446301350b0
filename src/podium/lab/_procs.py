"""Detached processes, known by PID and start time, stopped by PID: TERM, then KILL.

::

    spawn(argv, log) ──> posix_spawn, own session, stdin /dev/null, stdout+stderr -> log
        └─> Proc(pid, start)     start = /proc/PID/stat field 22 (clock ticks since boot),
                                 so a PID the kernel reused later is never mistaken for ours
    stop([Proc...]) ──TERM──> wait ≤ grace ──KILL──> wait ≤ KILL_WAIT ──> still alive: LabError

Zombies count as dead: after ``podium lab up`` returns, its children belong to
whoever reaps orphans here, which may be slow to do so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from podium.lab._errors import LabError

POLL = 0.05
KILL_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Proc:
    """A process this lab started (or found in its namespaces)."""

    pid: int
    start: int  # clock ticks after boot when it started; 0: unknown
    what: str = ""  # for messages: "server", "agent h1", "qemu (pdm-lab-h1)"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of ``pid``, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def identify(pid: int, what: str = "") -> Proc | None:
    """A :class:`Proc` for a live ``pid`` (None when it is gone)."""
    stat = _stat(pid)
    if stat is None or stat[0] in "ZX":
        return None
    return Proc(pid, stat[1], what)


def alive(proc: Proc) -> bool:
    """Whether ``proc`` still runs (not a zombie, not a newer process with its PID)."""
    _reap(proc.pid)
    stat = _stat(proc.pid)
    if stat is None or stat[0] in "ZX":
        return False
    return proc.start in (0, stat[1])


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # ours: collect it; not ours: ECHILD


def spawn(argv: Sequence[str], log: Path, what: str, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` detached (own session), output appended to ``log``. Raises LabError."""
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        pid = os.posix_spawnp(
            argv[0], list(argv), dict(env or os.environ), file_actions=actions, setsid=True
        )
    except OSError as err:
        raise LabError(f"cannot start {what} ({argv[0]}): {err.strerror or err}") from err
    proc = identify(pid, what)
    return proc or Proc(pid, 0, what)  # already gone: the caller's wait notices


def _signal(proc: Proc, sig: int) -> None:
    if alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def wait_gone(procs: Iterable[Proc], timeout: float) -> list[Proc]:
    """Poll until all are dead or ``timeout`` passes; return those still alive."""
    left = list(procs)
    deadline = time.monotonic() + timeout
    while left:
        left = [p for p in left if alive(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    return left


def stop(procs: Sequence[Proc], grace: float = 10.0) -> list[Proc]:
    """TERM every live one, KILL what is left after ``grace`` s; return those stopped.

    Raises :class:`LabError` if any survives SIGKILL for :data:`KILL_WAIT` s.
    """
    live = [p for p in procs if alive(p)]
    for proc in live:
        _signal(proc, signal.SIGTERM)
    left = wait_gone(live, grace)
    for proc in left:
        _signal(proc, signal.SIGKILL)
    stuck = wait_gone(left, KILL_WAIT)
    if stuck:
        names = ", ".join(f"{p.what or 'process'} (PID {p.pid})" for p in stuck)
        raise LabError(f"{names} survived SIGKILL for {KILL_WAIT:g} s; kill it by hand")
    return live


def exited(proc: Proc) -> bool:
    """Whether ``proc`` has ended (reaping it if it is our child)."""
    return not alive(proc)


def cmdline(pid: int) -> str:
    """The command line of ``pid`` (empty when gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()
