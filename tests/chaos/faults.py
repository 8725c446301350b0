"""Fault injectors against a running ``podium lab``: each bounded in time, each healed.

::

    LabHandle(lab dir) ──load_state──> agents {host: Proc}, server Proc, namespaces
      kill_agent(h)           kill -9 the agent, restart it from /proc/PID/cmdline+environ
                              (inside pdm-<lab>-h, via podium.lab's spawn), lab.json updated
      pause_agent(h, s)       SIGSTOP, sleep s, SIGCONT (SIGCONT always, even on error)
      partition(h, s)         ip link set up0 down inside the host's namespace, s, then up
      kill_server(i, s)       kill -9 server i, restart it s later on the same ports
      kill_leader(s)          the same for the server that leads (asked by /healthz)
      kill_etcd_member(i, s)  kill -9 etcd member i (--store etcd3), restart it s later
      kill_qemu(uuid)         kill -9 one QEMU of a guest (the agent must notice)

Every injector returns a :class:`Fault` record (what, where, when, how long); none runs
anything outside the lab's namespaces except signals to the lab's own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.lab import LabError, LabState, load_state
from podium.lab._etcd import healthy
from podium.lab._procs import Proc, alive, spawn
from podium.lab._servers import wait_listening
from podium.lab._state import LabServer
from tests.support.qemu_procs import qemu_processes

RESTART_TIMEOUT = 30.0
LEADER_WAIT = 25.0  # > the default leadership TTL (10 s) plus an election and a restart
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


def _leads(config: ClientConfig, url: str) -> bool:
    """Whether the server at ``url`` says it leads (False when it does not answer)."""

    async def ask() -> bool:
        only = replace(config, server=url, fallbacks=())
        async with AsyncPodiumClient(only) as client:
            return bool((await asyncio.wait_for(client.health(), 5.0))["leader"])

    try:
        return asyncio.run(ask())
    except (ClientError, TimeoutError):
        return False


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

    # -- the servers ---------------------------------------------------------------------

    def servers(self) -> list[LabServer]:
        return list(self.state().servers)

    def leader(self, wait: float = LEADER_WAIT) -> int:
        """The index of the server that leads, asking every live server's /healthz.

        Waits up to ``wait`` s for exactly one: right after a leader died, leadership
        moves only when its lease (``--leader-ttl``, 10 s) expires. Raises FaultError.
        """
        deadline = time.monotonic() + wait
        while True:
            state = self.state()
            config = ClientConfig.load(state.config)
            leading = [
                i
                for i, server in enumerate(state.servers)
                if server.proc is not None and alive(server.proc) and _leads(config, server.url)
            ]
            if len(leading) == 1:
                return leading[0]
            if len(leading) > 1 or time.monotonic() > deadline:
                raise FaultError(f"expected one leading server, found {len(leading)}: {leading}")
            time.sleep(0.2)

    def kill_server(
        self, index: int = 0, down_for: float = 0.0, kind: str = "kill_server"
    ) -> Fault:
        """kill -9 server ``index``; ``down_for`` s later restart it on the same ports."""
        state = self.state()
        server = state.servers[index]
        if server.proc is None or not alive(server.proc):
            raise FaultError(f"server {index + 1} is not running")
        argv, env = _argv_env(server.proc.pid)
        port = server.url.rsplit(":", 1)[-1].rstrip("/")
        argv = [f"127.0.0.1:{port}" if a == "127.0.0.1:0" else a for a in argv]
        target = f"server{index + 1}"
        fault = Fault(kind, target, time.time(), detail={"pid": server.proc.pid})
        _kill9(server.proc)
        time.sleep(max(0.0, down_for))
        log = Path(server.dir) / "server.log"
        before = log.stat().st_size if log.exists() else 0
        new = spawn(argv, log, f"server {index + 1}", env)
        server.proc = new
        state.save()
        try:
            wait_listening(new, log, before, RESTART_TIMEOUT)
        except LabError as err:
            raise FaultError(f"restarting {target}: {err}") from err
        fault.healed = time.time()
        fault.detail["new_pid"] = new.pid
        return fault

    def kill_leader(self, down_for: float = 0.0) -> Fault:
        """kill -9 the server that leads the controllers; restart it ``down_for`` s later.

        ``detail["waited_s"]``: how long no server led before (a previous fault's handover).
        """
        asked = time.monotonic()
        index = self.leader()
        waited = time.monotonic() - asked
        fault = self.kill_server(index, down_for, kind="kill_leader")
        fault.detail["waited_s"] = round(waited, 1)
        return fault

    # -- the store -----------------------------------------------------------------------

    def kill_etcd_member(self, index: int, down_for: float) -> Fault:
        """kill -9 etcd member ``index`` (--store etcd3); restart it ``down_for`` s later.

        The restarted member rejoins from its data dir (etcd ignores the initial-cluster
        flags then); the fault heals once it answers /health with a leader again.
        """
        state = self.state()
        if not state.etcd:
            raise FaultError("the lab has no etcd cluster of its own (lab up --store etcd3)")
        member = state.etcd[index]
        if member.proc is None or not alive(member.proc):
            raise FaultError(f"etcd {member.name} is not running")
        argv, env = _argv_env(member.proc.pid)
        fault = Fault("kill_etcd_member", member.name, time.time(),
                      detail={"pid": member.proc.pid, "down_s": down_for})  # fmt: skip
        _kill9(member.proc)
        time.sleep(max(0.0, down_for))
        log = self.dir / "etcd" / f"{member.name}.log"
        new = spawn(argv, log, f"etcd {member.name}", env)
        state.etcd[index] = replace(member, proc=new)
        state.save()
        deadline = time.monotonic() + RESTART_TIMEOUT
        while not healthy(state.etcd[index]):
            if not alive(new):
                raise FaultError(f"the restarted etcd {member.name} exited; see {log}")
            if time.monotonic() > deadline:
                raise FaultError(
                    f"etcd {member.name} not healthy {RESTART_TIMEOUT:g} s after restart"
                )
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
