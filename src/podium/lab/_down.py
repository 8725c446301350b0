"""``podium lab down``: stop what the lab runs, remove what it made, by its state file.

::

    lab.json ──> agents + every process inside the lab's namespaces (QEMUs the agents
                 started, detached) ──TERM/KILL by PID──> each host's OVS daemons (by
                 PID) ──> servers ──TERM/KILL──>
             ──> etcd members (--store etcd3) ──TERM/KILL by PID──>
             ──> per host: taps, up0 and upv0 (fabric peers go with them), br0 ──> namespace
             ──> fabric: leftover ports, fab0 ──> namespace ──> lab.json removed

Nothing else is touched: the lab dir keeps its logs and store. Each step runs even
when an earlier one failed; failures are collected and raised together at the end,
with lab.json kept, so running ``down`` again retries them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from podium.drivers.net import (
    LinuxBridgeNetwork,
    NetworkError,
    delete_link,
    delete_namespace,
    links,
    namespace_exists,
    namespace_pids,
)
from podium.lab._errors import LabError
from podium.lab._layout import lab_dir
from podium.lab._procs import Proc, cmdline, identify, stop
from podium.lab._state import LabState, load_state

Say = Callable[[str], None]


@dataclass
class DownReport:
    """What ``down`` did (empty lists and ``found`` False: there was no lab)."""

    name: str
    found: bool = False
    stopped: list[str] = field(default_factory=list)  # "agent h1 (PID 123)"
    namespaces: list[str] = field(default_factory=list)  # those removed


def _namespace_procs(state: LabState, known: set[int]) -> list[Proc]:
    """Processes in the lab's namespaces that the state does not name (QEMUs, shells)."""
    found = []
    for ns in state.layout.namespaces:
        if not namespace_exists(ns):
            continue
        for pid in namespace_pids(ns):
            if pid in known:
                continue
            name = cmdline(pid).split(" ", 1)[0].rsplit("/", 1)[-1] or "process"
            proc = identify(pid, f"{name} in {ns}")
            if proc is not None:
                found.append(proc)
    return found


def _stop_all(state: LabState, report: DownReport, errors: list[str], say: Say) -> None:
    ours = list(state.agents.values())
    try:
        inside = _namespace_procs(state, {p.pid for p in state.procs()})
    except NetworkError as err:
        errors.append(str(err))
        inside = []
    members = [m.proc for m in state.etcd if m.proc is not None]
    # The servers before their store: etcd goes last, so no server sees it vanish.
    for group in (ours + inside, state.ovs_procs(), state.server_procs(), members):
        try:
            stopped = stop(group)
        except LabError as err:
            errors.append(str(err))
            continue
        for proc in stopped:
            report.stopped.append(f"{proc.what} (PID {proc.pid})")
            say(f"stopped {proc.what} (PID {proc.pid})")


def _remove_host(ns: str, bridge: str, uplinks: tuple[str, ...]) -> None:
    # OVS is stopped by now: its taps have no master, and taps() lists those too
    switch = LinuxBridgeNetwork(bridge, netns=ns)
    for tap in switch.taps():
        switch.detach(tap)
    for uplink in uplinks:
        delete_link(ns, uplink)
    delete_link(ns, bridge)


def _remove_fabric(ns: str, bridge: str, ports: list[str]) -> None:
    present = {link.name for link in links(ns)}
    for port in ports:
        if port in present:
            delete_link(ns, port)
    delete_link(ns, bridge)


def _remove_network(state: LabState, report: DownReport, errors: list[str], say: Say) -> None:
    layout = state.layout
    steps: list[tuple[str, Callable[[], None]]] = [
        (h.netns, partial(_remove_host, h.netns, h.bridge, (h.uplink, h.vlan_uplink)))
        for h in layout.hosts
    ]
    ports = [p for h in layout.hosts for p in (h.fabric_port, h.vlan_fabric_port) if p]
    fabric = partial(_remove_fabric, layout.fabric_netns, layout.fabric_bridge, ports)
    steps.append((layout.fabric_netns, fabric))
    for ns, remove_links in steps:
        if not namespace_exists(ns):
            continue
        try:
            remove_links()
            delete_namespace(ns)
        except NetworkError as err:
            errors.append(str(err))
            continue
        report.namespaces.append(ns)
        say(f"removed namespace {ns}")


def teardown(state: LabState, say: Say = lambda _: None) -> DownReport:
    """Stop and remove everything ``state`` names; remove its file. Raises LabError."""
    report = DownReport(state.layout.name, found=True)
    errors: list[str] = []
    _stop_all(state, report, errors, say)
    _remove_network(state, report, errors, say)
    if errors:
        raise LabError(
            f"lab {state.layout.name} is only partly down: "
            + "; ".join(errors)
            + f" (state kept in {state.path}; run podium lab down again)"
        )
    state.path.unlink(missing_ok=True)
    return report


def lab_down(name: str, *, root: Path | None = None, say: Say = lambda _: None) -> DownReport:
    """Take lab ``name`` down; safe to run twice (the second finds nothing to do)."""
    state = load_state(lab_dir(name, root))
    if state is None:
        return DownReport(name)
    return teardown(state, say)
