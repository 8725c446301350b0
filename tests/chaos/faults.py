"""Fault injectors against a running ``podium lab``: each bounded in time, each healed.

::

    LabHandle(lab dir) ──load_state──> agents {host: Proc}, server Proc, namespaces
      kill_agent(h)           kill -9 the agent, restart it from /proc/PID/cmdline+environ
                              (inside pdm-<lab>-h, via podium.lab's spawn), lab.json updated
      pause_agent(h, s)       SIGSTOP, sleep s, SIGCONT (SIGCONT always, even on error)
      partition(h, s)         ip link set up0 down inside the host's namespace, s, then up
      kill_server()           kill -9 the server, restart it on the same loopback port
      kill_qemu(uuid)         kill -9 one QEMU of a guest (the agent must notice)

Every injector returns a :class:`Fault` record (what, where, when, how long); none runs
anything outside the lab's namespaces except signals to the lab's own processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from podium.lab import LabState, load_state
from podium.lab._procs import Proc, alive, spawn
from tests.support.qemu_procs import qemu_processes

READY = "podium server listening on "
RESTART_TIMEOUT = 30.0
IP_TIMEOUT = 10.0


class FaultError(Exception):
    """An injector could not do or undo its fault (the lab is not as it should be)."""


@dataclass
class Fault:
    """One injected fault, for the run's log and summary."""

    kind: str  # kill_agent | pause_short | pause_long | partition_short | partition_long | ...
    target: str  # host name, "server" or guest name
    started: float  # time.time() when injected
    healed: float = 0.0  # time.time() when undone (0: nothing to undo)
    detail: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        took = f" healed after {self.healed - self.started:.1f} s" if self.healed else ""
        extra = " ".join(f"{k}={v}" for k, v in self.detail.items())
        at = time.strftime("%H:%M:%S", time.gmtime(self.started))
        return f"{self.kind} {self.target} at {at}Z{took} {extra}".rstrip()


def _argv_env(pid: int) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a live process (read before it is killed)."""
    try:
        raw_argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        raw_env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError as err:
        raise FaultError(f"cannot read /proc/{pid}: {err}") from err
    argv = [a.decode() for a in raw_argv.split(b"\0") if a]
    env: dict[str, str] = {}
    for item in raw_env.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[key] = value
    if not argv:
        raise FaultError(f"process {pid} has no command line (a zombie?)")
    return argv, env


def _kill9(proc: Proc, timeout: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while alive(proc):
        if time.monotonic() > deadline:
            raise FaultError(f"{proc.what} (PID {proc.pid}) survived SIGKILL for {timeout:g} s")
        time.sleep(0.05)


@dataclass
class LabHandle:
    """A running lab, known by its directory (``$PODIUM_LAB_DIR/<name>``)."""

    dir: Path

    def state(self) -> LabState:
        state = load_state(self.dir)
        if state is None:
            raise FaultError(f"no lab state in {self.dir}")
        return state

    def netns(self, host: str) -> str:
        for h in self.state().layout.hosts:
            if h.name == host:
                return h.netns
        raise FaultError(f"no host {host} in the lab")

    def hosts(self) -> list[str]:
        return [h.name for h in self.state().layout.hosts]

    def agent(self, host: str) -> Proc:
        proc = self.state().agents.get(host)
        if proc is None or not alive(proc):
            raise FaultError(f"the agent of {host} is not running ({proc})")
        return proc

    # -- agents --------------------------------------------------------------------------

    def kill_agent(self, host: str, down_for: float = 0.0) -> Fault:
        """kill -9 the agent of ``host``; ``down_for`` s later start it again, same argv/env.

        The agent runs in the host's namespace (``ip netns exec`` execs into it), so the
        restart goes through ``ip netns exec <ns>`` and :func:`podium.lab._procs.spawn`,
        as ``podium lab up`` does, with its output appended to the same agent.log.
        """
        proc = self.agent(host)
        argv, env = _argv_env(proc.pid)
        fault = Fault("kill_agent", host, time.time(), detail={"pid": proc.pid})
        _kill9(proc)
        time.sleep(max(0.0, down_for))
        ns = self.netns(host)
        log = self.dir / "hosts" / host / "agent.log"
        new = spawn(["ip", "netns", "exec", ns, *argv], log, f"agent {host}", env)
        state = self.state()
        state.agents[host] = new
        state.save()  # so that podium lab down stops the new one
        fault.healed = time.time()
        fault.detail["new_pid"] = new.pid
        return fault

    def pause_agent(self, host: str, seconds: float, kind: str) -> Fault:
        """SIGSTOP the agent of ``host`` for ``seconds``, then SIGCONT it (always)."""
        proc = self.agent(host)
        fault = Fault(kind, host, time.time(), detail={"pid": proc.pid, "pause_s": seconds})
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        fault.healed = time.time()
        return fault

    # -- the fabric ----------------------------------------------------------------------

    def _uplink(self, host: str, state: str) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns(host), "ip", "link", "set", "up0", state],
            capture_output=True, text=True, timeout=IP_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise FaultError(f"ip link set up0 {state} in {host}: {done.stderr.strip()}")

    def partition(self, host: str, seconds: float, kind: str) -> Fault:
        """Cut ``host`` off the fabric (its ``up0`` down) for ``seconds``, then heal it."""
        fault = Fault(kind, host, time.time(), detail={"cut_s": seconds})
        self._uplink(host, "down")
        try:
            time.sleep(seconds)
        finally:
            self._uplink(host, "up")
        fault.healed = time.time()
        return fault

    # -- the server ----------------------------------------------------------------------

    def kill_server(self, down_for: float = 0.0) -> Fault:
        """kill -9 the (only, hence leading) server; restart it on the same loopback port."""
        state = self.state()
        if state.server is None or not alive(state.server):
            raise FaultError("the lab's server is not running")
        argv, env = _argv_env(state.server.pid)
        port = state.server_url.rsplit(":", 1)[-1].rstrip("/")
        argv = [f"127.0.0.1:{port}" if a == "127.0.0.1:0" else a for a in argv]
        fault = Fault("kill_server", "server", time.time(), detail={"pid": state.server.pid})
        _kill9(state.server)
        time.sleep(max(0.0, down_for))
        log = self.dir / "server" / "server.log"
        before = log.stat().st_size if log.exists() else 0
        new = spawn(argv, log, "server", env)
        state.server = new
        state.save()
        deadline = time.monotonic() + RESTART_TIMEOUT
        while True:
            with log.open("rb") as f:
                f.seek(before)
                if READY.encode() in f.read():
                    break
            if not alive(new):
                raise FaultError(f"the restarted server exited; see {log}")
            if time.monotonic() > deadline:
                raise FaultError(f"the restarted server is not listening after {RESTART_TIMEOUT} s")
            time.sleep(0.1)
        fault.healed = time.time()
        fault.detail["new_pid"] = new.pid
        return fault

    # -- guests --------------------------------------------------------------------------

    def kill_qemu(self, guest: str, uuid: str) -> Fault:
        """kill -9 one QEMU of ``guest`` (the one not in ``-incoming``, if there is one)."""
        procs = qemu_processes(uuid)
        if not procs:
            raise FaultError(f"guest {guest} has no QEMU process")
        victim = next((p for p in procs if not p.incoming), procs[0])
        fault = Fault("kill_qemu", guest, time.time(), detail={"pid": victim.pid})
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGKILL)
        return fault
