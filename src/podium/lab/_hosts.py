"""Host faults in a running lab, by PID: crash a host, bring its agent back.

::

    kill_host(lab, h1) ──SIGKILL──> agent h1, its OVS daemons (PIDs from lab.json)
                       ──SIGKILL──> every process in pdm-<lab>-h1 (its QEMUs)
    restart_agent(lab, h1) ──> its OVS again, if it had one and it is dead (same
                               database: brv and its ports come back)
                           ──> same argv and env as ``up`` gave it (its token file now
                               holds the host's own token) ──> lab.json updated

Both act on one lab's own processes only: those lab.json names and those inside that
lab's host namespace. For benchmarks and chaos tests of failover.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

from podium.drivers.net import NetworkError, namespace_exists, namespace_pids
from podium.lab._errors import LabError
from podium.lab._layout import HostLayout, lab_dir
from podium.lab._procs import Proc, alive, identify, spawn, wait_gone
from podium.lab._state import LabState, load_state
from podium.lab._up import agent_argv, start_vlan_switch

KILL_WAIT = 5.0


def _up_state(name: str, root: Path | None) -> LabState:
    state = load_state(lab_dir(name, root))
    if state is None or state.status != "up":
        raise LabError(f"lab {name} is not up (podium lab up first)")
    return state


def _host(state: LabState, host: str) -> HostLayout:
    for layout in state.layout.hosts:
        if layout.name == host:
            return layout
    names = ", ".join(h.name for h in state.layout.hosts)
    raise LabError(f"lab {state.layout.name} has no host {host!r} (hosts: {names})")


def kill_host(name: str, host: str, *, root: Path | None = None) -> list[Proc]:
    """SIGKILL ``host``'s agent and every process in its namespace; return those killed.

    Returns once all are dead (not zombies of ours). Raises :class:`LabError`.
    """
    state = _up_state(name, root)
    layout = _host(state, host)
    victims: list[Proc] = []
    agent = state.agents.get(host)
    ours = [agent, *state.ovs.get(host, [])] if agent is not None else state.ovs.get(host, [])
    victims += [p for p in ours if alive(p)]
    try:
        pids = namespace_pids(layout.netns) if namespace_exists(layout.netns) else []
    except NetworkError as err:
        raise LabError(str(err)) from err
    known = {p.pid for p in victims}
    for pid in pids:
        proc = identify(pid, f"process in {layout.netns}")
        if proc is not None and pid not in known:
            victims.append(proc)
    for proc in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    stuck = wait_gone(victims, KILL_WAIT)
    if stuck:
        raise LabError(f"PIDs {', '.join(str(p.pid) for p in stuck)} survived SIGKILL")
    return victims


def restart_agent(name: str, host: str, *, root: Path | None = None) -> Proc:
    """Start ``host``'s agent again as ``up`` did (after a crash); return its process.

    Raises :class:`LabError` if its agent still runs.
    """
    state = _up_state(name, root)
    layout = _host(state, host)
    old = state.agents.get(host)
    if old is not None and alive(old):
        raise LabError(f"the agent of {host} still runs (PID {old.pid})")
    ip = shutil.which("ip")
    if ip is None:
        raise LabError("podium lab needs iproute2's ip (apt-get install iproute2)")
    procs = state.ovs.get(host, [])
    if procs and not all(alive(p) for p in procs):
        for proc in [p for p in procs if alive(p)]:  # half a switch: start both afresh
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        wait_gone(procs, KILL_WAIT)
        start_vlan_switch(state, ip, layout)
    argv, env = agent_argv(state, ip, layout)
    log = Path(state.dir) / "hosts" / host / "agent.log"
    proc = spawn(argv, log, f"agent {host}", env)
    state.agents[host] = proc
    state.save()
    return proc
