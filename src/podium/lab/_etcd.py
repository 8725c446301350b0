"""``podium lab up --store etcd3``: a 3-member etcd cluster on loopback, for the lab's server.

::

    free_ports(6) ──> member e1..e3: client 127.0.0.1:Pc, peer 127.0.0.1:Pp,
                      data <lab dir>/etcd/eI, log <lab dir>/etcd/eI.log
        ──> spawn each (detached, by PID; recorded in lab.json as it starts)
        ──> every member answers /health with a leader ──> "etcd://127.0.0.1:P1,...,P3"

Ports: the kernel picks them (bind to port 0, all held open together, then released
just before etcd binds them); a member that loses that race exits at once and ``up``
reports its log. ``down`` stops the members by PID, after the server.
"""

from __future__ import annotations

import shutil
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podium.lab._errors import LabError
from podium.lab._procs import Proc, exited, spawn

ETCD3 = "etcd3"  # the --store value that asks for a lab-made cluster
MEMBERS = 3
HEALTH_TIMEOUT = 30.0
POLL = 0.1
# etcd's own defaults (100 ms heartbeat, 1 s election timeout): a member lost is noticed
# and a new leader elected within about a second, with no false elections on a busy box.
HEARTBEAT_MS = 100
ELECTION_MS = 1000

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class EtcdMember:
    """One lab etcd member: its ports and, once started, its process."""

    name: str  # e1, e2, e3
    client_port: int
    peer_port: int
    proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


def etcd_binary() -> str:
    """The etcd executable. Raises :class:`LabError` when it is not installed."""
    binary = shutil.which("etcd")
    if binary is None:
        raise LabError("--store etcd3 needs etcd: install etcd-server (scripts/setup does)")
    return binary


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback TCP ports (held open together while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    except OSError as err:
        raise LabError(f"cannot find free loopback ports for etcd: {err}") from err
    finally:
        for s in socks:
            s.close()


def plan_members(count: int = MEMBERS) -> list[EtcdMember]:
    """``count`` members on fresh loopback ports (not started)."""
    ports = free_ports(2 * count)
    return [EtcdMember(f"e{i + 1}", ports[2 * i], ports[2 * i + 1]) for i in range(count)]


def store_url(members: list[EtcdMember]) -> str:
    """The server's ``--store`` URL naming every member."""
    return "etcd://" + ",".join(m.endpoint for m in members)


def member_argv(
    binary: str, member: EtcdMember, members: list[EtcdMember], data: Path, token: str
) -> list[str]:
    """The command line of ``member`` in a new cluster of ``members``."""
    cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    return [
        binary,
        f"--name={member.name}",
        f"--data-dir={data}",
        f"--listen-client-urls=http://{member.endpoint}",
        f"--advertise-client-urls=http://{member.endpoint}",
        f"--listen-peer-urls=http://127.0.0.1:{member.peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{member.peer_port}",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={token}",
        f"--heartbeat-interval={HEARTBEAT_MS}",
        f"--election-timeout={ELECTION_MS}",
        "--logger=zap",
        "--log-level=warn",
    ]


def healthy(member: EtcdMember) -> bool:
    """True when the member answers ``/health`` with a leader."""
    try:
        with urllib.request.urlopen(f"http://{member.endpoint}/health", timeout=0.5) as resp:
            body: bytes = resp.read()
    except OSError:
        return False
    return b'"health":"true"' in body


def _tail(path: Path, size: int = 1200) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def start_members(
    directory: Path,
    token: str,
    record: Callable[[list[EtcdMember]], None],
    *,
    timeout: float = HEALTH_TIMEOUT,
    say: Say = lambda _: None,
) -> list[EtcdMember]:
    """Start a 3-member cluster under ``directory``; return once every member is healthy.

    ``record`` is called with the members after each one starts (the caller saves them in
    lab.json, so ``down`` can stop them even if this fails). Raises :class:`LabError`;
    members already started are left to the caller's teardown.
    """
    binary = etcd_binary()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    planned = plan_members()
    started: list[EtcdMember] = []
    for member in planned:
        argv = member_argv(binary, member, planned, directory / member.name, token)
        proc = spawn(argv, directory / f"{member.name}.log", f"etcd {member.name}")
        started.append(EtcdMember(member.name, member.client_port, member.peer_port, proc))
        record(started)
    deadline = time.monotonic() + timeout
    for member in started:
        while not healthy(member):
            log = directory / f"{member.name}.log"
            if member.proc is not None and exited(member.proc):
                raise LabError(f"etcd {member.name} exited while starting; {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise LabError(f"etcd {member.name} not healthy after {timeout:g} s; see {log}")
            time.sleep(POLL)
        say(
            f"etcd {member.name}: {member.endpoint} (PID {member.proc.pid if member.proc else '?'})"
        )
    return started
