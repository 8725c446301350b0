"""``podium lab up``: a fabric, N host namespaces, the server, one agent per host.

::

    plan_lab ──> lab.json (status starting) ──> --store etcd3: 3 etcd members on loopback
        ──> fabric ns: fab0 + fabric address
        ──> per host ns: br0 (+ management address) ──up0 veth up-hI──> fab0
            qemu labs where bridges cannot filter VLANs and OVS is installed, also: its own
            ovsdb-server + ovs-vswitchd, OVS bridge brv ──upv0 veth upv-hI (trunk)──> fab0,
            and br0 drops tagged frames from up0 (nftables; VLANs live on brv) (_ovs)
        ──> server(s) (subprocess, root ns): 127.0.0.1:PORT for the CLI,
                               pdm-<lab>-fab@10.213.0.1:7443(+k) for the agents (_servers)
        ──> join token ──> per host: ip netns exec pdm-<lab>-hI podium agent ... (detached,
                           PODIUM_BRIDGE=br0, --data-dir <lab dir>/data shared by all hosts
                           (--sites N: one data dir per site, and PODIUM_REPLICA_DIR the
                           next site's replica folder),
                           --ovs-db/--ovs-bridge/--router-netns where the host has OVS)
        ──> every host ready ──> lab.json (status up) ──> LabInfo
    any failure (or Ctrl-C) ──> teardown of what was made ──> LabError
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.client import AsyncPodiumClient, ClientConfig, ClientError
from podium.drivers.net import (
    NetworkError,
    create_namespace,
    drop_tagged,
    ensure_address,
    ensure_bridge,
    ensure_veth,
    kernel_filters_vlans,
    list_namespaces,
)
from podium.lab._down import teardown
from podium.lab._errors import LabError
from podium.lab._etcd import ETCD3, EtcdMember, etcd_binary, start_members, store_url
from podium.lab._layout import (
    DEFAULT_SUBNET,
    HostLayout,
    LabLayout,
    lab_dir,
    namespace_prefix,
    plan_lab,
    site_names,
)
from podium.lab._ovs import db_socket, make_vlan_bridge, ovs_available, ovs_home, start_ovs
from podium.lab._procs import Proc, exited, spawn
from podium.lab._servers import start_servers
from podium.lab._state import LabState, load_state

Say = Callable[[str], None]
POLL = 0.2
DRIVERS = ("sim", "qemu")
BRIDGE_ENV = "PODIUM_BRIDGE"  # tells the qemu driver which bridge its guests' taps go on
REPLICA_ENV = "PODIUM_REPLICA_DIR"  # the agent's --replica-dir: where DR replicas go


@dataclass(frozen=True, slots=True)
class LabInfo:
    """A lab that is up: what ``podium lab up`` prints."""

    name: str
    config: str  # admin.conf
    server: str  # the server URL on loopback (admin.conf names it)
    hosts: list[str]
    dir: str
    fabric_url: str  # what agents dial, inside the lab (the first server)
    servers: tuple[str, ...] = ()  # every server's loopback URL, the first one first

    def to_json(self) -> dict[str, Any]:
        """Exactly ``{"config": PATH, "server": URL, "hosts": [NAMES]}`` (DESIGN.md)."""
        return {"config": self.config, "server": self.server, "hosts": list(self.hosts)}


IMAGE_TIMEOUT = 600.0  # a first build downloads the kernel package


def _tail(path: Path, size: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def _preflight(name: str, driver: str, store: str | None, directory: Path, servers: int) -> str:
    if os.geteuid() != 0:
        raise LabError("podium lab needs root: it makes network namespaces, bridges and veths")
    ip = shutil.which("ip")
    if ip is None:
        raise LabError("podium lab needs iproute2's ip (apt-get install iproute2)")
    if driver not in DRIVERS:
        raise LabError(f"unknown --driver {driver!r}: expected one of {', '.join(DRIVERS)}")
    if store == ETCD3:
        etcd_binary()  # raises with how to install it
    if servers > 1 and not (store == ETCD3 or (store or "").startswith("etcd://")):
        raise LabError(
            f"--servers {servers} needs a store they share: use --store etcd3 (a 3-member "
            "etcd the lab runs) or --store etcd://HOST:PORT (SQLite serves one server)"
        )
    if load_state(directory) is not None:
        raise LabError(
            f"lab {name} is up already ({directory / 'lab.json'}): podium lab down first"
        )
    leftovers = list_namespaces(namespace_prefix(name))
    if leftovers:
        raise LabError(
            f"namespaces {', '.join(leftovers)} exist but lab {name} has no state file; "
            "remove them (ip netns delete NAME) or pick another --name"
        )
    return ip


def wants_vlan_switch(driver: str, say: Say) -> bool:
    """Whether this lab's hosts get an OVS VLAN switch: qemu guests, OVS installed, and
    bridges that cannot filter VLANs (where they can, br0 does it: _bridge)."""
    if driver != "qemu" or kernel_filters_vlans():
        return False
    if not ovs_available():
        say(
            "this kernel's bridges cannot filter VLANs and Open vSwitch is not installed: "
            "guest NICs on VLANs will fail (apt-get install openvswitch-switch)"
        )
        return False
    return True


def _make_network(layout: LabLayout, say: Say, *, vlan_switch: bool = False) -> None:
    fab = layout.fabric_netns
    create_namespace(fab)
    ensure_bridge(fab, layout.fabric_bridge, mac=layout.fabric_mac)
    ensure_address(fab, layout.fabric_bridge, layout.fabric_address)
    say(f"fabric {fab}: {layout.fabric_bridge} {layout.fabric_address}")
    for host in layout.hosts:
        create_namespace(host.netns)
        ensure_bridge(host.netns, host.bridge, mac=host.bridge_mac)
        ensure_veth(
            host.netns,
            host.uplink,
            peer_netns=fab,
            peer=host.fabric_port,
            master=host.bridge,
            peer_master=layout.fabric_bridge,
        )
        ensure_address(host.netns, host.bridge, host.address)
        if vlan_switch:
            ensure_veth(
                host.netns,
                host.vlan_uplink,
                peer_netns=fab,
                peer=host.vlan_fabric_port,
                peer_master=layout.fabric_bridge,
            )
            # fab0 floods VLAN frames to up0 too: br0 must not pass them to its guests
            drop_tagged(host.netns, "uplinks", [host.uplink])
        say(f"host {host.name} ({host.netns}): {host.bridge} {host.address}")


def start_vlan_switch(state: LabState, ip: str, host: HostLayout) -> list[Proc]:
    """Start ``host``'s OVS (recording its PIDs in lab.json at once) and make its bridge."""
    home = ovs_home(state.dir, host.name)

    def record(procs: list[Proc]) -> None:
        state.ovs[host.name] = procs
        state.save()

    procs = start_ovs(ip, host.netns, home, record, f"OVS of {host.name}")
    make_vlan_bridge(home, host.vlan_bridge, host.vlan_uplink)
    return procs


def _start_vlan_switches(state: LabState, ip: str, say: Say) -> None:
    for host in state.layout.hosts:
        procs = start_vlan_switch(state, ip, host)
        pids = ", ".join(str(p.pid) for p in procs)
        say(f"host {host.name}: OVS bridge {host.vlan_bridge} (PIDs {pids})")


def _start_etcd(state: LabState, directory: Path, say: Say) -> None:
    """Start the lab's etcd cluster; point ``state.store`` at it."""

    def record(members: list[EtcdMember]) -> None:
        state.etcd = list(members)
        state.save()

    token = f"podium-lab-{state.layout.name}-{os.getpid()}"
    members = start_members(directory, token, record, say=say)
    state.store = store_url(members)
    state.save()
    say(f"etcd cluster: {state.store}")


async def _mint(config: ClientConfig) -> str:
    async with AsyncPodiumClient(config) as client:
        token: str = (await client.create_token("join", ttl=600))["token"]
        return token


def qemu_host_capacity(hosts: int) -> tuple[float, int]:
    """What each of ``hosts`` lab hosts offers when they all share this machine.

    Real guests use real memory: a 128 MiB TCG guest costs ~210 MiB of host memory, so
    the hosts together offer half of what is available now, which keeps the machine
    out of swap when they are full. Idle TCG guests cost little CPU: 4 vCPUs per core.
    """
    available_mib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available_mib = int(line.split()[1]) // 1024
    memory = max(256, available_mib // 2 // max(1, hosts))
    return float((os.cpu_count() or 1) * 4), memory


def storage_of(state: LabState, host: HostLayout) -> tuple[Path, Path | None]:
    """``host``'s data dir (its site's storage) and where it ships DR replicas.

    One site: every host shares ``<lab>/data`` (guests in DATA/<host>, volumes in
    DATA/volumes), and there is nowhere to replicate to. Several sites: each has its own
    ``<lab>/sites/<site>/data``, and replicates to the next site's (s1 to s2, ..., the
    last to s1) ``<lab>/sites/<next>/replicas``, standing in for a remote share.
    """
    sites = site_names(state.layout)
    if len(sites) == 1:
        return Path(state.dir) / "data", None
    site = host.labels.get("site", sites[0])
    target = sites[(sites.index(site) + 1) % len(sites)]
    base = Path(state.dir) / "sites"
    return base / site / "data", base / target / "replicas"


def agent_argv(state: LabState, ip: str, host: HostLayout) -> tuple[list[str], dict[str, str]]:
    """The command line and environment the lab runs ``host``'s agent with."""
    layout = state.layout
    data_dir, replicas = storage_of(state, host)
    token = Path(state.dir) / "hosts" / host.name / "token"
    argv = [
        ip, "netns", "exec", host.netns,
        sys.executable, "-m", "podium", "agent",
        *(arg for s in state.servers for arg in ("--server", s.fabric_url)),
        "--token-file", str(token),
        "--name", host.name,
        "--driver", state.driver,
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    for key, value in host.labels.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["--migration-address", host.ip]
    if state.driver == "qemu":
        cpu, memory_mib = qemu_host_capacity(len(layout.hosts))
        argv += ["--cpu", f"{cpu:g}", "--memory-mib", str(memory_mib)]
    if host.name in state.ovs:
        socket = db_socket(ovs_home(state.dir, host.name))
        argv += ["--ovs-db", socket, "--ovs-bridge", host.vlan_bridge]
        # network rules: the lab host's namespace is the host, and goes at lab down
        argv += ["--router-netns", host.netns]
    env = {**os.environ, BRIDGE_ENV: host.bridge}
    if replicas is not None:
        replicas.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[REPLICA_ENV] = str(replicas)
    return argv, env


def _start_agents(state: LabState, ip: str, join: str, ca_pem: str | None, say: Say) -> None:
    for host in state.layout.hosts:
        home = Path(state.dir) / "hosts" / host.name
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = home / "token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(join + "\n")
        if ca_pem:
            (home / "ca.pem").write_text(ca_pem)
        argv, env = agent_argv(state, ip, host)
        state.agents[host.name] = spawn(argv, home / "agent.log", f"agent {host.name}", env)
        state.save()
        say(f"agent {host.name}: PID {state.agents[host.name].pid}")


async def _wait_ready(state: LabState, config: ClientConfig, timeout: float, say: Say) -> None:
    names = {h.name for h in state.layout.hosts}
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    async with AsyncPodiumClient(config) as client:
        while True:
            for name, proc in state.agents.items():
                if exited(proc):
                    log = Path(state.dir) / "hosts" / name / "agent.log"
                    raise LabError(f"the agent of {name} exited; {log}:\n{_tail(log)}")
            items, _ = await client.list("Host")
            now = {h["name"] for h in items if h["status"]["state"] == "ready"} & names
            for name in sorted(now - ready):
                say(f"host {name} ready")
            ready = now
            if ready == names:
                return
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(names - ready))
                raise LabError(
                    f"hosts {missing} not ready after {timeout:g} s; "
                    f"see their agent.log under {Path(state.dir) / 'hosts'}"
                )
            await asyncio.sleep(POLL)


def _ensure_image(say: Say) -> None:
    """Build (or reuse) the guest image here, in the root namespace.

    Agents run inside lab namespaces, which have no route to the package mirror, so they
    cannot fetch the kernel package themselves; they find the image in the same cache
    (``$PODIUM_IMAGE_CACHE``, else the default), which they inherit.
    """
    say("guest image: building or reusing it (podium image build)")
    out = subprocess.run(
        [sys.executable, "-m", "podium", "image", "build"],
        capture_output=True, text=True, timeout=IMAGE_TIMEOUT, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise LabError(f"podium image build failed: {(out.stderr or out.stdout).strip()[-800:]}")


def _fresh_dir(directory: Path) -> None:
    """Forget a previous run's store, TLS files, tokens and logs (lab.json is gone)."""
    for sub in ("server", "hosts", "data", "etcd", *(f"server{k}" for k in range(2, 10))):
        shutil.rmtree(directory / sub, ignore_errors=True)
    (directory / "admin.conf").unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)


def lab_up(
    *,
    hosts: int,
    driver: str = "sim",
    store: str | None = None,
    name: str = "lab",
    root: Path | None = None,
    subnet: str = DEFAULT_SUBNET,
    sites: int = 1,
    host_ttl: int = 8,
    servers: int = 1,
    timeout: float = 60.0,
    say: Say = lambda _: None,
) -> LabInfo:
    """Bring lab ``name`` up and return, leaving it running. Raises :class:`LabError`.

    On failure everything made so far is removed again before the error is raised.
    """
    directory = lab_dir(name, root)
    layout = plan_lab(name, hosts, subnet, sites)
    ip = _preflight(name, driver, store, directory, servers)
    if driver == "qemu":
        _ensure_image(say)
    _fresh_dir(directory)
    server_dir = directory / "server"
    server_dir.mkdir(mode=0o700)
    state = LabState(
        layout=layout,
        dir=str(directory),
        driver=driver,
        store=store or f"sqlite:///{server_dir / 'podium.db'}",
    )
    state.save()
    try:
        if store == ETCD3:
            _start_etcd(state, directory / "etcd", say)
        vlan_switch = wants_vlan_switch(driver, say)
        _make_network(layout, say, vlan_switch=vlan_switch)
        if vlan_switch:
            _start_vlan_switches(state, ip, say)
        start_servers(state, servers, host_ttl)
        for index, server in enumerate(state.servers, 1):
            say(f"server {index}: {server.url} (agents dial {server.fabric_url})")
        config = ClientConfig.load(state.config)
        join = asyncio.run(_mint(config))
        _start_agents(state, ip, join, config.ca_pem, say)
        asyncio.run(_wait_ready(state, config, timeout, say))
        state.status = "up"
        state.save()
    except BaseException as err:
        say("lab up failed; removing what it made")
        try:
            teardown(state, say)
        except LabError as cleanup:
            raise LabError(f"{err}; and cleaning up failed: {cleanup}") from err
        if isinstance(err, NetworkError | ClientError):
            raise LabError(str(err)) from err
        raise
    return LabInfo(
        name=name,
        config=state.config,
        server=state.server_url,
        hosts=[h.name for h in layout.hosts],
        dir=str(directory),
        fabric_url=layout.fabric_url,
        servers=tuple(s.url for s in state.servers),
    )
