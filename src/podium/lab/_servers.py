"""The lab's podium servers: one by default, several (``--servers N``) on a shared etcd.

::

    server 1: <lab dir>/server/  ── makes the CA, its cert, the admin token + admin.conf
    server k: <lab dir>/serverK/ ── ca.pem, ca.key, admin.conf copied from server 1, so
                                    one CA signs every server's cert and one admin token
                                    works on all (the store holds its hash once)
    each: 127.0.0.1:PORT (the CLI) + pdm-<lab>-fab@10.213.0.1:(7443 + k - 1) (the agents)
    several: <lab dir>/admin.conf names them all (``server`` + ``servers``): the CLI and
             the agents (one ``--server`` per server) fail over between them

Only the leader runs the controllers; every server serves the API.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import yaml

from podium.lab._errors import LabError
from podium.lab._procs import Proc, exited, spawn
from podium.lab._state import LabServer, LabState

READY = "podium server listening on "
SERVER_START_TIMEOUT = 30.0
POLL = 0.05
MAX_SERVERS = 5
SHARED_FILES = ("ca.pem", "ca.key", "admin.conf")  # what servers 2..N take from server 1


def _tail(path: Path, size: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def server_argv(state: LabState, index: int, data_dir: Path, host_ttl: int) -> list[str]:
    """The command line of server ``index`` (0-based)."""
    layout = state.layout
    return [
        sys.executable, "-m", "podium.server",
        "--store", state.store,
        "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir),
        "--listen-netns", layout.fabric_listen_of(index),
        "--host-ttl", str(host_ttl),
        # Guests share the hosts' subnet (one L2 fabric), from the part the hosts leave free.
        "--guest-subnet", layout.subnet,
        "--guest-pool", "-".join(layout.guest_range),
    ]  # fmt: skip


def wait_listening(proc: Proc, log: Path, offset: int, timeout: float) -> str:
    """The URL in the ready line ``proc`` wrote to ``log`` after ``offset``. Raises LabError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith(READY):
                return line[len(READY) :].split(" ", 1)[0]
        if exited(proc):
            raise LabError(f"podium server exited while starting; {log}:\n{_tail(log)}")
        time.sleep(POLL)
    raise LabError(f"podium server did not start in {timeout:g} s; see {log}")


def start_server(state: LabState, index: int, host_ttl: int) -> LabServer:
    """Start server ``index`` (0-based) and wait until it listens; record it in lab.json."""
    lab = Path(state.dir)
    data_dir = lab / ("server" if index == 0 else f"server{index + 1}")
    data_dir.mkdir(mode=0o700, exist_ok=True)
    if index > 0:
        for name in SHARED_FILES:
            shutil.copy2(lab / "server" / name, data_dir / name)
    log = data_dir / "server.log"
    server = LabServer(str(data_dir), fabric_url=state.layout.fabric_url_of(index))
    server.proc = spawn(server_argv(state, index, data_dir, host_ttl), log, f"server {index + 1}")
    state.servers.append(server)
    state.save()
    server.url = wait_listening(server.proc, log, 0, SERVER_START_TIMEOUT)
    state.save()
    return server


def write_cluster_config(state: LabState) -> str:
    """The CLI's config: server 1's admin.conf, naming the others too when there are more."""
    first = Path(state.servers[0].dir) / "admin.conf"
    if len(state.servers) == 1:
        return str(first)
    try:
        data = yaml.safe_load(first.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise LabError(f"cannot read {first}: {err}") from err
    data["servers"] = [s.url for s in state.servers[1:]]
    path = Path(state.dir) / "admin.conf"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def start_servers(state: LabState, count: int, host_ttl: int) -> None:
    """Start ``count`` servers (the first makes the CA and admin token); set the config."""
    if not 1 <= count <= MAX_SERVERS:
        raise LabError(f"--servers {count}: a lab runs 1 to {MAX_SERVERS} servers")
    for index in range(count):
        start_server(state, index, host_ttl)
    state.config = write_cluster_config(state)
    state.save()
