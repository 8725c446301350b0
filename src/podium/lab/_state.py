"""The lab state file, ``<lab dir>/lab.json``: what ``podium lab down`` will remove.

Written before anything is made and again after every process starts, so even a
``lab up`` killed halfway leaves a file that names all it made. ``down`` removes
exactly what the file names (and the processes inside the file's namespaces), then
the file itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podium.lab._errors import LabError
from podium.lab._etcd import EtcdMember
from podium.lab._layout import HostLayout, LabLayout
from podium.lab._procs import Proc

STATE_FILE = "lab.json"
VERSION = 2  # 1: one server (``server``, ``server_url``); 2: a list of servers


@dataclass
class LabServer:
    """One of the lab's podium servers (all serve; one leads the controllers)."""

    dir: str  # its --data-dir: server/ for the first, server2/, server3/ ...
    url: str = ""  # on loopback, for the CLI
    fabric_url: str = ""  # what agents dial, inside the fabric namespace
    proc: Proc | None = None


@dataclass
class LabState:
    """A lab being made, up, or being removed."""

    layout: LabLayout
    dir: str
    driver: str
    store: str
    status: str = "starting"  # starting | up
    config: str = ""  # the CLI's config: admin.conf (naming every server when several)
    servers: list[LabServer] = field(default_factory=list)
    agents: dict[str, Proc] = field(default_factory=dict)  # host name -> agent
    etcd: list[EtcdMember] = field(default_factory=list)  # --store etcd3: the lab's members
    ovs: dict[str, list[Proc]] = field(default_factory=dict)  # host -> its OVS daemons (_ovs)

    @property
    def path(self) -> Path:
        return Path(self.dir) / STATE_FILE

    @property
    def server_url(self) -> str:
        """The first server's loopback URL (what ``lab up --json`` prints as ``server``)."""
        return self.servers[0].url if self.servers else ""

    def server_procs(self) -> list[Proc]:
        return [s.proc for s in self.servers if s.proc is not None]

    def ovs_procs(self) -> list[Proc]:
        return [p for procs in self.ovs.values() for p in procs]

    def procs(self) -> list[Proc]:
        """The processes the lab started itself: agents, OVS, the servers, etcd members."""
        return [
            *self.agents.values(),
            *self.ovs_procs(),
            *self.server_procs(),
            *(m.proc for m in self.etcd if m.proc is not None),
        ]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = VERSION
        return data

    def save(self) -> None:
        """Write the file atomically (0600: it names the config holding the admin token)."""
        path = self.path
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(self.to_json(), out, indent=2)
                out.write("\n")
            tmp.replace(path)
        except OSError as err:
            raise LabError(f"cannot write the lab state {path}: {err.strerror or err}") from err


def _proc(data: dict[str, Any] | None) -> Proc | None:
    return None if data is None else Proc(int(data["pid"]), int(data["start"]), data["what"])


def _member(data: dict[str, Any]) -> EtcdMember:
    return EtcdMember(
        str(data["name"]), int(data["client_port"]), int(data["peer_port"]), _proc(data["proc"])
    )


def _servers(data: dict[str, Any], version: int) -> list[LabServer]:
    if version == 1:  # one server, as labs made before several servers could run
        proc = _proc(data.pop("server"))
        url = data.pop("server_url")
        return [LabServer(str(Path(data["dir"]) / "server"), url, "", proc)] if url or proc else []
    return [
        LabServer(str(s["dir"]), str(s["url"]), str(s["fabric_url"]), _proc(s["proc"]))
        for s in data.pop("servers")
    ]


def _layout(data: dict[str, Any]) -> LabLayout:
    hosts = tuple(HostLayout(**h) for h in data.pop("hosts"))
    data["guest_range"] = tuple(data["guest_range"])
    return LabLayout(hosts=hosts, **data)


def load_state(directory: Path) -> LabState | None:
    """The state of the lab in ``directory``, or None when there is none."""
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise LabError(f"cannot read the lab state {path}: {err}; fix or remove it") from err
    version = data.pop("version", None) if isinstance(data, dict) else None
    if not isinstance(data, dict) or version not in (1, VERSION):
        raise LabError(f"the lab state {path} is not one this podium wrote; fix or remove it")
    try:
        agents = {name: _proc(p) for name, p in data.pop("agents").items()}
        return LabState(
            layout=_layout(data.pop("layout")),
            servers=_servers(data, version),
            agents={k: v for k, v in agents.items() if v is not None},
            etcd=[_member(m) for m in data.pop("etcd", [])],  # absent: a lab without etcd
            ovs={
                host: [p for p in map(_proc, procs) if p is not None]
                for host, procs in data.pop("ovs", {}).items()  # absent: a lab without OVS
            },
            **data,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise LabError(f"the lab state {path} is malformed ({err}); fix or remove it") from err
