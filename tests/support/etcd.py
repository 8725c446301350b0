"""Start real etcd members for tests and benchmarks: 1 or 3 on loopback, killed by PID.

::

    cluster = start_etcd(members=3)          # free ports, tmp data dirs (tmpfs if present)
    cluster.url                              # "etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
    cluster.kill(0); cluster.restart(0)      # SIGKILL one member, start it again
    cluster.stop()                           # kill every member, remove the data dirs

Each member logs to ``<data dir>.log``; a member that does not become healthy in time
raises ``EtcdStartError`` with the tail of that log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Short raft timings make a member healthy and elect a leader within about a second, and
# bring etcd's minimum lease TTL (1.5 x election timeout, rounded up) down to 1 s so lease
# expiry tests stay fast. Production clusters keep etcd's defaults.
HEARTBEAT_MS = 50
ELECTION_MS = 500


class EtcdStartError(RuntimeError):
    """A member did not become healthy."""


def etcd_binary() -> str | None:
    """The etcd executable on PATH, or ``None`` if it is not installed."""
    return shutil.which("etcd")


def default_base_dir() -> Path:
    """Where data dirs go by default: tmpfs (/dev/shm) when writable, else the temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback TCP ports (held open together while choosing)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class EtcdMember:
    """One etcd process (or its slot while it is killed)."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def healthy(self) -> bool:
        """True when the member answers ``/health`` with a leader."""
        url = f"http://{self.endpoint}/health"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return b'"health":"true"' in resp.read()
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class EtcdCluster:
    """A set of etcd members started by :func:`start_etcd`."""

    members: list[EtcdMember]
    base_dir: Path
    binary: str
    extra_args: tuple[str, ...] = ()
    _initial_cluster: str = field(default="", repr=False)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """A ``--store`` URL naming every member."""
        return "etcd://" + ",".join(self.endpoints)

    def _spawn(self, member: EtcdMember, state: str) -> None:
        args = [
            self.binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls=http://{member.endpoint}",
            f"--advertise-client-urls=http://{member.endpoint}",
            f"--listen-peer-urls=http://127.0.0.1:{member.peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{member.peer_port}",
            f"--initial-cluster={self._initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token=podium-test-{os.getpid()}",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_MS}",
            "--logger=zap",
            "--log-level=warn",
            *self.extra_args,
        ]
        with member.log_path.open("ab") as log:
            member.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C aimed at pytest is not delivered to etcd
            )

    def wait_healthy(self, members: list[EtcdMember] | None = None, timeout: float = 15) -> None:
        """Wait until every given member (default: all running) reports healthy."""
        todo = members if members is not None else [m for m in self.members if m.proc]
        deadline = time.monotonic() + timeout
        for member in todo:
            while not member.healthy():
                if member.proc is not None and member.proc.poll() is not None:
                    raise EtcdStartError(
                        f"etcd {member.name} exited with {member.proc.returncode}:\n"
                        + member.log_tail()
                    )
                if time.monotonic() > deadline:
                    raise EtcdStartError(
                        f"etcd {member.name} not healthy after {timeout}s:\n" + member.log_tail()
                    )
                time.sleep(0.05)

    def kill(self, index: int) -> None:
        """SIGKILL one member (by PID) and reap it; its data dir stays for a restart."""
        member = self.members[index]
        if member.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(member.proc.pid, signal.SIGKILL)
        member.proc.wait(timeout=10)
        member.proc = None

    def restart(self, index: int, *, wait: bool = True) -> None:
        """Start a killed member again on the same ports and data dir."""
        member = self.members[index]
        if member.proc is not None:
            return
        self._spawn(member, "existing")
        if wait:
            self.wait_healthy([member])

    def stop(self) -> None:
        """Kill every member by PID and remove the data dirs and logs."""
        for index in range(len(self.members)):
            self.kill(index)
        for member in self.members:
            shutil.rmtree(member.data_dir, ignore_errors=True)
            member.log_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.base_dir.rmdir()

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_etcd(
    members: int = 1,
    *,
    base_dir: Path | None = None,
    extra_args: tuple[str, ...] = (),
    timeout: float = 15,
) -> EtcdCluster:
    """Start ``members`` etcd processes forming one cluster; return once all are healthy.

    Data dirs are created under a fresh folder in ``base_dir`` (default: tmpfs). Raises
    ``EtcdStartError`` (after killing what it started) if etcd is missing or unhealthy.
    """
    binary = etcd_binary()
    if binary is None:
        raise EtcdStartError("etcd is not installed (apt-get install etcd-server)")
    root = Path(tempfile.mkdtemp(prefix="podium-etcd-", dir=base_dir or default_base_dir()))
    ports = free_ports(2 * members)
    slots = [
        EtcdMember(f"m{i}", ports[2 * i], ports[2 * i + 1], root / f"m{i}") for i in range(members)
    ]
    cluster = EtcdCluster(slots, root, binary, extra_args)
    cluster._initial_cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in slots)
    try:
        for member in slots:
            cluster._spawn(member, "new")
        cluster.wait_healthy(timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def wipe(endpoint: str) -> None:
    """Revoke every lease and delete every key of a (test) etcd: a clean keyspace.

    The revision keeps counting, so tests that share one etcd compare revisions
    relative to a base they read first.
    """
    from aetcd import rpc  # noqa: PLC0415  (only the etcd tests need grpc)

    channel = rpc.insecure_channel(endpoint)
    try:
        leases = await rpc.LeaseStub(channel).LeaseLeases(rpc.LeaseLeasesRequest(), timeout=10)
        for lease in leases.leases:
            await rpc.LeaseStub(channel).LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease.ID), timeout=10
            )
        await rpc.KVStub(channel).DeleteRange(
            rpc.DeleteRangeRequest(key=b"\0", range_end=b"\0"), timeout=10
        )
    finally:
        await channel.close()
