"""What a lab is made of, decided before anything is made: names, addresses, labels.

Pure: :func:`plan_lab` only computes. Namespaces are ``pdm-<lab>-fab`` and
``pdm-<lab>-<host>``; the fabric gets the subnet's first address (the server's
fabric socket listens there); host ``i`` gets address 16 + i. The first 256
addresses of the subnet are the lab's own; guests may use the rest.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from podium.lab._errors import LabError

DEFAULT_NAME = "lab"
DEFAULT_SUBNET = "10.213.0.0/16"
DEFAULT_ROOT = Path("/var/lib/podium/lab")
ROOT_ENV = "PODIUM_LAB_DIR"
SERVER_PORT = 7443  # inside the fabric namespace: always free there
FABRIC_BRIDGE = "fab0"
HOST_BRIDGE = "br0"
UPLINK = "up0"
VLAN_BRIDGE = "brv"  # the OVS VLAN switch, where the kernel's bridges cannot filter VLANs
VLAN_UPLINK = "upv0"  # its trunk into the fabric
MANAGEMENT_SIZE = 256  # the subnet's first addresses: server + hosts
FIRST_HOST = 16
MAX_HOSTS = MANAGEMENT_SIZE - FIRST_HOST - 1
_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")


@dataclass(frozen=True, slots=True)
class HostLayout:
    """One lab host: a namespace with a switch, an uplink into the fabric, an address."""

    name: str  # the podium host name (h1, h2, ...)
    netns: str  # pdm-<lab>-<name>
    bridge: str  # the host switch (br0): the HostNetwork of its agent
    bridge_mac: str  # fixed, so the address's MAC never changes as taps come and go
    uplink: str  # up0, enslaved to the bridge
    fabric_port: str  # the uplink's peer in the fabric namespace (up-<name>)
    address: str  # management address on the bridge, with prefix (10.213.0.17/16)
    labels: dict[str, str] = field(default_factory=dict)
    vlan_bridge: str = VLAN_BRIDGE  # OVS bridge for NICs on VLANs (a lab with OVS: _ovs)
    vlan_uplink: str = VLAN_UPLINK  # its trunk veth
    vlan_fabric_port: str = ""  # the trunk's peer on the fabric bridge (upv-<name>)

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class LabLayout:
    """Every name and address of one lab."""

    name: str
    subnet: str
    fabric_netns: str
    fabric_bridge: str
    fabric_mac: str
    fabric_address: str  # with prefix; the server listens on its IP, port SERVER_PORT
    hosts: tuple[HostLayout, ...]
    guest_range: tuple[str, str]  # first and last address guests may use

    @property
    def server_ip(self) -> str:
        return self.fabric_address.split("/", 1)[0]

    @property
    def fabric_listen(self) -> str:
        """The (first) server's ``--listen-netns`` value."""
        return self.fabric_listen_of(0)

    @property
    def fabric_url(self) -> str:
        """The URL agents (inside host namespaces) dial to reach the (first) server."""
        return self.fabric_url_of(0)

    def fabric_listen_of(self, index: int) -> str:
        """Server ``index``'s (0-based) ``--listen-netns``: one fabric address, port per server."""
        return f"{self.fabric_netns}@{self.server_ip}:{SERVER_PORT + index}"

    def fabric_url_of(self, index: int) -> str:
        return f"https://{self.server_ip}:{SERVER_PORT + index}"

    @property
    def namespaces(self) -> list[str]:
        return [self.fabric_netns, *(h.netns for h in self.hosts)]


def check_name(name: str) -> str:
    """A lab name: a lowercase letter, then up to 11 lowercase letters or digits."""
    if not _NAME.match(name):
        raise LabError(
            f"bad lab name {name!r}: a lowercase letter then up to 11 letters or digits "
            "(it becomes part of namespace names)"
        )
    return name


def lab_dir(name: str, root: Path | None = None) -> Path:
    """Where lab ``name`` keeps its state, store, logs: ``$PODIUM_LAB_DIR/<name>``."""
    base = root or Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    return base / check_name(name)


def namespace_prefix(name: str) -> str:
    return f"pdm-{check_name(name)}-"


def _mac(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])  # locally administered unicast


def host_labels(index: int, hosts: int = 1, sites: int = 1) -> dict[str, str]:
    """Host ``index`` (1-based) of ``hosts``: sites s1..sN in equal blocks (h1, h2 in s1
    and h3, h4 in s2 for 4 hosts and 2 sites); racks r1/r2 alternating in each site."""
    if sites <= 1:
        return {"rack": f"r{(index - 1) % 2 + 1}", "site": "s1"}
    site = (index - 1) * sites // hosts
    first = -(-site * hosts // sites) + 1  # the first host index of this site
    return {"rack": f"r{(index - first) % 2 + 1}", "site": f"s{site + 1}"}


def site_names(layout: LabLayout) -> list[str]:
    """The lab's sites, in order (s1 first)."""
    return sorted({h.labels.get("site", "s1") for h in layout.hosts}, key=lambda s: int(s[1:]))


def plan_lab(name: str, hosts: int, subnet: str = DEFAULT_SUBNET, sites: int = 1) -> LabLayout:
    """The layout of lab ``name`` with ``hosts`` hosts h1..hN in ``sites`` sites.

    Raises :class:`LabError`.
    """
    check_name(name)
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"--hosts {hosts}: a lab has 1 to {MAX_HOSTS} hosts")
    if not 1 <= sites <= hosts:
        raise LabError(f"--sites {sites}: a lab has 1 to --hosts ({hosts}) sites")
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as err:
        raise LabError(f"bad lab subnet {subnet!r}: {err}") from err
    if not isinstance(net, ipaddress.IPv4Network) or not net.is_private or net.prefixlen > 23:
        raise LabError(
            f"bad lab subnet {subnet}: expected a private IPv4 network of /23 or larger "
            f"(default {DEFAULT_SUBNET})"
        )
    prefix = net.prefixlen
    ns = namespace_prefix(name)
    layouts = tuple(
        HostLayout(
            name=f"h{i}",
            netns=f"{ns}h{i}",
            bridge=HOST_BRIDGE,
            bridge_mac=_mac(name, f"h{i}"),
            uplink=UPLINK,
            fabric_port=f"up-h{i}",
            address=f"{net[FIRST_HOST + i]}/{prefix}",
            labels=host_labels(i, hosts, sites),
            vlan_fabric_port=f"upv-h{i}",
        )
        for i in range(1, hosts + 1)
    )
    return LabLayout(
        name=name,
        subnet=str(net),
        fabric_netns=f"{ns}fab",
        fabric_bridge=FABRIC_BRIDGE,
        fabric_mac=_mac(name, "fab"),
        fabric_address=f"{net[1]}/{prefix}",
        hosts=layouts,
        guest_range=(str(net[MANAGEMENT_SIZE]), str(net[-2])),
    )
