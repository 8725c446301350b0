"""A lab host's VLAN switch: its own Open vSwitch, for kernels whose bridges cannot filter VLANs.

::

    <lab dir>/hosts/<host>/ovs/{run,db,log}    OVS_RUNDIR, OVS_DBDIR, OVS_LOGDIR of this host
    ip netns exec pdm-<lab>-<host> ovsdb-server db/conf.db --remote=punix:run/db.sock --detach
    ip netns exec pdm-<lab>-<host> ovs-vswitchd unix:run/db.sock --detach
        (PIDs from their pidfiles, recorded in lab.json at once: down and kill_host stop them)
    brv (datapath_type=netdev: all in userspace, no kernel module)
      └─ upv0 (a trunk: no tag) ══ veth ══ upv-hN on fab0 (fab0 does not filter VLANs,
                                             so it carries the tagged frames between hosts)

The agent gets ``--ovs-db unix:<run>/db.sock --ovs-bridge brv`` and adds its taps there.
Both daemons detach once ready, so a start costs ~30 ms per host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from podium.drivers.net import NetworkError, OvsNetwork
from podium.lab._errors import LabError
from podium.lab._procs import Proc, identify

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
START_TIMEOUT = 20.0


def ovs_available() -> bool:
    """Whether Open vSwitch is installed here (openvswitch-switch)."""
    return SCHEMA.is_file() and all(shutil.which(b) for b in BINARIES)


def ovs_home(lab: str | Path, host: str) -> Path:
    """Where host ``host`` of the lab in folder ``lab`` keeps its OVS database, sockets, logs."""
    return Path(lab) / "hosts" / host / "ovs"


def db_socket(home: Path) -> str:
    """The OVSDB remote of the switch in ``home`` (what the agent's ``--ovs-db`` gets)."""
    return f"unix:{home / 'run' / 'db.sock'}"


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OVS_RUNDIR": str(home / "run"),
        "OVS_DBDIR": str(home / "db"),
        "OVS_LOGDIR": str(home / "log"),
    }


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LabError(f"{what}: {err}") from err
    if done.returncode != 0:
        raise LabError(f"{what}: {(done.stderr or done.stdout).strip()[-600:]}")


def _daemon_argv(daemon: str, home: Path) -> list[str]:
    run, log = home / "run", home / "log"
    target = str(home / "db" / "conf.db") if daemon == "ovsdb-server" else db_socket(home)
    argv = [daemon, target]
    if daemon == "ovsdb-server":
        argv.append(f"--remote=punix:{run / 'db.sock'}")
    return [
        *argv,
        f"--pidfile={run / daemon}.pid",
        f"--unixctl={run / daemon}.ctl",
        f"--log-file={log / daemon}.log",
        "--detach",
        "--no-chdir",
    ]


def start_ovs(
    ip: str, netns: str, home: Path, record: Callable[[list[Proc]], None], what: str
) -> list[Proc]:
    """Start ovsdb-server and ovs-vswitchd inside ``netns`` (state in ``home``); hand each
    to ``record`` the moment it runs. Reuses the database there (a restarted host gets
    its bridge and ports back). Raises :class:`LabError`."""
    for sub in ("run", "db", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    env = _env(home)
    db = home / "db" / "conf.db"
    if not db.exists():
        _run(["ovsdb-tool", "create", str(db), str(SCHEMA)], env, f"{what}: ovsdb-tool create")
    procs: list[Proc] = []
    for daemon in DAEMONS:
        pidfile = home / "run" / f"{daemon}.pid"
        pidfile.unlink(missing_ok=True)
        _run([ip, "netns", "exec", netns, *_daemon_argv(daemon, home)], env, f"{what}: {daemon}")
        try:
            proc = identify(int(pidfile.read_text().strip()), f"{daemon} ({netns})")
        except (OSError, ValueError) as err:
            raise LabError(f"{what}: {daemon} wrote no pidfile {pidfile}: {err}") from err
        if proc is None:
            log = home / "log" / f"{daemon}.log"
            raise LabError(f"{what}: {daemon} exited right after starting; see {log}")
        procs.append(proc)
        record(list(procs))
    return procs


def make_vlan_bridge(home: Path, bridge: str, uplink: str) -> None:
    """Bridge ``bridge`` (userspace datapath) with ``uplink`` as its trunk; idempotent."""
    ovs = OvsNetwork(bridge, db=db_socket(home))
    try:
        ovs.vsctl(
            "--may-exist", "add-br", bridge,
            "--", "set", "bridge", bridge, "datapath_type=netdev",
            "--", "--may-exist", "add-port", bridge, uplink,
            "--", "set", "port", uplink, "vlan_mode=trunk",
        )  # fmt: skip
    except NetworkError as err:
        raise LabError(f"OVS bridge {bridge}: {err}") from err
